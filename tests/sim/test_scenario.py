"""Scenario files: validation errors that name the key, rules that assign agencies, labels
and deadlines from trace fields, fleets named by the scenario, and `enclave sim run` on one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enclave.cli.main import app
from enclave.errors import InvalidInput
from enclave.labels import DEFAULT_SCHEME
from enclave.scheduler.model import QOS
from enclave.sim.scenario import build_workload, load_scenario, load_scenario_workload, parse_scenario
from enclave.sim.workloads import load_workload, workload_and_fleet

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"
ALIBABA = TRACES / "alibaba-gpu-v2023-openb_pod_list_default.csv"
SYNTH = "[synthetic]\nseed = 1\njobs = 100\ndays = 1\n"


def swf(tmp_path: Path) -> Path:
    """Six jobs: (job, user, group, queue, requested procs)."""
    rows = [
        (1, 1, 1, 1, 4),
        (2, 2, 1, 2, 8),
        (3, 3, 2, 1, 2),
        (4, 4, 5, 2, 1),
        (5, 5, 9, 3, 16),
        (6, 6, 12, 1, 4),
    ]
    lines = [
        f"{job} {10 * job} -1 100 {procs} -1 -1 {procs} 300 -1 1 {user} {group} -1 {queue} -1 -1 -1"
        for job, user, group, queue, procs in rows
    ]
    path = tmp_path / "traces" / "small.swf"
    path.parent.mkdir(exist_ok=True)
    path.write_text("; MaxProcs: 32\n" + "\n".join(lines) + "\n")
    return path


def scenario(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[synthetic\n", r"s\.toml: not valid TOML"),
        ("name = 'x'\n", r"s\.toml: scenario: Value error, give exactly one workload"),
        (SYNTH + "[trace]\npath = 'a.swf'\n", "give exactly one workload"),
        ("colour = 'red'\n" + SYNTH, r"s\.toml: colour: Extra inputs are not permitted"),
        ("[synthetic]\njobz = 3\n", r"s\.toml: synthetic\.jobz: Extra inputs are not permitted"),
        ("[synthetic]\njobs = -3\n", r"s\.toml: synthetic\.jobs: Input should be greater than or equal to 0"),
        ("[synthetic]\njobs = 3\narrival_rate_per_hour = 2.0\n", r"s\.toml: synthetic: .*not both"),
        ("[synthetic]\ndays = nan\n", r"s\.toml: synthetic\.days"),
        ("[trace]\n", r"s\.toml: trace\.path: Field required"),
        ("[trace]\npath = 'x.txt'\n", r"s\.toml: trace\.path: x\.txt: unknown trace type"),
        ("[trace]\npath = 'x.swf'\nformat = 'pbs'\n", r"s\.toml: trace\.format: Input should be 'swf' or 'alibaba'"),
        ("[trace]\npath = 'x.csv'\npending = 'maybe'\n", r"s\.toml: trace\.pending"),
        (SYNTH + "[[rules]]\nfield = 'kind'\nagency = 'a'\n", r"rules\.0: .*exactly one of 'in'"),
        (SYNTH + "[[rules]]\nfield = 'kind'\nin = ['hpc']\nrange = [1, 2]\nagency = 'a'\n", "exactly one of"),
        (SYNTH + "[[rules]]\nfield = 'kind'\nin = []\nagency = 'a'\n", "'in' needs at least one value"),
        (SYNTH + "[[rules]]\nfield = 'kind'\nin = ['hpc']\n", r"rules\.0: .*must set agency, label or"),
        (SYNTH + "[[rules]]\nfield = 'kind'\nin = ['hpc']\nagency = 'a'\nwho = 1\n", r"rules\.0\.who: Extra"),
        (SYNTH + "[[rules]]\nfield = 'user'\nin = [1]\nagency = 'a'\n",
         r"rules\.0\.field: 'user' is not a field of a synthetic workload \(fields: kind, agency, label\)"),
        (SYNTH + "[[rules]]\nfield = 'kind'\nrange = [1, 2]\nagency = 'a'\n", r"rules\.0\.range: 'kind' is not a number"),
        (SYNTH + "[[rules]]\nfield = 'kind'\nin = [1]\nagency = 'a'\n", r"rules\.0\.in: values of 'kind' are strings"),
        ("[trace]\npath = 'x.swf'\n[[rules]]\nfield = 'group'\nin = ['a']\nagency = 'a'\n", "are numbers"),
        ("[trace]\npath = 'x.swf'\n[[rules]]\nfield = 'group'\nrange = [5, 1]\nagency = 'a'\n", "above high"),
        ("[trace]\npath = 'x.swf'\n[[rules]]\nfield = 'qos'\nin = ['LS']\nagency = 'a'\n", "not a field of a swf"),
        (SYNTH + "[[rules]]\nfield = 'kind'\nin = ['hpc']\ndeferrable_slack_hours = 0\n", "greater than 0"),
    ],
)  # fmt: skip
def test_validation_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_scenario(scenario(tmp_path, text))


def test_errors_found_when_building(tmp_path: Path) -> None:
    missing = scenario(tmp_path, "[trace]\npath = 'nowhere.swf'\n")
    with pytest.raises(InvalidInput, match=r"trace\.path: no such file"):
        load_scenario_workload(missing, DEFAULT_SCHEME)
    swf(tmp_path)
    bad_label = scenario(tmp_path, "[trace]\npath = 'traces/small.swf'\nlabel = 'COSMIC'\n", "l.toml")
    with pytest.raises(InvalidInput, match=r"l\.toml: trace\.label: unknown classification level 'COSMIC'"):
        load_scenario_workload(bad_label, DEFAULT_SCHEME)
    rule = "[[rules]]\nfield = 'group'\nin = [1]\nlabel = 'SECRET//ZZ'\n"
    bad_rule = scenario(tmp_path, "[trace]\npath = 'traces/small.swf'\n" + rule, "r.toml")
    with pytest.raises(InvalidInput, match=r"r\.toml: rules\.0\.label: unknown compartment\(s\) ZZ"):
        load_scenario_workload(bad_rule, DEFAULT_SCHEME)
    with pytest.raises(InvalidInput, match="unknown workload type"):
        load_workload(scenario(tmp_path, "", "w.yaml"), DEFAULT_SCHEME)


def test_swf_rules_assign_agencies_labels_and_deadlines(tmp_path: Path) -> None:
    swf(tmp_path)
    path = scenario(
        tmp_path,
        """
