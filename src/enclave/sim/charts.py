"""The figures of a simulation report, as numbers first (tested) and then as one PNG.

Everything is binned to a resolution a person can read — about 200 bins over the run, of
whole hours or days — instead of every power sample of a long trace drawn as one dense band:

* power against cap, per region: the mean draw in each bin, the bin's peak as a light band
  above it, the cap dashed in the same colour;
* the wait before start: how many jobs waited how long, on log-spaced bins with readable
  ticks (a minute, an hour, a day, a week); jobs that started at once counted apart;
* the busy share of the fleet's CPUs over time;
* energy per day (stacked by region) and the day's emissions.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from enclave.fleet import Fleet
from enclave.sim.carbon import CarbonCurve
from enclave.sim.engine import Outcome
from enclave.sim.metrics import running_integral

HOUR_S, DAY_S = 3600.0, 86400.0
TARGET_BINS = 200
WAIT_TICKS = [(1, "1 s"), (60, "1 min"), (600, "10 min"), (3600, "1 h"), (6 * 3600, "6 h"), (86400, "1 d"), (7 * 86400, "1 wk")]  # fmt: skip


@dataclass(frozen=True)
class Series:
    """Bin edges (s) and, per region, values per bin."""

    edges: np.ndarray
    by_region: dict[str, np.ndarray]


def bin_width(span_s: float) -> float:
    """Whole hours (or days, beyond ~8 days) giving about TARGET_BINS bins over ``span_s``."""
    raw = max(span_s, HOUR_S) / TARGET_BINS
    return (
        DAY_S * max(1, round(raw / DAY_S)) if raw >= DAY_S / 2 else HOUR_S * max(1, math.ceil(raw / HOUR_S))
    )


def _edges(start: float, end: float, width: float) -> np.ndarray:
    n = max(1, math.ceil((end - start) / width))
    return start + width * np.arange(n + 1)


def _integral(t: np.ndarray, level: np.ndarray, x: np.ndarray) -> np.ndarray:
    """∫ from t[0] to each x of a step function equal to level[k] on [t[k], t[k+1]), and 0
    after the last step (the run's own figures end there too)."""
    x = np.clip(x, t[0], t[-1])
    area = np.concatenate(([0.0], np.cumsum(level[:-1] * np.diff(t))))
    k = np.clip(np.searchsorted(t, x, side="right") - 1, 0, len(t) - 1)
    return np.asarray(area[k] + level[k] * np.maximum(0.0, x - t[k]), dtype=np.float64)


def power(fleet: Fleet, outcome: Outcome) -> tuple[Series, Series]:
    """Mean and peak facility draw (MW) per bin and region."""
    samples = outcome.power
    t = np.fromiter((s.t_s for s in samples), dtype=np.float64, count=len(samples))
    edges = _edges(float(t[0]), float(t[-1]), bin_width(float(t[-1] - t[0]))) if len(t) else np.zeros(2)
    mean: dict[str, np.ndarray] = {}
    peak: dict[str, np.ndarray] = {}
    for region in fleet.regions:
        watts = np.fromiter((s.facility_w[region.name] for s in samples), dtype=np.float64, count=len(t))
        if not len(t):
            mean[region.name] = peak[region.name] = np.zeros(1)
            continue
        joules = np.diff(_integral(t, watts, edges))
        mean[region.name] = joules / np.diff(edges) / 1e6
        which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
        top = np.zeros(len(edges) - 1)
        np.maximum.at(top, which, watts / 1e6)
        # A bin no sample starts in holds the draw of the last sample before it.
        peak[region.name] = np.maximum(top, mean[region.name])
    return Series(edges, mean), Series(edges, peak)


def busy_share(fleet: Fleet, outcome: Outcome) -> Series:
    """The share of the fleet's CPUs busy in each bin (one series, under the name "fleet")."""
    runs = outcome.runs
    total = sum(r.cpus for r in fleet.regions) or 1
    if not runs:
        return Series(np.zeros(2), {"fleet": np.zeros(1)})
    start = np.fromiter((r.start_s for r in runs), dtype=np.float64, count=len(runs))
    end = np.fromiter((r.end_s for r in runs), dtype=np.float64, count=len(runs))
    cpus = np.fromiter((r.sim.job.nodes * r.sim.job.cpus for r in runs), dtype=np.float64, count=len(runs))
    times = np.concatenate((start, end))
    order = np.argsort(times, kind="stable")
    t = times[order]
    level = np.cumsum(np.concatenate((cpus, -cpus))[order])
    edges = _edges(float(t[0]), float(t[-1]), bin_width(float(t[-1] - t[0])))
    cpu_s = np.diff(_integral(t, level, edges))
    return Series(edges, {"fleet": cpu_s / np.diff(edges) / total})


def per_day(fleet: Fleet, outcome: Outcome, carbon: CarbonCurve | None = None) -> tuple[Series, np.ndarray]:
    """Energy (MWh) per day and region, and emissions (tCO2e) per day: each sample's draw
    until the next, counted in the day it starts."""
    samples = outcome.power
    m = len(samples)
    if m < 2:
        return Series(np.zeros(2), {r.name: np.zeros(1) for r in fleet.regions}), np.zeros(1)
    t = np.fromiter((s.t_s for s in samples), dtype=np.float64, count=m)
    ends = np.append(t[1:], t[-1])
    days = (t // DAY_S).astype(np.int64)
    first, n = int(days[0]), int(days[-1] - days[0]) + 1
    edges = DAY_S * (first + np.arange(n + 1))
    curve = carbon or CarbonCurve({})
    energy: dict[str, np.ndarray] = {}
    grams = np.zeros(n)
    for region in fleet.regions:
        watts = np.fromiter((s.facility_w[region.name] for s in samples), dtype=np.float64, count=m)
        energy[region.name] = np.bincount(days - first, weights=watts * (ends - t), minlength=n) / 3.6e9
        flat = region.carbon_g_per_kwh
        intensity_s = running_integral(curve, region.name, ends, flat) - running_integral(
            curve, region.name, t, flat
        )
        grams += np.bincount(days - first, weights=watts * intensity_s, minlength=n) / 3.6e6
    return Series(edges, energy), grams / 1e6


def waits_s(outcome: Outcome) -> np.ndarray:
    return np.fromiter(
        (r.start_s - r.sim.job.submit_s for r in outcome.runs), dtype=np.float64, count=len(outcome.runs)
    )


def plot(fleet: Fleet, outcome: Outcome, title: str, carbon: CarbonCurve | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    (ax_power, ax_wait), (ax_busy, ax_day) = axes
    mean, peak = power(fleet, outcome)
    scale, unit = (DAY_S, "days") if mean.edges[-1] - mean.edges[0] > 3 * DAY_S else (HOUR_S, "hours")
    x = mean.edges[:-1] / scale
    caps = dict(outcome.caps_w) or {r.name: r.power_cap_mw * 1e6 for r in fleet.regions}
    for i, region in enumerate(fleet.regions):
        colour = f"C{i % 10}"
        ax_power.step(x, mean.by_region[region.name], where="post", color=colour, label=f"{region.name}")
        ax_power.fill_between(x, mean.by_region[region.name], peak.by_region[region.name], step="post", color=colour, alpha=0.15)  # fmt: skip
        ax_power.axhline(caps[region.name] / 1e6, color=colour, linestyle="--", linewidth=1)
    width = mean.edges[1] - mean.edges[0] if len(mean.edges) > 1 else HOUR_S
    ax_power.set_title(f"Facility power per {_duration(width)} (mean; band: peak; dashed: cap)")
    ax_power.set_xlabel(f"simulated {unit}")
    ax_power.set_ylabel("MW")
    ax_power.legend(fontsize=8, ncol=3)
    waits = waits_s(outcome)
    at_once = int((waits < 1).sum())
    later = waits[waits >= 1]
    if len(later):
        bins = np.logspace(0, math.log10(max(later.max(), 60.0)) + 0.01, 40)
        ax_wait.hist(later, bins=bins, color="C0")
    ax_wait.set_xscale("log")
    ticks = [
        (v, name)
        for v, name in WAIT_TICKS
        if v <= max(60.0, float(later.max()) if len(later) else 60.0) * 1.5
    ]
    ax_wait.set_xticks([v for v, _ in ticks], [name for _, name in ticks])
    share = 100 * at_once / len(waits) if len(waits) else 0.0
    ax_wait.set_title(f"Wait before start ({share:.0f}% of {len(waits):,} jobs started at once, not shown)")
    ax_wait.set_ylabel("jobs")
    busy = busy_share(fleet, outcome)
    ax_busy.step(busy.edges[:-1] / scale, 100 * busy.by_region["fleet"], where="post", color="C2")
    ax_busy.set_ylim(0, 105)
    ax_busy.set_title("Busy share of the fleet's CPUs")
    ax_busy.set_xlabel(f"simulated {unit}")
    ax_busy.set_ylabel("%")
    energy, tco2e = per_day(fleet, outcome, carbon)
    days = len(tco2e)
    span = 7 if days > 90 else 1  # weeks for long runs: a year of daily bars is one dense band
    period = "week" if span == 7 else "day"
    groups = np.arange(days) // span
    at = np.arange(groups[-1] + 1 if days else 0) * span
    bottom = np.zeros(len(at))
    for i, region in enumerate(fleet.regions):
        mwh = np.bincount(groups, weights=energy.by_region[region.name], minlength=len(at))
        ax_day.bar(at, mwh, bottom=bottom, color=f"C{i % 10}", label=region.name, width=0.8 * span, align="edge")  # fmt: skip
        bottom += mwh
    ax_day.set_title(f"Energy per {period} (bars, MWh) and emissions (line, tCO2e)")
    ax_day.set_xlabel("simulated day")
    ax_day.set_ylabel("MWh")
    twin = ax_day.twinx()
    twin.plot(at + span / 2, np.bincount(groups, weights=tco2e, minlength=len(at)), color="black", marker=".", linewidth=1)  # fmt: skip
    twin.set_ylim(bottom=0)
    twin.set_ylabel("tCO2e")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _duration(seconds: float) -> str:
    if seconds >= DAY_S:
        n = round(seconds / DAY_S)
        return "day" if n == 1 else f"{n} days"
    n = round(seconds / HOUR_S)
    return "hour" if n == 1 else f"{n} hours"
