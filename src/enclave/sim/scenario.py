"""Scenario files: one TOML file that says what to simulate.

A scenario names a workload — a trace (``[trace]``: an SWF or Alibaba file) or the
synthetic generator (``[synthetic]``: its parameters, seed included) — optionally a fleet,
and rules that give jobs agencies, labels and deadlines from the trace's own fields::

    name = "kth-agencies"
    fleet = "gigawatt"                   # built-in name or a file, relative to this one

    [trace]
    path = "../shared/data/traces/KTH-SP2-1996-2.1.swf"   # relative to this file
    label = "UNCLASSIFIED"               # jobs no rule labels (default: the lowest level)

    [[rules]]
    field = "group"                      # which trace field to look at
    range = [1, 10]                      # inclusive bounds; or  in = [3, 7, 12]
    agency = "doe"
    label = "SECRET"

    [[rules]]
    field = "queue"
    in = [2]
    deferrable_slack_hours = 12          # deferrable, deadline = submit + estimate + 12 h

Fields a rule may match: SWF ``job``, ``user``, ``group``, ``queue``, ``partition``,
``executable``, ``procs`` (requested, else allocated); Alibaba ``qos``, ``phase``, ``name``,
``gpus``, ``cpus``; synthetic ``kind`` (training, inference, hpc), ``agency``, ``label``.
Rules are read top to bottom; for each of agency, label and deadline, the first matching
rule that sets it wins; a job no rule matches keeps the reader's defaults (SWF: agency
``group-<id>``; Alibaba: ``alibaba``; synthetic: drawn by the shares of ``[synthetic]``).

Everything is checked up front — unknown keys, a rule with no match or nothing to set, a
field the workload does not have, an unknown label, a rule that matches no job of the
workload — and an error names the file and the key. ``examples/scenarios/`` holds scenarios
that run as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from enclave.errors import InvalidInput
from enclave.fleet import BUILTIN_FLEETS, Fleet, load_fleet, validate_toml
from enclave.labels import Label, LabelScheme
from enclave.sim import alibaba, swf
from enclave.sim.synthetic import KIND_NAMES, SyntheticSpec, generate
from enclave.sim.workload import SimJob, Workload

Kind = Literal["swf", "alibaba", "synthetic"]
Value = int | float | str

# Per workload kind: the fields rules may match, and whether each is a number.
SWF_COLUMNS = {
    "job": swf.JOB,
    "user": swf.USER,
    "group": swf.GROUP,
    "executable": 13,
    "queue": 14,
    "partition": 15,
}
FIELDS: dict[str, dict[str, bool]] = {
    "swf": {**dict.fromkeys(SWF_COLUMNS, True), "procs": True},
    "alibaba": {"qos": False, "phase": False, "name": False, "gpus": True, "cpus": True},
    "synthetic": {"kind": False, "agency": False, "label": False},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Rule(_Strict):
    field: str
    in_: Annotated[list[Value] | None, Field(alias="in")] = None
    range: tuple[float, float] | None = None
    agency: Annotated[str, Field(min_length=1)] | None = None
    label: Annotated[str, Field(min_length=1)] | None = None
    deferrable_slack_hours: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if (self.in_ is None) == (self.range is None):
            raise ValueError("give exactly one of 'in' (a list of values) or 'range' ([low, high])")
        if self.in_ is not None and not self.in_:
            raise ValueError("'in' needs at least one value")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range low {self.range[0]} is above high {self.range[1]}")
        if self.agency is None and self.label is None and self.deferrable_slack_hours is None:
            raise ValueError("a rule must set agency, label or deferrable_slack_hours")
        return self


class TraceSpec(_Strict):
    path: Annotated[str, Field(min_length=1)]
    format: Literal["swf", "alibaba"] | None = None  # default: from the file name
    label: str | None = None  # jobs no rule labels (default: the scheme's lowest level)
    agency_by: Literal["group", "user"] = "group"  # SWF: default agency from group or user id
    pending: alibaba.Pending = "skip"  # Alibaba: skip never-scheduled pods, or replay them


class Scenario(_Strict):
    name: str = ""
    description: str = ""
    fleet: str | None = None  # built-in name or a file relative to the scenario
    trace: TraceSpec | None = None
    synthetic: SyntheticSpec | None = None
    rules: list[Rule] = []
    _base_dir: Path = PrivateAttr(default_factory=Path)  # the file's folder: paths are relative to it

    @model_validator(mode="after")
    def _one_workload(self) -> Scenario:
        if (self.trace is None) == (self.synthetic is None):
            raise ValueError("give exactly one workload: a [trace] table or a [synthetic] table")
        return self

    @property
    def kind(self) -> Kind:
        if self.synthetic is not None:
            return "synthetic"
        assert self.trace is not None
        return self.trace.format or trace_format(self.trace_path)

    @property
    def trace_path(self) -> Path:
        assert self.trace is not None
        return self.resolve(self.trace.path)

    def resolve(self, name: str) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() else self._base_dir / path


def trace_format(path: Path) -> Literal["swf", "alibaba"]:
    name = path.name.lower()
    if name.endswith((".swf", ".swf.gz")):
        return "swf"
    if name.endswith(".csv"):
        return "alibaba"
    raise InvalidInput(f"{path.name}: unknown trace type (expected .swf, .swf.gz or .csv)")


def parse_scenario(text: str, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Validate a scenario; raises InvalidInput naming ``source`` and the offending key."""
    scenario = validate_toml(text, source, Scenario)
    scenario._base_dir = base_dir or Path()
    try:
        kind = scenario.kind
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: trace.path: {exc.detail} (or set trace.format)") from exc
    for i, rule in enumerate(scenario.rules):
        known = FIELDS[kind]
        if rule.field not in known:
            raise InvalidInput(
                f"{source}: rules.{i}.field: {rule.field!r} is not a field of a {scenario.kind} workload "
                f"(fields: {', '.join(known)})"
            )
        numeric = known[rule.field]
        if rule.range is not None and not numeric:
            raise InvalidInput(f"{source}: rules.{i}.range: {rule.field!r} is not a number: use 'in'")
        if rule.in_ is not None and any(isinstance(v, str) == numeric for v in rule.in_):
            want = "numbers" if numeric else "strings"
            raise InvalidInput(f"{source}: rules.{i}.in: values of {rule.field!r} are {want}")
    return scenario


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    return parse_scenario(text, str(path), path.parent)


