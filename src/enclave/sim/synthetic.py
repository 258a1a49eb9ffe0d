"""A seeded synthetic AI + HPC workload: the same seed and parameters give the same jobs.

Three kinds of work, mixed by share of the job count:

- **training** — gang-scheduled GPU jobs. The GPU count is a power of two from 1 up to
  ``max_training_nodes`` whole nodes of ``gpus_per_node`` GPUs, heavy-tailed:
  ``P(2^k GPUs) ∝ 2^(-training_size_alpha · k)``. Fewer GPUs than a node holds is one shared
  node; more is whole nodes. Run times are lognormal (median ``training_median_hours``,
  ``training_sigma``), and users' estimates overshoot them (``estimate = run · (1 + Exp(1))``
  rounded up to 15 minutes), as in real traces;
- **inference** — endpoints whose replica count follows a diurnal request curve
  ``demand(h) = 1 - A + A · (1 + cos(2π (h - peak) / 24)) / 2`` (``A = diurnal_amplitude``,
  the peak hour drawn per endpoint around 14:00). An endpoint of ``R`` replicas needs replica
  ``r`` while ``demand · R > r``; each replica-day is one job that starts when the replica
  is needed and stops when it is not (replicas needed all day are 24-hour jobs, one a day).
  Replica jobs know when they stop, so their estimate is their run time. QOS ``high``;
- **hpc** — ensembles: groups of CPU jobs (mean size ``hpc_ensemble_mean``) submitted at the
  same instant, all of one shape (whole CPU nodes, a power of two up to ``max_hpc_nodes``),
  with run times spread around the ensemble's lognormal median.

Training jobs and HPC ensembles arrive by a non-homogeneous Poisson process that follows
the same diurnal curve (peak 14:00). Agencies and labels are drawn by the given shares — per
training job, per ensemble and per endpoint. A share ``deferrable_share`` of training jobs
and ensembles is *deferrable*: its deadline is ``submit + estimate + slack`` with slack
uniform in ``[0.5, 1.5] × deadline_slack_hours``, for carbon-aware policies.

The job count is exact: ``jobs`` (or ``arrival_rate_per_hour × 24 × days``) split by ``mix``;
the last ensemble and the last endpoint are trimmed to fit (an endpoint's highest replicas
go first). Everything is drawn with numpy from one ``Generator(PCG64(seed))`` in a fixed
order and assembled column-wise, so a million jobs take a few seconds.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from enclave.errors import InvalidInput
from enclave.labels import Label, LabelScheme
from enclave.scheduler.model import QOS, Job
from enclave.sim.workload import SimJob, Workload, no_gc

DAY_S = 86400.0
HOUR_S = 3600.0
PEAK_HOUR = 14.0
TRAINING, INFERENCE, HPC = 0, 1, 2
KIND_NAMES = ("training", "inference", "hpc")
MIN_RUN_S = 60.0
MAX_RUN_S = 14 * DAY_S
ESTIMATE_STEP_S = 900.0

DEFAULT_AGENCIES = {"doe": 0.3, "nih": 0.15, "noaa": 0.15, "nasa": 0.15, "dod": 0.25}
DEFAULT_LABELS = {"UNCLASSIFIED": 0.4, "CUI": 0.3, "SECRET": 0.2, "TOP SECRET//SI/TK": 0.1}

Share = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Mix(_Strict):
    """Shares of the job count per kind (normalised; at least one must be positive)."""

    training: Share = 0.3
    inference: Share = 0.1
    hpc: Share = 0.6

    @model_validator(mode="after")
    def _some(self) -> Mix:
        if self.training + self.inference + self.hpc <= 0:
            raise ValueError("at least one of training, inference, hpc must have a positive share")
        return self


class SyntheticSpec(_Strict):
    """Parameters of the generator; defaults suit the built-in ``gigawatt`` fleet."""

    seed: int = 0
    jobs: Annotated[int, Field(ge=0)] | None = None  # default 10,000 unless a rate is given
    arrival_rate_per_hour: Positive | None = None  # jobs per hour: jobs = rate x 24 x days
    days: Positive = 7.0
    mix: Mix = Mix()
    agencies: dict[str, Share] = Field(default_factory=lambda: dict(DEFAULT_AGENCIES))
    labels: dict[str, Share] = Field(default_factory=lambda: dict(DEFAULT_LABELS))  # marking -> share
    deferrable_share: Annotated[float, Field(ge=0, le=1)] = 0.3
    deadline_slack_hours: Positive = 24.0
    diurnal_amplitude: Annotated[float, Field(ge=0, le=1)] = 0.5
    # Node shapes (per node) of the fleet the jobs are meant for.
    gpus_per_node: Annotated[int, Field(gt=0)] = 8
    gpu_node_cpus: Annotated[int, Field(gt=0)] = 112
    gpu_node_memory_mb: Annotated[int, Field(gt=0)] = 2_097_152
    cpu_node_cpus: Annotated[int, Field(gt=0)] = 128
    cpu_node_memory_mb: Annotated[int, Field(gt=0)] = 524_288
    # Training
    max_training_nodes: Annotated[int, Field(gt=0)] = 512
    training_size_alpha: Share = 0.5
    training_median_hours: Positive = 4.0
    training_sigma: Share = 1.2
    # Inference
    max_replicas: Annotated[int, Field(gt=0)] = 16
    # HPC ensembles
    hpc_ensemble_mean: Annotated[float, Field(ge=1)] = 40.0
    max_hpc_nodes: Annotated[int, Field(gt=0)] = 64
    hpc_size_alpha: Share = 1.0
    hpc_median_hours: Positive = 1.0
    hpc_sigma: Share = 1.0

    @model_validator(mode="after")
    def _check(self) -> SyntheticSpec:
        if self.jobs is not None and self.arrival_rate_per_hour is not None:
            raise ValueError("give jobs or arrival_rate_per_hour, not both")
        for what, shares in (("agencies", self.agencies), ("labels", self.labels)):
            if not shares or sum(shares.values()) <= 0:
                raise ValueError(f"{what} needs at least one entry with a positive share")
            if any(not k.strip() for k in shares):
                raise ValueError(f"{what}: names must not be empty")
        for what, n in (
            ("max_training_nodes", self.max_training_nodes),
            ("max_hpc_nodes", self.max_hpc_nodes),
        ):
            if n & (n - 1):
                raise ValueError(f"{what} must be a power of two, got {n}")
        return self

    @property
    def job_count(self) -> int:
        if self.arrival_rate_per_hour is not None:
            return round(self.arrival_rate_per_hour * 24 * self.days)
        return 10_000 if self.jobs is None else self.jobs


def generate(spec: SyntheticSpec, scheme: LabelScheme) -> Workload:
    """The workload ``spec`` describes, its labels parsed with ``scheme`` (an unknown marking
    is an InvalidInput naming it). Jobs come sorted by submission time."""
    labels = _labels(spec, scheme)
    agencies = list(spec.agencies)
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    horizon = spec.days * DAY_S
    n = spec.job_count
    shares = np.array([spec.mix.training, spec.mix.inference, spec.mix.hpc])
    counts = _split(n, shares / shares.sum())
    parts = [
        _training(rng, spec, counts[TRAINING], horizon),
        _inference(rng, spec, counts[INFERENCE], horizon),
        _hpc(rng, spec, counts[HPC], horizon),
    ]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(cols["submit"], kind="stable")  # ties: kind, then generation order
    return _assemble(spec, {k: v[order] for k, v in cols.items()}, agencies, labels)


# -- the three kinds ----------------------------------------------------------------------
Columns = dict[str, np.ndarray]


def _training(rng: np.random.Generator, spec: SyntheticSpec, n: int, horizon: float) -> Columns:
    gpn = spec.gpus_per_node
    top = int(math.log2(spec.max_training_nodes * gpn))
    k = np.arange(top + 1)
    p = 2.0 ** (-spec.training_size_alpha * k)
    total_gpus = 2 ** rng.choice(k, size=n, p=p / p.sum())
    submit = _arrivals(rng, spec, n, horizon)
    run = _lognormal(rng, spec.training_median_hours, spec.training_sigma, n)
    estimate = _estimates(rng, run)
    whole = total_gpus >= gpn
    nodes = np.where(whole, total_gpus // gpn, 1)
    gpus = np.where(whole, gpn, total_gpus)
    cols = _shaped(nodes, gpus * spec.gpu_node_cpus // gpn, gpus * (spec.gpu_node_memory_mb // gpn), gpus)
    cols.update(_owners(rng, spec, n))
    cols.update(_deferrable(rng, spec, submit, estimate))
    cols.update(submit=submit, run=run, estimate=estimate, kind=np.full(n, TRAINING), qos=np.full(n, 1))
    return cols


def _inference(rng: np.random.Generator, spec: SyntheticSpec, n: int, horizon: float) -> Columns:
    if n == 0:
        return _empty()
    ndays = max(1, math.ceil(spec.days))
    a = spec.diurnal_amplitude
    chunks: list[Columns] = []
    have = offset = 0
    batch = n // (ndays * max(1, spec.max_replicas // 2)) + 1
    while have < n:  # endpoints in batches until their replica-days cover n jobs
        replicas = rng.integers(1, spec.max_replicas + 1, size=batch)
        peak = np.clip(rng.normal(PEAK_HOUR, 2.0, size=batch), 0.0, 24.0)
        gpus = np.minimum(2 ** rng.choice(4, size=batch, p=[0.4, 0.3, 0.2, 0.1]), spec.gpus_per_node)
        owners = _owners(rng, spec, batch)
        # One row per (endpoint, day, replica), endpoint-major so endpoints can be cut in order.
        rows = replicas * ndays
        ep = np.repeat(np.arange(batch), rows)
        within = np.arange(len(ep)) - np.repeat(np.cumsum(rows) - rows, rows)
        day = within // replicas[ep]
        r = within % replicas[ep]
        # Replica r runs while demand(h) * R > r, i.e. while cos(2π(h - peak)/24) > c.
        c = 2.0 * (r / replicas[ep] - (1.0 - a)) / a - 1.0 if a > 0 else np.full(len(ep), -2.0)
        all_day = c <= -1.0
        half_h = np.arccos(np.clip(c, -1.0, 1.0)) * 24.0 / (2 * math.pi)
        start = np.round(np.where(all_day, day * DAY_S, day * DAY_S + (peak[ep] - half_h) * HOUR_S))
        run = np.maximum(np.round(np.where(all_day, DAY_S, 2.0 * half_h * HOUR_S)), MIN_RUN_S)
        ok = (start >= 0) & (start < horizon)  # replica-days that begin inside the horizon
        e = ep[ok]
        chunks.append(
            {
                "ep": e + offset,
                "r": r[ok],
                "submit": start[ok],
                "run": run[ok],
                "gpus": gpus[e],
                "agency": owners["agency"][e],
                "label": owners["label"][e],
            }
        )
        offset += batch
        have += len(e)
    rows_of = {k: np.concatenate([ch[k] for ch in chunks]) for k in chunks[0]}
    keep = _cut_endpoints(rng, rows_of["ep"], rows_of["r"], n)
    sel = {k: v[keep] for k, v in rows_of.items()}
    gpn = spec.gpus_per_node
    ones = np.ones(n, dtype=np.int64)
    cols = _shaped(
        ones,
        sel["gpus"] * spec.gpu_node_cpus // gpn,
        sel["gpus"] * (spec.gpu_node_memory_mb // gpn),
        sel["gpus"],
    )
    cols.update(
        agency=sel["agency"],
        label=sel["label"],
        submit=sel["submit"],
        run=sel["run"],
        estimate=sel["run"].copy(),
        kind=np.full(n, INFERENCE),
        qos=np.full(n, 2),
        deferrable=np.zeros(n, dtype=bool),
        deadline=np.full(n, np.nan),
    )
    return cols


def _cut_endpoints(rng: np.random.Generator, ep: np.ndarray, r: np.ndarray, n: int) -> np.ndarray:
    """Indexes of exactly ``n`` rows: whole endpoints in order, the last one trimmed from its
    highest replicas down (random days among equal replicas)."""
    per = np.bincount(ep)
    total = np.cumsum(per)
    last = int(np.searchsorted(total, n))  # first endpoint whose cumulative count reaches n
    before = int(total[last - 1]) if last > 0 else 0
    full = np.flatnonzero(ep < last)
    tail = np.flatnonzero(ep == last)
    need = n - before
    noise = rng.random(len(tail))
    tail = tail[np.lexsort((noise, r[tail]))][:need]  # lowest replicas first
    return np.sort(np.concatenate([full, tail]))


def _hpc(rng: np.random.Generator, spec: SyntheticSpec, n: int, horizon: float) -> Columns:
    if n == 0:
        return _empty()
    p = 1.0 / spec.hpc_ensemble_mean
    count = max(1, int(n * p * 1.5) + 10)
    sizes = rng.geometric(p, size=count)
    while sizes.sum() < n:
        sizes = np.concatenate([sizes, rng.geometric(p, size=count)])
    ends = np.cumsum(sizes)
    e = int(np.searchsorted(ends, n)) + 1  # ensembles used; the last one trimmed
    sizes = sizes[:e].copy()
    sizes[-1] -= int(ends[e - 1]) - n
    top = int(math.log2(spec.max_hpc_nodes))
    k = np.arange(top + 1)
    w = 2.0 ** (-spec.hpc_size_alpha * k)
    ens_nodes = 2 ** rng.choice(k, size=e, p=w / w.sum())
    ens_submit = _arrivals(rng, spec, e, horizon)
    ens_median = _lognormal(rng, spec.hpc_median_hours, spec.hpc_sigma, e)
    owners = _owners(rng, spec, e)
    member = np.repeat(np.arange(e), sizes)
    run = np.clip(np.round(ens_median[member] * rng.lognormal(0.0, 0.2, size=n)), MIN_RUN_S, MAX_RUN_S)
    estimate = _estimates(rng, run)
    defer = rng.random(e) < spec.deferrable_share  # a whole ensemble or none of it
    slack = rng.uniform(0.5, 1.5, size=e) * spec.deadline_slack_hours * HOUR_S
    submit = ens_submit[member]
    ones = np.ones(n, dtype=np.int64)
    cols = _shaped(ens_nodes[member], ones * spec.cpu_node_cpus, ones * spec.cpu_node_memory_mb, 0 * ones)
    cols.update(
        agency=owners["agency"][member],
        label=owners["label"][member],
        submit=submit,
        run=run,
        estimate=estimate,
        kind=np.full(n, HPC),
        qos=np.full(n, 1),
        deferrable=defer[member],
        deadline=np.where(defer[member], submit + estimate + slack[member], np.nan),
    )
    return cols


# -- shared draws -------------------------------------------------------------------------
def _split(n: int, shares: np.ndarray) -> list[int]:
    """``n`` split by ``shares`` exactly (largest remainders)."""
    raw = shares * n
    counts = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def _diurnal(spec: SyntheticSpec, hour: np.ndarray) -> np.ndarray:
    a = spec.diurnal_amplitude
    return 1.0 - a + a * (1.0 + np.cos(2 * math.pi * (hour - PEAK_HOUR) / 24.0)) / 2.0


def _arrivals(rng: np.random.Generator, spec: SyntheticSpec, n: int, horizon: float) -> np.ndarray:
    """Whole-second arrival times in ``[0, horizon)`` following the diurnal curve."""
    hours = math.ceil(horizon / HOUR_S)
    slot = np.arange(hours)
    weight = _diurnal(spec, slot % 24 + 0.5) * np.minimum(1.0, (horizon - slot * HOUR_S) / HOUR_S)
    which = rng.choice(hours, size=n, p=weight / weight.sum())
    t = np.floor((which + rng.random(n)) * HOUR_S)
    return np.minimum(t, math.ceil(horizon) - 1.0)


def _lognormal(rng: np.random.Generator, median_h: float, sigma: float, n: int) -> np.ndarray:
    run: np.ndarray = np.clip(
        np.round(rng.lognormal(math.log(median_h * HOUR_S), sigma, size=n)), MIN_RUN_S, MAX_RUN_S
    )
    return run


def _estimates(rng: np.random.Generator, run: np.ndarray) -> np.ndarray:
    """Users' requested times: above the run time, rounded up to a quarter hour."""
    over = run * (1.0 + rng.exponential(1.0, size=len(run)))
    estimate: np.ndarray = np.maximum(np.ceil(over / ESTIMATE_STEP_S) * ESTIMATE_STEP_S, run)
    return estimate


