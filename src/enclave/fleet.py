"""Fleet configuration: regions, their accreditation, power and node pools.

A fleet is a TOML file (see ``enclave/fleets/*.toml`` for the built-in ``local`` and
``gigawatt`` fleets). Parsing validates everything up front — unknown keys, unknown labels,
non-positive sizes, infinite or NaN numbers, duplicate names, guard patterns that do not
compile — so a bad file fails at start-up with a message naming the field.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from enclave import egress
from enclave.errors import InvalidInput
from enclave.labels import DEFAULT_COMPARTMENTS, DEFAULT_LEVELS, Label, LabelScheme

M = TypeVar("M", bound=BaseModel)
BUILTIN_FLEETS = ("local", "gigawatt")


class _Strict(BaseModel):
    # TOML has inf and nan: an infinite power cap or node draw would make the cap meaningless.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NodePool(_Strict):
    """Identical nodes; the scheduler works on pools, never node by node."""

    name: str
    count: Annotated[int, Field(gt=0)]
    cpus: Annotated[int, Field(gt=0)]
    memory_mb: Annotated[int, Field(gt=0)]
    gpu_model: str | None = None
    gpus: Annotated[int, Field(ge=0)] = 0
    idle_w: Annotated[float, Field(ge=0)]  # whole node, idle
    peak_w: Annotated[float, Field(gt=0)]  # whole node, all devices busy

    @field_validator("peak_w")
    @classmethod
    def _peak_above_idle(cls, v: float, info: object) -> float:
        data = getattr(info, "data", {})
        if "idle_w" in data and v < data["idle_w"]:
            raise ValueError("peak_w must be at least idle_w")
        return v


class _Backend(_Strict):
    """What every back end takes. Each engine's settings are typed (a misspelt key is an
    error at start-up naming it, never silently ignored): :class:`LocalBackend`,
    :class:`SlurmBackend`, :class:`RayBackend`, told apart by ``type``."""

    # Driven by a region worker (`enclave worker --region NAME`) inside the region's network;
    # the control plane then never talks to the engine itself, only hands work to the worker.
    worker: StrictBool = False
    # How much work, in multiples of the region's nodes, Enclave may hand the engine at once.
    # Above 1 the engine keeps a queue of its own and starts the next job the moment
    # resources free, instead of waiting for Enclave to see an end and submit again; Enclave
    # then no longer chooses the start order of what it handed over. Slurm and Ray only.
    queue_depth: Annotated[float, Field(ge=1.0, le=16.0)] = 1.0
    # What network a confined process (job, training job, model replica) gets: "none" — a
    # namespace with only a loopback of its own; "allow" — only the destinations in
    # network_allow, through a proxy in the sandbox checked outside it (enclave.egress); or
    # "host", this machine's whole network.
    network: Literal["none", "allow", "host"] = "none"
    # HOST:PORT entries: a DNS name, *.domain, an address or a network (10.1.0.0/16:8000).
    network_allow: list[str] = []
    # A scratch file system (an absolute path) shared by the region's jobs of one label and
    # agency — never across labels or agencies: a job sees only ``<scratch>/<label>/<agency>``
    # as $ENCLAVE_SCRATCH, where a workflow's later jobs find what earlier ones left.
    scratch: Annotated[str, Field(pattern=r"^/[^\x00]*$")] | None = None

    @field_validator("network_allow")
    @classmethod
    def _rules(cls, v: list[str]) -> list[str]:
        for rule in v:
            egress.parse_rule(rule)  # ValueError names the entry
        return v

    @model_validator(mode="after")
    def _allow_needs_a_list(self) -> _Backend:
        if (self.network == "allow") != bool(self.network_allow):
            raise ValueError('network_allow lists destinations exactly when network = "allow"')
        return self


class LocalBackend(_Backend):
    type: Literal["local"] = "local"


class SlurmBackend(_Backend):
    """``sbatch``/``squeue``/``sacct``/``scancel``: the commands, by path or name on PATH."""

    type: Literal["slurm"]
    partition: str
    account: str | None = None
    qos: str | None = None
    gres: str | None = None
    sbatch: str | None = None
    squeue: str | None = None
    sacct: str | None = None
    scancel: str | None = None


class RayBackend(_Backend):
    """``address`` of the head (``HOST:6379``); ``dashboard``: its job API (default port 8265);
    ``token_file``: the file holding the cluster's token (Ray's ``RAY_AUTH_MODE=token``)."""

    type: Literal["ray"]
    address: str | None = None
    dashboard: str | None = None
    token_file: Annotated[str, Field(pattern=r"^/", description="an absolute path")] | None = None
    grace_s: Annotated[float, Field(gt=0)] = 10.0
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    status_ttl_s: Annotated[float, Field(gt=0)] = 0.5
    lost_after_s: Annotated[float, Field(gt=0)] = 120.0


Backend = Annotated[LocalBackend | SlurmBackend | RayBackend, Field(discriminator="type")]


class Region(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
    accreditation: str
    power_cap_mw: Annotated[float, Field(gt=0)]
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.2
    carbon_g_per_kwh: Annotated[float, Field(ge=0)] = 400.0
    price_per_kwh: Annotated[float, Field(ge=0)] = 0.10
    backend: Backend = LocalBackend()
    pools: Annotated[list[NodePool], Field(min_length=1)]
    # Base URLs (http(s)://host:port/path) that openai-upstream models served here may call;
    # the operator's list, not the model author's choice. Needs backend.network "host", or
    # "allow" with the URL's host and port on network_allow.
    upstream_allow: list[Annotated[str, Field(pattern=r"^https?://[^\s]+$")]] = []
    # Serve models saved as pickles (joblib, .pkl, torch .pt/.pth): loading one runs code its
    # author chose. Off: only formats that load without running content (skops, safetensors).
    # On: still loaded only inside the region's confined replica process, never the control plane.
    allow_pickle_models: StrictBool = False

    @property
    def nodes(self) -> int:
        return sum(p.count for p in self.pools)

    @property
    def cpus(self) -> int:
        return sum(p.count * p.cpus for p in self.pools)

    @property
    def gpus(self) -> int:
        return sum(p.count * p.gpus for p in self.pools)

    @property
    def peak_facility_mw(self) -> float:
        """Draw with every node at peak, PUE applied."""
        return sum(p.count * p.peak_w for p in self.pools) * self.pue / 1e6

    @property
    def idle_facility_mw(self) -> float:
        return sum(p.count * p.idle_w for p in self.pools) * self.pue / 1e6

    def as_scheduled(self) -> Region:
        """The region as Enclave's scheduler fills it: with ``queue_depth`` times its nodes
        when the engine keeps a queue of its own (see :class:`Backend`)."""
        depth = self.backend.queue_depth
        if depth == 1.0:
            return self
        pools = [p.model_copy(update={"count": int(p.count * depth)}) for p in self.pools]
        return self.model_copy(update={"pools": pools})


class LabelsConfig(_Strict):
    levels: list[str] = list(DEFAULT_LEVELS)
    compartments: list[str] = list(DEFAULT_COMPARTMENTS)
    aliases: dict[str, str] | None = None


class GuardPattern(_Strict):
    pattern: str
    marking: str


class GuardConfig(_Strict):
    patterns: list[GuardPattern] = []


class Fleet(_Strict):
    name: str
    description: str = ""
    labels: LabelsConfig = LabelsConfig()
    guard: GuardConfig = GuardConfig()
    regions: Annotated[list[Region], Field(min_length=1)]

    @property
    def scheme(self) -> LabelScheme:
        cfg = self.labels
        return LabelScheme.build(cfg.levels, cfg.compartments, cfg.aliases)

    def region(self, name: str) -> Region:
        for region in self.regions:
            if region.name == name:
                return region
        raise InvalidInput(f"unknown region {name!r}")

    def accreditation(self, region: Region) -> Label:
        return self.scheme.parse(region.accreditation)

    @property
    def peak_facility_mw(self) -> float:
        return sum(r.peak_facility_mw for r in self.regions)


def validate_toml(text: str, source: str, model: type[M]) -> M:
    """Parse TOML into ``model``; any problem is one InvalidInput naming the source and key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{source}: not valid TOML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or model.__name__.lower()}: {err['msg']}"
            for err in exc.errors()
        ]
        raise InvalidInput(_all(source, problems)) from exc