def scenario_fleet(scenario: Scenario) -> Fleet | None:
    """The fleet the scenario names (a built-in, or a file relative to it), if any."""
    if scenario.fleet is None:
        return None
    name = scenario.fleet
    return load_fleet(name if name in BUILTIN_FLEETS else str(scenario.resolve(name)))


def build_workload(scenario: Scenario, scheme: LabelScheme, source: str = "<scenario>") -> Workload:
    """The scenario's jobs, with its rules applied; labels are parsed with ``scheme``."""
    kind = scenario.kind
    if scenario.synthetic is not None:
        wl = generate(scenario.synthetic, scheme)
        return _apply_rules(scenario, scheme, wl, _synthetic_fields(wl), source)
    assert scenario.trace is not None
    path = scenario.trace_path
    if not path.is_file():
        raise InvalidInput(f"{source}: trace.path: no such file: {path}")
    label = (
        _parse_label(scheme, scenario.trace.label, f"{source}: trace.label") if scenario.trace.label else None
    )
    base = label or scheme.bottom
    if kind == "swf":
        wl = swf.load_swf(path, base, agency_by=scenario.trace.agency_by)
        fields = _swf_fields(path, wl) if scenario.rules else {}
    else:
        pods = alibaba.read_pods(path)
        wl = alibaba.to_workload(pods, base, pending=scenario.trace.pending)
        fields = _by_id(pods.name, pods.fields(), wl, path) if scenario.rules else {}
    return _apply_rules(scenario, scheme, wl, fields, source)


def load_scenario_workload(path: Path, scheme: LabelScheme) -> Workload:
    return build_workload(load_scenario(path), scheme, str(path))


# -- rules ---------------------------------------------------------------------------------
FieldValues = dict[str, list[Value]]  # field -> one value per job of the workload, in order


def _parse_label(scheme: LabelScheme, marking: str, where: str) -> Label:
    try:
        return scheme.parse(marking)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.detail}") from exc