def _owners(rng: np.random.Generator, spec: SyntheticSpec, n: int) -> Columns:
    a = np.array(list(spec.agencies.values()))
    lab = np.array(list(spec.labels.values()))
    return {
        "agency": rng.choice(len(a), size=n, p=a / a.sum()),
        "label": rng.choice(len(lab), size=n, p=lab / lab.sum()),
    }


def _deferrable(
    rng: np.random.Generator, spec: SyntheticSpec, submit: np.ndarray, estimate: np.ndarray
) -> Columns:
    n = len(submit)
    defer = rng.random(n) < spec.deferrable_share
    slack = rng.uniform(0.5, 1.5, size=n) * spec.deadline_slack_hours * HOUR_S
    return {"deferrable": defer, "deadline": np.where(defer, submit + estimate + slack, np.nan)}


def _shaped(nodes: np.ndarray, cpus: np.ndarray, memory: np.ndarray, gpus: np.ndarray) -> Columns:
    return {
        "nodes": nodes.astype(np.int64),
        "cpus": np.maximum(cpus, 1).astype(np.int64),
        "memory": np.maximum(memory, 1).astype(np.int64),
        "gpus": gpus.astype(np.int64),
    }


def _empty() -> Columns:
    i = np.zeros(0, dtype=np.int64)
    f = np.zeros(0)
    return {
        "nodes": i, "cpus": i, "memory": i, "gpus": i, "agency": i, "label": i, "submit": f, "run": f,
        "estimate": f, "kind": i, "qos": i, "deferrable": np.zeros(0, dtype=bool), "deadline": f,
    }  # fmt: skip