name = "small"
[trace]
path = "traces/small.swf"      # relative to this file
label = "CUI"

[[rules]]                      # groups 1-2: doe, SECRET
field = "group"
range = [1, 2]
agency = "doe"
label = "SECRET"

[[rules]]                      # first match wins per attribute: the label stays SECRET
field = "queue"
in = [1]
label = "TOP SECRET//SI"
deferrable_slack_hours = 6

[[rules]]
field = "procs"
range = [16, 1e9]
agency = "big"
""",
    )
    wl = load_scenario_workload(path, DEFAULT_SCHEME)
    got = {s.job.id: (s.job.agency, s.job.label.marking, s.deferrable) for s in wl.jobs}
    assert got == {
        "1": ("doe", "SECRET", True),
        "2": ("doe", "SECRET", False),
        "3": ("doe", "SECRET", True),
        "4": ("group-5", "CUI", False),  # no rule: the reader's agency, the scenario's label
        "5": ("big", "CUI", False),
        "6": ("group-12", "TOP SECRET//SI", True),
    }
    six = next(s for s in wl.jobs if s.job.id == "6")
    assert six.deadline_s == six.job.submit_s + six.job.walltime_s + 6 * 3600
    assert (six.job.deferrable, six.job.deadline_s) == (True, six.deadline_s)
    assert wl.max_procs == 32  # the header survives the rules
    _, fleet = workload_and_fleet(path)
    assert fleet.name == "trace"  # an SWF scenario without a fleet: sized from the header


def test_swf_agency_by_user(tmp_path: Path) -> None:
    swf(tmp_path)
    path = scenario(tmp_path, "[trace]\npath = 'traces/small.swf'\nagency_by = 'user'\n")
    assert [s.job.agency for s in load_scenario_workload(path, DEFAULT_SCHEME).jobs][:2] == [
        "user-1",
        "user-2",
    ]


def test_alibaba_qos_rules(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        f"""
fleet = "gigawatt"
[trace]
path = "{ALIBABA}"
pending = "replay"
[[rules]]
field = "qos"
in = ["LS", "Guaranteed"]
agency = "serving"
label = "CUI"
[[rules]]
field = "qos"
in = ["BE"]
agency = "research"
deferrable_slack_hours = 24
""",
    )
    wl, fleet = workload_and_fleet(path)
    assert fleet.name == "gigawatt" and len(wl.jobs) == 8152 and wl.skipped == {}
    for s in wl.jobs:
        if s.job.qos == QOS.HIGH:
            assert (s.job.agency, s.job.label.marking, s.deferrable) == ("serving", "CUI", False)
        elif s.job.qos == QOS.LOW:
            assert (s.job.agency, s.job.label.marking, s.deferrable) == ("research", "UNCLASSIFIED", True)
        else:
            assert (s.job.agency, s.deferrable) == ("alibaba", False)  # Burstable: no rule


def test_synthetic_rules_by_kind(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        SYNTH + "[[rules]]\nfield = 'kind'\nin = ['inference']\nlabel = 'TS//SI/TK'\nagency = 'serving'\n"
        "[[rules]]\nfield = 'label'\nin = ['unclassified']\nagency = 'public'\n",
    )
    wl = load_scenario_workload(path, DEFAULT_SCHEME)
    assert len(wl.jobs) == 100
    for s in wl.jobs:
        if s.job.id.startswith("inference-"):
            assert (s.job.agency, s.job.label.marking) == ("serving", "TOP SECRET//SI/TK")
        elif s.job.label.marking == "UNCLASSIFIED":
            assert s.job.agency == "public"
        else:
            assert s.job.agency != "public"


def test_fleet_named_by_the_scenario_and_overridden(tmp_path: Path) -> None:
    fleets = tmp_path / "fleets"
    fleets.mkdir()
    (fleets / "tiny.toml").write_text(
        'name = "tiny"\n[[regions]]\nname = "r1"\naccreditation = "SECRET"\npower_cap_mw = 1.0\n'
        '[[regions.pools]]\nname = "gpu"\ncount = 4\ncpus = 112\nmemory_mb = 2097152\ngpus = 8\n'
        "idle_w = 1000.0\npeak_w = 10000.0\n"
    )
    path = scenario(tmp_path, "fleet = 'fleets/tiny.toml'\n" + SYNTH)
    wl, fleet = workload_and_fleet(path)
    assert fleet.name == "tiny" and len(wl.jobs) == 100
    assert workload_and_fleet(path, "gigawatt")[1].name == "gigawatt"
    missing = scenario(tmp_path, "fleet = 'fleets/none.toml'\n" + SYNTH, "m.toml")
    with pytest.raises(InvalidInput, match="no fleet named"):
        workload_and_fleet(missing)


def test_scenario_is_reproducible(tmp_path: Path) -> None:
    text = SYNTH + "[[rules]]\nfield = 'kind'\nin = ['hpc']\ndeferrable_slack_hours = 2\n"
    a = build_workload(parse_scenario(text), DEFAULT_SCHEME).jobs
    b = build_workload(parse_scenario(text), DEFAULT_SCHEME).jobs
    assert a == b


def test_sim_run_on_a_scenario(tmp_path: Path) -> None:
    swf(tmp_path)
    path = scenario(
        tmp_path, "[trace]\npath = 'traces/small.swf'\n[[rules]]\nfield = 'group'\nin = [1]\nagency = 'doe'\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["sim", "run", "--workload", str(path), "--out", str(out), "--policy", "fcfs"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jobs"] == 6 and summary["fleet"] == "trace"
    assert summary["agency_share_of_work"]["doe"] > 0
    bad = scenario(tmp_path, "[trace]\npath = 'traces/small.swf'\ncolour = 1\n", "bad.toml")
    result = CliRunner().invoke(app, ["sim", "run", "--workload", str(bad), "--out", str(out)])
    assert result.exit_code != 0


def test_a_rule_that_matches_no_job_is_an_error(tmp_path: Path) -> None:
    """A typo in a value (or a range off the field's scale) must not silently change nothing:
    the README's own example once gave five identical policies that way."""
    path = scenario(tmp_path, SYNTH + "[[rules]]\nfield = 'kind'\nin = ['trainig']\nagency = 'doe'\n")
    with pytest.raises(InvalidInput, match=r"rules\.0: kind in = \['trainig'\] matches no job"):
        load_scenario_workload(path, DEFAULT_SCHEME)


def test_the_shipped_scenario_runs_and_its_policies_differ(tmp_path: Path) -> None:
    """examples/scenarios/contended.toml, as the README runs it: every policy schedules every
    job, and the policies do not all give the same waits (the rules match, the fleet is short)."""
    shipped = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "contended.toml"
    out = tmp_path / "compare"
    result = CliRunner().invoke(
        app,
        [
            "sim",
            "compare",
            "--workload",
            str(shipped),
            "--out",
            str(out),
            "--policies",
            "fcfs,easy,priority,power-capped,carbon-aware",
        ],
    )
    assert result.exit_code == 0, result.output
    policies = json.loads((out / "compare.json").read_text())["policies"]
    assert len(policies) == 5
    assert all(p["jobs_never_started"] == 0 and p["jobs"] > 1000 for p in policies.values())
    waits = {name: round(p["avg_wait_s"]) for name, p in policies.items()}
    assert len(set(waits.values())) == 5, waits
    assert waits["easy"] < waits["fcfs"]  # backfilling helps a contended fleet
    # ... and side by side, for a person: a chart per figure and a rounded table.
    page = (out / "compare.html").read_text()
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    table = page.split("<table>", 1)[1]
    assert all(f"<th>{name}</th>" in table for name in policies) and "mean wait" in table
    assert not re.search(r"\d\.\d{7,}", table), "an unrounded float"
