"""Grid carbon intensity as the scheduler sees it: plain numbers, no clock, no I/O.

A curve is a list of hourly intensities (gCO2e/kWh) that repeats: the hour that starts at
``k × 3600`` seconds on the scheduler's clock uses ``values[k % len(values)]`` (a daily
curve has 24 values; hour 0 is the clock's midnight). The clock value is always passed in.

The carbon-aware policy compares *costs*: grams of CO2e per joule of IT work, i.e. the
region's PUE times the mean intensity over the span a job would run. :class:`StartCosts`
answers "is starting now (this hour) about as clean as any start the job's deadline still
allows, and in which region?" from a handful of cached numbers, so a pass over many
deferrable jobs costs a dictionary look-up per job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

HOUR_S = 3600.0


class HourlyCurve:
    """One region's repeating hourly curve, with its running integral for O(1) means."""

    __slots__ = ("_cum", "period_s", "values")

    def __init__(self, values: Sequence[float]) -> None:
        if not values:
            raise ValueError("a carbon curve needs at least one hourly value")
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError("carbon intensities must be finite and non-negative")
        self.values: tuple[float, ...] = tuple(float(v) for v in values)
        cum = [0.0]
        for v in self.values:
            cum.append(cum[-1] + v * HOUR_S)
        self._cum = tuple(cum)
        self.period_s = len(self.values) * HOUR_S

    def at(self, t_s: float) -> float:
        return self.values[int(t_s // HOUR_S) % len(self.values)]

    def _running(self, t_s: float) -> float:
        """∫ intensity dt from 0 to t_s (gCO2e/kWh × s)."""
        cycles, rest = divmod(t_s, self.period_s)
        h = min(int(rest // HOUR_S), len(self.values) - 1)
        return cycles * self._cum[-1] + self._cum[h] + (rest - h * HOUR_S) * self.values[h]

    def integral(self, t0_s: float, t1_s: float) -> float:
        """∫ intensity dt over [t0, t1] in gCO2e/kWh × s (divide by 3600 for g per kW)."""
        if t1_s <= t0_s:
            return 0.0
        return self._running(t1_s) - self._running(t0_s)

    def mean(self, t0_s: float, t1_s: float) -> float:
        if t1_s <= t0_s:
            return self.at(t0_s)
        return self.integral(t0_s, t1_s) / (t1_s - t0_s)


HOLD = None  # verdict: the job waits for a cleaner hour
ANYWHERE = ""  # verdict: start now, wherever it fits (otherwise a verdict names the region)


@dataclass
class StartCosts:
    """Cached start decisions for deferrable jobs, hour by hour.

    A decision depends only on the candidate regions (with their PUE), the current hour, the
    last hour the job may still start in and its duration in whole hours (the walltime,
    at least one hour, at most one period: a job that runs a whole day averages the whole
    curve wherever it starts). Starts are compared at hour starts; ``tolerance`` is the share
    by which starting now may be dirtier than the best start and still go ahead.
    """

    curves: Mapping[str, HourlyCurve]
    tolerance: float = 0.01
    _period_h: int = field(default=1, init=False)
    _hour: int = field(default=-1, init=False)
    _verdicts: dict[tuple[object, ...], str | None] = field(default_factory=dict, init=False)
    _costs: dict[tuple[str, float, int, int], float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        # Starts one common period apart cost the same in every region.
        self._period_h = math.lcm(*(len(c.values) for c in self.curves.values())) if self.curves else 1

    def cost(self, region: str, pue: float, hour: int, hours: int) -> float:
        """PUE × mean intensity over ``hours`` hours from the start of hour ``hour``."""
        curve = self.curves[region]
        n = len(curve.values)
        key = (region, pue, hour % n, hours)
        got = self._costs.get(key)
        if got is None:
            start = (hour % n) * HOUR_S
            got = pue * curve.mean(start, start + hours * HOUR_S)
            self._costs[key] = got
        return got

    def verdict(
        self, regions: tuple[tuple[str, float], ...], now_s: float, latest_s: float, walltime_s: float
    ) -> str | None:
        """``ANYWHERE``: start now wherever it fits; a region name: start now, there; ``HOLD``.

        ``regions`` are the job's candidate regions (name, PUE) that have a curve.
        """
        hour = int(now_s // HOUR_S)
        if hour != self._hour:
            self._hour = hour
            self._verdicts.clear()
        period_h = self._period_h
        hours = min(max(1, math.ceil(walltime_s / HOUR_S)), period_h)
        span = min(int(latest_s // HOUR_S) - hour, period_h)  # later starts repeat the curve
        key = (regions, span, hours)
        if key in self._verdicts:
            return self._verdicts[key]
        now_costs = [(self.cost(r, pue, hour, hours), r) for r, pue in regions]
        best_now, best_region = min(now_costs)
        later = min(
            (self.cost(r, pue, hour + k, hours) for k in range(1, span + 1) for r, pue in regions),
            default=math.inf,
        )
        verdict: str | None
        if best_now > later * (1.0 + self.tolerance):
            verdict = HOLD
        elif len(regions) > 1 and all(c > best_now for c, r in now_costs if r != best_region):
            verdict = best_region  # this region is cleaner than the others now: go there
        else:
            verdict = ANYWHERE
        self._verdicts[key] = verdict
        return verdict