def _labels(spec: SyntheticSpec, scheme: LabelScheme) -> list[Label]:
    out = []
    for marking in spec.labels:
        try:
            out.append(scheme.parse(marking))
        except InvalidInput as exc:
            raise InvalidInput(f"synthetic labels: {marking!r}: {exc.detail}") from exc
    return out


def _assemble(spec: SyntheticSpec, cols: Columns, agencies: list[str], labels: list[Label]) -> Workload:
    """SimJobs from sorted columns, built in one comprehension over plain Python lists."""
    qos_of = (QOS.LOW, QOS.NORMAL, QOS.HIGH)
    prefix = [f"{name}-" for name in KIND_NAMES]
    kind = cols["kind"].tolist()
    ids = [prefix[kd] + str(k) for k, kd in enumerate(kind)]
    agency = [agencies[i] for i in cols["agency"].tolist()]
    label = [labels[i] for i in cols["label"].tolist()]
    qos = [qos_of[i] for i in cols["qos"].tolist()]
    nodes, cpus, mem, gpus = (cols[c].tolist() for c in ("nodes", "cpus", "memory", "gpus"))
    submit, run, est = (cols[c].tolist() for c in ("submit", "run", "estimate"))
    defer = cols["deferrable"].tolist()
    deadline = [d if f else None for d, f in zip(cols["deadline"].tolist(), defer, strict=True)]
    with no_gc():  # about 40% of the build time otherwise
        jobs = _build(ids, agency, label, nodes, cpus, mem, gpus, est, submit, qos, run, defer, deadline)
    source = f"synthetic(seed={spec.seed}, jobs={spec.job_count}, days={spec.days:g})"
    return Workload(jobs, source, {}, None)


def _build(
    ids: list[str],
    agency: list[str],
    label: list[Label],
    nodes: list[int],
    cpus: list[int],
    mem: list[int],
    gpus: list[int],
    est: list[float],
    submit: list[float],
    qos: list[QOS],
    run: list[float],
    defer: list[bool],
    deadline: list[float | None],
) -> list[SimJob]:
    return [
        SimJob(
            Job(
                id=ids[k],
                agency=agency[k],
                label=label[k],
                nodes=nodes[k],
                cpus=cpus[k],
                memory_mb=mem[k],
                gpus=gpus[k],
                walltime_s=est[k],
                submit_s=submit[k],
                qos=qos[k],
                seq=k,
                deferrable=defer[k],
                deadline_s=deadline[k],
            ),
            run[k],
            defer[k],
            deadline[k],
        )
        for k in range(len(ids))
    ]
