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
from enclave.sim.engine import Outcome
from enclave.sim.metrics import bounded_slowdown, wait_s

MAX_PLOT_POINTS = 5000


NAMES = ("summary.json", "jobs.csv", "power.csv", "report.png", "report.html")


def write_outputs(
    out: Path, fleet: Fleet, outcome: Outcome, summary: dict[str, Any], title: str
) -> list[Path]:
    """Write the run's files into a folder of their own beside ``out``, then move each into
    ``out``: an interrupted run (Ctrl-C while the report renders) leaves ``out`` as it was."""
    out.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        written = _write(part, fleet, outcome, summary, title)
        for path in written:
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return [out / name for name in NAMES]


def _write(out: Path, fleet: Fleet, outcome: Outcome, summary: dict[str, Any], title: str) -> list[Path]:
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
    png = _plot(fleet, outcome, title)
    paths[3].write_bytes(png)
    paths[4].write_text(_html(summary, png, title))
    return paths


def _plot(fleet: Fleet, outcome: Outcome, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_power, ax_wait) = plt.subplots(2, 1, figsize=(10, 8))
    samples = outcome.power
    step = max(1, len(samples) // MAX_PLOT_POINTS)
    shown = samples[::step]
    hours = [s.t_s / 3600 for s in shown]
    for region in fleet.regions:
        ax_power.step(
            hours, [s.facility_w[region.name] / 1e6 for s in shown], where="post", label=f"{region.name} draw"
        )
        ax_power.axhline(region.power_cap_mw, linestyle="--", linewidth=0.8, label=f"{region.name} cap")
    ax_power.set_xlabel("simulated hours")
    ax_power.set_ylabel("facility power (MW)")
    ax_power.set_title(f"{title}: power draw against the caps")
    ax_power.legend(fontsize=7, ncol=2)
    waits = sorted(wait_s(r) / 3600 for r in outcome.runs)
    if waits:
        ax_wait.plot(waits, [(k + 1) / len(waits) for k in range(len(waits))])
    ax_wait.set_xscale("symlog")
    ax_wait.set_xlabel("wait (hours)")
    ax_wait.set_ylabel("share of jobs waiting at most this long")
    ax_wait.set_title("Wait time distribution")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _html(summary: dict[str, Any], png: bytes, title: str) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v) if isinstance(v, dict) else str(v))}</td></tr>"
        for k, v in summary.items()
    )
    img = base64.b64encode(png).decode()
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}td,th{text-align:left;padding:2px 8px}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><table>{rows}</table>"
        f"<img alt='power and waits' src='data:image/png;base64,{img}'></body></html>\n"
    )
