"""The report's figures add up to the run's own figures, at a resolution a person can read;
the HTML shows rounded, labelled figures (found by a user: unrounded floats and a 200-entry
JSON dict in one cell)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from enclave.cli.main import app
from enclave.sim import charts
from enclave.sim.metrics import summarize
from enclave.sim.scenario import load_scenario, scenario_fleet
from enclave.sim.workloads import workload_and_fleet

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "contended.toml"


@given(st.floats(min_value=1.0, max_value=10 * 365 * 86400.0))
def test_bins_are_whole_hours_or_days_and_about_two_hundred(span: float) -> None:
    width = charts.bin_width(span)
    assert width % charts.HOUR_S == 0
    if width >= charts.DAY_S:
        assert width % charts.DAY_S == 0
    assert max(span, charts.HOUR_S) / width <= charts.TARGET_BINS * 2 + 1


@pytest.fixture(scope="module")
def run() -> tuple:
    from enclave.scheduler.policies import make_policy
    from enclave.sim.engine import simulate

    workload, fleet = workload_and_fleet(SHIPPED)
    assert scenario_fleet(load_scenario(SHIPPED)) is not None
    outcome = simulate(fleet, workload.jobs, make_policy("easy"))
    return fleet, outcome, summarize(fleet, outcome)


def test_binned_power_and_daily_energy_add_up_to_the_runs_energy(run: tuple) -> None:
    fleet, outcome, summary = run
    mean, peak = charts.power(fleet, outcome)
    widths = np.diff(mean.edges)
    mwh = sum(float((mean.by_region[r.name] * widths).sum()) for r in fleet.regions) / 3600
    assert mwh == pytest.approx(summary["energy_mwh"], rel=1e-6)
    for r in fleet.regions:
        assert (peak.by_region[r.name] >= mean.by_region[r.name] - 1e-12).all()
        assert peak.by_region[r.name].max() == pytest.approx(summary["peak_power_mw"][r.name])
    assert 10 <= len(widths) <= 2 * charts.TARGET_BINS
    energy, tco2e = charts.per_day(fleet, outcome)
    daily = sum(float(energy.by_region[r.name].sum()) for r in fleet.regions)
    assert daily == pytest.approx(summary["energy_mwh"], rel=1e-6)
    assert float(tco2e.sum()) == pytest.approx(summary["emissions_tco2e"], rel=1e-6)


def test_busy_share_is_the_runs_utilisation_over_time(run: tuple) -> None:
    fleet, outcome, summary = run
    busy = charts.busy_share(fleet, outcome)
    share = busy.by_region["fleet"]
    assert (share >= -1e-12).all() and (share <= 1 + 1e-9).all()
    cpu_s = float((share * np.diff(busy.edges)).sum()) * sum(r.cpus for r in fleet.regions)
    expected = summary["utilization"] * summary["makespan_s"] * sum(r.cpus for r in fleet.regions)
    assert cpu_s == pytest.approx(expected, rel=1e-6)


def test_the_html_report_shows_rounded_labelled_figures(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sim", "run", "--workload", str(SHIPPED), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    text = re.sub(r"<img[^>]*>", "", page)
    assert "mean wait" in text and "MWh" in text and "tCO2e" in text and "$" in text
    assert not re.search(r"\d\.\d{7,}", text), "an unrounded float"
    assert "{" not in text.split("</style>", 1)[1], "a JSON dict in a cell"
    for agency in summary["agency_share_of_work"]:  # the per-agency table
        assert f"<td>{agency}</td>" in text
    for region in summary["power_cap_mw"]:
        assert f"<td>{region}</td>" in text
