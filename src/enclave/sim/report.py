"""Simulation outputs: summary.json, jobs.csv, power.csv and a self-contained HTML report
with PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from enclave.fleet import Fleet
from enclave.sim import charts
from enclave.sim.carbon import CarbonCurve
from enclave.sim.engine import Outcome
from enclave.sim.metrics import bounded_slowdown, wait_s

NAMES = ("summary.json", "jobs.csv", "power.csv", "report.png", "report.html")


def write_outputs(
    out: Path,
    fleet: Fleet,
    outcome: Outcome,
    summary: dict[str, Any],
    title: str,
    carbon: CarbonCurve | None = None,
) -> list[Path]:
    """Write the run's files into a folder of their own beside ``out``, then move each into
    ``out``: an interrupted run (Ctrl-C while the report renders) leaves ``out`` as it was."""
    out.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        written = _write(part, fleet, outcome, summary, title, carbon)
        for path in written:
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return [out / name for name in NAMES]


def _write(
    out: Path, fleet: Fleet, outcome: Outcome, summary: dict[str, Any], title: str, carbon: CarbonCurve | None
) -> list[Path]:
    paths = [out / name for name in NAMES]
    paths[0].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    with paths[1].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "id",
                "agency",
                "label",
                "nodes",
                "cpus",
                "gpus",
                "submit_s",
                "start_s",
                "end_s",
                "wait_s",
                "bounded_slowdown",
                "region",
                "pool",
            ]
        )
        for r in sorted(outcome.runs, key=lambda r: r.sim.job.seq):
            j = r.sim.job
            w.writerow([j.id, j.agency, j.label.marking, j.nodes, j.cpus, j.gpus, j.submit_s, r.start_s, r.end_s,
                        wait_s(r), round(bounded_slowdown(r), 6), r.placement.region, r.placement.pool])  # fmt: skip
    regions = [r.name for r in fleet.regions]
    with paths[2].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["t_s", *[f"{name}_mw" for name in regions]])
        for s in outcome.power:
            w.writerow([s.t_s, *[round(s.facility_w[name] / 1e6, 9) for name in regions]])
    png = charts.plot(fleet, outcome, title, carbon)
    paths[3].write_bytes(png)
    paths[4].write_text(_html(summary, png, title))
    return paths


# summary.json's figures as the report shows them: a label, and how to write the value.
SHOWN: dict[str, tuple[str, str]] = {
    "jobs": ("jobs", "count"),
    "jobs_never_started": ("jobs never started", "count"),
    "avg_wait_s": ("mean wait", "duration"),
    "max_wait_s": ("longest wait", "duration"),
    "avg_response_s": ("mean response (wait + run)", "duration"),
    "avg_bounded_slowdown": ("mean bounded slowdown", "ratio"),
    "utilization": ("CPU utilisation", "percent"),
    "makespan_s": ("makespan", "duration"),
    "energy_mwh": ("energy", "MWh"),
    "emissions_tco2e": ("emissions", "tCO2e"),
    "cost": ("energy cost", "money"),
    "homes_equivalent": ("homes' yearly electricity, equivalent", "count"),
    "power_cap_violations": ("power cap violations", "count"),
    "queue_saturated_s": ("time with jobs waiting", "duration"),
    "cap_share_saturated": ("share of the cap drawn while jobs waited", "percent"),
    "scheduling_passes": ("scheduling passes", "count"),
}


def figure(value: Any, kind: str) -> str:
    """One figure, rounded, with its unit."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "percent":
        return f"{100 * value:.1f}%"
    if kind == "duration":
        return _duration(float(value))
    if kind == "money":
        return f"${value:,.2f}"
    if kind == "ratio":
        return f"{value:,.2f}"
    return f"{value:,.4g} {kind}" if abs(value) < 1000 else f"{value:,.0f} {kind}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    for size, unit in ((86400.0, "d"), (3600.0, "h"), (60.0, "min")):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


