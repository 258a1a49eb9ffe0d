"""What the CLI prints for a person: values with units, tables that fit, one object vertically."""

from __future__ import annotations

import io
import re
import uuid

import pytest
from rich.console import Console

from enclave.cli import output
from enclave.cli.humanize import duration_s, human, sig, timestamp
from enclave.errors import InvalidInput


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("energy_kwh", 1.0768611111111111e-05, "10.8 mWh"),
        ("kwh", 0.5, "500 Wh"),
        ("kwh", 0.0, "0 kWh"),
        ("emissions_kgco2e", 0, "0 kgCO2e"),
        ("kwh", 1234.5, "1.23 MWh"),
        ("emissions_kgco2e", 1.76e-07, "0.176 mgCO2e"),
        ("kgco2e", 2.5, "2.5 kgCO2e"),
        ("cost", 4.17e-08, "<$0.01"),
        ("cost", 1234.567, "$1,234.57"),
        ("cost", 0.0, "$0.00"),
        ("walltime_s", 3600, "1h"),
        ("walltime_s", 93784, "1d 2h"),
        ("walltime_s", 1.5, "1.5s"),
        ("cpu_hours", 8.44e-06, "0.0304s"),
        ("gpu_hours", 12.25, "12.2 h"),
        ("size_bytes", 1536, "1.5 KiB"),
        ("size_bytes", 12, "12 B"),
        ("power_cap_mw", 0.0002, "200 W"),
        ("power_cap_mw", 1300.0, "1.3 GW"),
        ("healthy", True, "yes"),
        ("reason", None, "-"),
        ("roles", ["admin", "auditor"], "admin, auditor"),
        ("quotas", {"kwh": None, "gpu_hours": 10.0}, "kwh=unlimited, gpu_hours=10 h"),
        ("nodes", 100000, "100,000"),
        ("exit_code", 0, "0"),
        ("loss", 0.000123456, "0.0001235"),
        ("created_at", "2026-12-07T06:36:14.499672+00:00", "2026-12-07 06:36:14Z"),
        ("name", "[bold]x[/]", "[bold]x[/]"),
    ],
)
def test_values_read_with_their_unit(key: str, value: object, shown: str) -> None:
    assert human(key, value) == shown


@pytest.mark.parametrize("value", [1e-12, 3.3e-9, 7.5e-5, 0.1, 1.0, 99.9, 12345.678, -2.5e-7])
def test_never_scientific_notation(value: float) -> None:
    text = sig(value)
    assert "e" not in text.lower() and float(text.replace(",", "")) == pytest.approx(value, rel=5e-3)


def test_durations_and_timestamps() -> None:
    assert duration_s(59) == "59s" and duration_s(61) == "1m 1s" and duration_s(7200) == "2h"
    assert timestamp("not a time") == "not a time"
    assert timestamp("2026-12-07T06:36:14+02:00") == "2026-12-07 06:36:14+02:00"


def _render(rows: list[dict[str, object]], columns: list[str], width: int | None) -> tuple[str, list[str]]:
    table, hidden = output.table(rows, columns, "Jobs", width)
    console = Console(width=width or 1000, file=io.StringIO(), color_system=None)
    console.print(table)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue(), hidden


JOB_COLUMNS = ["id", "name", "label", "state", "region", "reason", "exit_code"]


def _jobs(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": str(uuid.uuid4()),
            "name": f"climate-{i}",
            "label": "UNCLASSIFIED",
            "state": "pending",
            "region": "gov-east",
            "reason": "waiting for the power cap of the region to allow it to start",
            "exit_code": None,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("width", [80, 120])
def test_table_fits_and_keeps_what_matters(width: int) -> None:
    rows = _jobs(3)
    text, hidden = _render(rows, JOB_COLUMNS, width)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    for row in rows:
        line = next(line for line in text.splitlines() if str(row["id"]) in line)  # whole, on one line
        for key in ("name", "label", "state"):
            assert str(row[key]) in line, (key, text)
    assert "…" not in text  # nothing is cut with an ellipsis
    if width == 120:
        assert "gov-east" in text and hidden == []  # the reason wraps, nothing hidden
    else:
        assert hidden and "id" not in hidden and "state" not in hidden


def test_wide_shows_every_column() -> None:
    text, hidden = _render(_jobs(2), JOB_COLUMNS, None)
    assert hidden == [] and "waiting for the power cap of the region to allow it to start" in text


def test_an_id_is_never_cut_even_when_it_alone_is_too_wide() -> None:
    rows = _jobs(1)
    text, _hidden = _render(rows, JOB_COLUMNS, 20)
    assert str(rows[0]["id"]) in text.replace("\n", "")  # folded onto two lines, whole


def test_bad_format_is_one_clear_error() -> None:
    with pytest.raises(InvalidInput, match="table, wide, json, yaml, csv, ids"):
        output.check_format("xml")
    assert output.check_format(None, as_json=True) == "json" and output.check_format("YAML") == "yaml"


def test_machine_formats_keep_exact_values(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": "a", "energy_kwh": 1.0768611111111111e-05, "roles": ["x", "y"], "ok": True}]
    output.machine("csv", rows, rows, ["id", "energy_kwh", "roles", "ok"])
    assert (
        capsys.readouterr().out == 'id,energy_kwh,roles,ok\na,1.0768611111111111e-05,"[""x"", ""y""]",true\n'
    )
    output.machine("yaml", rows, rows, [])
    assert "energy_kwh: 1.0768611111111111e-05" in capsys.readouterr().out
    output.machine("ids", rows, rows, [])
    assert capsys.readouterr().out == "a\n"


def test_key_values_show_every_field_at_80_columns() -> None:
    job = {"id": str(uuid.uuid4()), "label": "TOP SECRET//SI/TK", "state": "completed", "kwh": 2.5e-05}
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(output.key_values(job, list(job)))
    assert isinstance(console.file, io.StringIO)
    text = console.file.getvalue()
    assert re.search(rf"id\s+{job['id']}", text) and "TOP SECRET//SI/TK" in text and "25 mWh" in text