MAX_PROBLEMS = 10  # of a file, said at once: fixing them one start-up at a time is slow


def _all(source: str, problems: list[str]) -> str:
    more = len(problems) - MAX_PROBLEMS
    listed = "; ".join(problems[:MAX_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
    return f"{source}: {listed}" if len(problems) == 1 else f"{source}: {len(problems)} problems: {listed}"


def parse_fleet(text: str, source: str = "<fleet>") -> Fleet:
    fleet = validate_toml(text, source, Fleet)
    problems: list[str] = []
    names = [r.name for r in fleet.regions]
    if len(set(names)) != len(names):
        problems.append("regions: region names must be unique")
    scheme: LabelScheme | None = None
    try:
        scheme = fleet.scheme
    except InvalidInput as exc:
        problems.append(f"labels: {exc.detail}")
    for region in fleet.regions:
        pools = [p.name for p in region.pools]
        if len(set(pools)) != len(pools):
            problems.append(f"regions.{region.name}.pools: pool names must be unique")
        try:
            _check_queue_depth(region, source)
        except InvalidInput as exc:
            problems.append(exc.detail.removeprefix(f"{source}: "))
        if scheme is not None:
            try:
                scheme.parse(region.accreditation)  # raises on an unknown marking
            except InvalidInput as exc:
                problems.append(f"regions.{region.name}.accreditation: {exc.detail}")
    for i, item in enumerate(fleet.guard.patterns):
        if scheme is not None:
            try:
                scheme.parse(item.marking)
            except InvalidInput as exc:
                problems.append(f"guard.patterns.{i}.marking: {exc.detail}")
        try:
            re.compile(item.pattern)
        except re.error as exc:
            problems.append(f"guard.patterns.{i}.pattern: not a valid regular expression: {exc}")
    if problems:
        raise InvalidInput(_all(source, problems))
    return fleet


def _check_queue_depth(region: Region, source: str) -> None:
    depth = region.backend.queue_depth
    if depth == 1.0:
        return
    where = f"{source}: regions.{region.name}.backend.queue_depth"
    if region.backend.type == "local":
        raise InvalidInput(
            f"{where}: the local executor keeps no queue; only slurm and ray take a deeper one"
        )
    # The engine, not Enclave, then picks which handed-over job runs when: the cap must hold
    # whatever it picks, so it must cover the draw Enclave's scheduler may count.
    if region.power_cap_mw < region.peak_facility_mw * depth:
        raise InvalidInput(
            f"{where}: needs a power cap of at least {region.peak_facility_mw * depth:.6g} MW "
            f"({depth:g} x the region's peak draw), since the engine chooses what runs"
        )


def load_fleet(name_or_path: str) -> Fleet:
    """A built-in fleet by name (``local``, ``gigawatt``) or a TOML file by path."""
    if name_or_path in BUILTIN_FLEETS:
        text = resources.files("enclave.fleets").joinpath(f"{name_or_path}.toml").read_text(encoding="utf-8")
        return parse_fleet(text, name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise InvalidInput(
            f"no fleet named {name_or_path!r} (built-in: {', '.join(BUILTIN_FLEETS)}) and no such file"
        )
    return parse_fleet(path.read_text(encoding="utf-8"), str(path))