def _html(summary: dict[str, Any], png: bytes, title: str) -> str:
    e = html.escape
    main = "".join(
        f"<tr><th>{e(label)}</th><td>{e(figure(summary[key], kind))}</td></tr>"
        for key, (label, kind) in SHOWN.items()
        if key in summary
    )
    other = "".join(
        f"<tr><th>{e(str(k))}</th><td>{e(f'{v:.4g}' if isinstance(v, float) else str(v))}</td></tr>"
        for k, v in summary.items()
        if k not in SHOWN and not isinstance(v, dict)
    )
    regions = sorted(summary.get("power_cap_mw") or {})
    region_rows = "".join(
        f"<tr><td>{e(r)}</td><td>{figure(summary['power_cap_mw'][r], 'MW')}</td>"
        f"<td>{figure((summary.get('peak_power_mw') or {}).get(r, 0.0), 'MW')}</td>"
        f"<td>{figure((summary.get('cap_share_saturated_by_region') or {}).get(r, 0.0), 'percent')}</td></tr>"
        for r in regions
    )
    shares = sorted((summary.get("agency_share_of_work") or {}).items(), key=lambda kv: -kv[1])
    top, rest = shares[:20], shares[20:]
    if rest:
        top.append((f"{len(rest)} others", sum(v for _, v in rest)))
    agency_rows = "".join(
        f"<tr><td>{e(a)}</td><td>{100 * v:.1f}%</td>"
        f"<td><div class='bar' style='width:{max(0.5, 300 * v):.0f}px'></div></td></tr>"
        for a, v in top
    )
    img = base64.b64encode(png).decode()
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1400px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{text-align:left;padding:3px 12px;border-bottom:1px solid #ddd}"
        "th{font-weight:normal;color:#555}td{font-variant-numeric:tabular-nums}.bar{height:10px;background:#4477aa}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{e(title)}</h1><img alt='power against cap, waits, busy CPUs, energy and emissions per day' "
        f"src='data:image/png;base64,{img}'>"
        f"<h2>Figures</h2><table>{main}</table>"
        "<h2>Regions</h2><table><tr><th>region</th><th>cap</th><th>peak draw</th>"
        f"<th>cap drawn while jobs waited</th></tr>{region_rows}</table>"
        f"<h2>Share of the work by agency</h2><table><tr><th>agency</th><th>share</th><th></th></tr>{agency_rows}</table>"
        + (f"<h2>Run</h2><table>{other}</table>" if other else "")
        + "</body></html>\n"
    )


# What `sim compare` sets side by side, and whether less is better.
COMPARED = (
    ("avg_wait_s", "mean wait (h)", 1 / 3600, True),
    ("avg_bounded_slowdown", "mean bounded slowdown", 1.0, True),
    ("utilization", "CPU utilisation (%)", 100.0, False),
    ("energy_mwh", "energy (MWh)", 1.0, True),
    ("emissions_tco2e", "emissions (tCO2e)", 1.0, True),
    ("cost", "energy cost ($)", 1.0, True),
)


def compare_page(rows: dict[str, dict[str, Any]], title: str) -> tuple[bytes, str]:
    """The policies of a comparison side by side: one bar chart per figure (the best bar
    dark), and a table of every figure, rounded and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (key, label, scale, lower) in zip(axes.flat, COMPARED, strict=True):
        values = [rows[n].get(key, 0.0) * scale for n in names]
        best = (min if lower else max)(range(len(values)), key=values.__getitem__) if values else -1
        ax.bar(names, values, color=["#2255aa" if i == best else "#99aacc" for i in range(len(values))])
        ax.set_title(label + (" — less is better" if lower else " — more is better"), fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    png = buf.getvalue()
    e = html.escape
    shown = [k for k in SHOWN if any(k in r for r in rows.values())]
    head = "".join(f"<th>{e(SHOWN[k][0])}</th>" for k in shown)
    body = "".join(
        f"<tr><th>{e(n)}</th>"
        + "".join(f"<td>{e(figure(r.get(k), SHOWN[k][1]))}</td>" for k in shown)
        + "</tr>"
        for n, r in rows.items()
    )
    img = base64.b64encode(png).decode()
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1500px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{text-align:right;padding:3px 10px;border-bottom:1px solid #ddd}"
        "th{font-weight:normal;color:#555}img{max-width:100%}</style></head><body>"
        f"<h1>{e(title)}</h1><img alt='the policies side by side' src='data:image/png;base64,{img}'>"
        f"<table><tr><th>policy</th>{head}</tr>{body}</table></body></html>\n"
    )
    return png, page