def _apply_rules(
    scenario: Scenario, scheme: LabelScheme, wl: Workload, fields: FieldValues, source: str
) -> Workload:
    if not scenario.rules:
        return wl
    n = len(wl.jobs)
    agency: list[str | None] = [None] * n
    label: list[Label | None] = [None] * n
    slack: list[float | None] = [None] * n
    for i, rule in enumerate(scenario.rules):
        rule_label = _parse_label(scheme, rule.label, f"{source}: rules.{i}.label") if rule.label else None
        wanted: set[Value] | None = None
        if rule.in_ is not None and rule.field == "label":  # compare canonical markings
            wanted = {_parse_label(scheme, str(v), f"{source}: rules.{i}.in").marking for v in rule.in_}
        hits = np.flatnonzero(_matches(rule, fields[rule.field], wanted)).tolist()
        if not hits:  # a typo in a value or a range off the trace's scale: say so, never ignore it
            what = f"in = {rule.in_}" if rule.in_ is not None else f"range = {list(rule.range or ())}"
            raise InvalidInput(f"{source}: rules.{i}: {rule.field} {what} matches no job of the workload")
        for k in hits:
            if rule.agency is not None and agency[k] is None:
                agency[k] = rule.agency
            if rule_label is not None and label[k] is None:
                label[k] = rule_label
            if rule.deferrable_slack_hours is not None and slack[k] is None:
                slack[k] = rule.deferrable_slack_hours * 3600.0
    jobs = [
        sim if a is None and lb is None and s is None else _changed(sim, a, lb, s)
        for sim, a, lb, s in zip(wl.jobs, agency, label, slack, strict=True)
    ]
    return Workload(jobs, wl.source, wl.skipped, wl.max_procs)


def _matches(rule: Rule, values: list[Value], wanted: set[Value] | None = None) -> np.ndarray:
    if rule.range is not None:
        arr = np.asarray(values, dtype=np.float64)
        return (arr >= rule.range[0]) & (arr <= rule.range[1])
    assert rule.in_ is not None
    wanted = set(rule.in_) if wanted is None else wanted
    return np.fromiter((v in wanted for v in values), dtype=bool, count=len(values))


def _changed(sim: SimJob, agency: str | None, label: Label | None, slack: float | None) -> SimJob:
    job = sim.job
    changes: dict[str, object] = {}
    if agency is not None:
        changes["agency"] = agency
    if label is not None:
        changes["label"] = label
    deadline = None if slack is None else job.submit_s + job.walltime_s + slack
    if deadline is not None:
        changes.update(deferrable=True, deadline_s=deadline)
    job = dataclasses.replace(job, **changes)  # type: ignore[arg-type]
    if deadline is None:
        return dataclasses.replace(sim, job=job)
    return SimJob(job, sim.run_s, True, deadline)


def _swf_fields(path: Path, wl: Workload) -> FieldValues:
    """The SWF fields rules match on, aligned with the loaded jobs by job number."""
    _, t = swf.read_table(path)
    procs = np.where(t[:, swf.REQ_PROCS] > 0, t[:, swf.REQ_PROCS], t[:, swf.ALLOC_PROCS])
    columns = {name: t[:, col] for name, col in SWF_COLUMNS.items()} | {"procs": procs}
    ids = [str(int(x)) for x in t[:, swf.JOB].tolist()]
    return _by_id(ids, columns, wl, path)


def _by_id(
    ids: list[str], columns: Mapping[str, list[str] | np.ndarray], wl: Workload, path: Path
) -> FieldValues:
    row: dict[str, int] = {}
    for k, job_id in enumerate(ids):
        if row.setdefault(job_id, k) != k:
            raise InvalidInput(f"{path.name}: job {job_id!r} appears twice: rules need unique job ids")
    at = [row[sim.job.id] for sim in wl.jobs]
    out: FieldValues = {}
    for name, col in columns.items():
        values = col.tolist() if isinstance(col, np.ndarray) else col
        out[name] = [values[k] for k in at]
    return out


def _synthetic_fields(wl: Workload) -> FieldValues:
    kinds = {f"{name}-": name for name in KIND_NAMES}
    return {
        "kind": [kinds[s.job.id[: s.job.id.index("-") + 1]] for s in wl.jobs],
        "agency": [s.job.agency for s in wl.jobs],
        "label": [s.job.label.marking for s in wl.jobs],
    }
