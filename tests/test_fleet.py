"""Fleet files: the built-in fleets and validation of hand-written ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from enclave.errors import InvalidInput
from enclave.fleet import BUILTIN_FLEETS, Fleet, load_fleet, parse_fleet
from enclave.labels import DEFAULT_SCHEME

MINIMAL = """
name = "tiny"

[[regions]]
name = "east"
accreditation = "SECRET"
power_cap_mw = 1.0
[[regions.pools]]
name = "cpu"
count = 2
cpus = 4
memory_mb = 8192
idle_w = 50.0
peak_w = 200.0
"""


def fleet_text(**replacements: str) -> str:
    """MINIMAL with whole lines swapped, e.g. ``fleet_text(count="count = -1")``."""
    lines = []
    for line in MINIMAL.splitlines():
        key = line.split("=")[0].strip()
        lines.append(replacements.get(key, line))
    return "\n".join(lines)


def test_minimal_fleet_parses_with_defaults() -> None:
    fleet = parse_fleet(MINIMAL)
    region = fleet.region("east")
    assert region.pue == 1.2 and region.backend.type == "local"
    assert fleet.scheme == DEFAULT_SCHEME
    assert fleet.accreditation(region) == DEFAULT_SCHEME.parse("SECRET")
    assert region.nodes == 2 and region.cpus == 8 and region.gpus == 0
    assert region.peak_facility_mw == pytest.approx(2 * 200 * 1.2 / 1e6)
    assert region.idle_facility_mw == pytest.approx(2 * 50 * 1.2 / 1e6)


# -- built-in fleets ---------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN_FLEETS)
def test_builtin_fleets_load(name: str) -> None:
    fleet = load_fleet(name)
    assert isinstance(fleet, Fleet) and fleet.name == name
    assert [r.name for r in fleet.regions] == ["gov-east", "secret-west", "ts-east"]
    for region in fleet.regions:
        assert region.peak_facility_mw <= region.power_cap_mw
        assert 0 < region.idle_facility_mw < region.peak_facility_mw


@pytest.mark.parametrize("name", BUILTIN_FLEETS)
def test_builtin_regions_are_accredited_cui_secret_top_secret(name: str) -> None:
    fleet = load_fleet(name)
    scheme = fleet.scheme
    accreditation = {r.name: fleet.accreditation(r) for r in fleet.regions}
    assert accreditation["gov-east"] == scheme.parse("CUI")
    assert accreditation["secret-west"] == scheme.parse("SECRET")
    assert accreditation["ts-east"].level == "TOP SECRET"
    assert accreditation["ts-east"] == scheme.top  # TOP SECRET with every compartment
    ranks = [accreditation[n].rank for n in ("gov-east", "secret-west", "ts-east")]
    assert ranks == sorted(ranks) and len(set(ranks)) == 3


def test_gigawatt_fleet_is_about_1_3_gw() -> None:
    fleet = load_fleet("gigawatt")
    caps = {r.name: r.power_cap_mw for r in fleet.regions}
    assert caps == {"gov-east": 700.0, "secret-west": 350.0, "ts-east": 250.0}
    assert sum(caps.values()) == pytest.approx(1300.0)
    # Sized to use the power it has: every region's peak is within 10% of its cap.
    for region in fleet.regions:
        assert 0.9 * region.power_cap_mw <= region.peak_facility_mw <= region.power_cap_mw, region.name
    assert 1170 <= fleet.peak_facility_mw <= 1300
    # Hundreds of thousands of GPUs, on H100-class 8-GPU servers.
    gpus = sum(r.gpus for r in fleet.regions)
    assert 700_000 <= gpus <= 900_000
    assert {p.gpu_model for r in fleet.regions for p in r.pools if p.gpus} == {"H100-SXM-80GB"}


def test_local_fleet_is_small() -> None:
    fleet = load_fleet("local")
    assert all(r.nodes == 1 and r.backend.type == "local" for r in fleet.regions)
    assert fleet.peak_facility_mw < 0.001


def test_fleet_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_fleet(str(path)).name == "tiny"


def test_unknown_region_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="unknown region 'west'"):
        parse_fleet(MINIMAL).region("west")


# -- bad files ---------------------------------------------------------------------------
BAD_FILES = [
    (
        "unknown-pool-key",
        MINIMAL.replace('name = "cpu"', 'name = "cpu"\nbogus = 1'),
        r"regions\.0\.pools\.0\.bogus: Extra inputs",
    ),
    ("unknown-top-table", MINIMAL + "\n[extra]\nx = 1\n", r"extra: Extra inputs"),
    (
        "unknown-region-key",
        MINIMAL.replace("power_cap_mw = 1.0", "power_cap_mw = 1.0\ncolour = 'red'"),
        r"regions\.0\.colour",
    ),
    (
        "negative-count",
        fleet_text(count="count = -1"),
        r"regions\.0\.pools\.0\.count: Input should be greater than 0",
    ),
    ("zero-count", fleet_text(count="count = 0"), r"count: Input should be greater than 0"),
    ("zero-cpus", fleet_text(cpus="cpus = 0"), r"cpus: Input should be greater than 0"),
    (
        "negative-idle",
        fleet_text(idle_w="idle_w = -1.0"),
        r"idle_w: Input should be greater than or equal to 0",
    ),
    (
        "peak-below-idle",
        fleet_text(peak_w="peak_w = 40.0"),
        r"peak_w: Value error, peak_w must be at least idle_w",
    ),
    (
        "zero-cap",
        fleet_text(power_cap_mw="power_cap_mw = 0.0"),
        r"power_cap_mw: Input should be greater than 0",
    ),
    (
        "infinite-cap",
        fleet_text(power_cap_mw="power_cap_mw = inf"),
        r"power_cap_mw: Input should be a finite number",
    ),
    ("nan-cap", fleet_text(power_cap_mw="power_cap_mw = nan"), r"power_cap_mw"),
    ("infinite-peak", fleet_text(peak_w="peak_w = inf"), r"peak_w: Input should be a finite number"),
    (
        "cap-not-a-number",
        fleet_text(power_cap_mw="power_cap_mw = '1 MW'"),
        r"power_cap_mw: Input should be a valid number",
    ),
    (
        "pue-below-1",
        fleet_text(power_cap_mw="power_cap_mw = 1.0\npue = 0.5"),
        r"pue: Input should be greater than or equal to 1",
    ),
    (
        "bad-region-name",
        MINIMAL.replace('name = "east"', 'name = "East Coast"'),
        r"regions\.0\.name: String should match pattern",
    ),
    (
        "unknown-backend",
        MINIMAL.replace("[[regions.pools]]", "backend = { type = 'k8s' }\n[[regions.pools]]"),
        r"backend: Input tag 'k8s' .* expected tags: 'local', 'slurm', 'ray'",
    ),
    (
        "misspelt-slurm-setting",
        MINIMAL.replace(
            "[[regions.pools]]",
            "backend = { type = 'slurm', partition = 'debug', acount = 'x' }\n[[regions.pools]]",
        ),
        r"backend\.slurm\.acount: Extra inputs are not permitted",
    ),
    (
        "slurm-without-partition",
        MINIMAL.replace("[[regions.pools]]", "backend = { type = 'slurm' }\n[[regions.pools]]"),
        r"backend\.slurm\.partition: Field required",
    ),
    (
        "misspelt-local-setting",
        MINIMAL.replace(
            "[[regions.pools]]", "backend = { type = 'local', netwrok = 'host' }\n[[regions.pools]]"
        ),
        r"backend\.local\.netwrok: Extra inputs are not permitted",
    ),
    ("no-regions", 'name = "empty"\nregions = []\n', r"regions: List should have at least 1 item"),
    ("regions-missing", 'name = "none"\n', r"regions: Field required"),
    ("pools-missing", MINIMAL.split("[[regions.pools]]")[0], r"regions\.0\.pools: Field required"),
    ("duplicate-region", MINIMAL + MINIMAL.split("\n", 2)[2], r"region names must be unique"),
    (
        "duplicate-pool",
        MINIMAL + MINIMAL.split("[[regions.pools]]")[1].join(["[[regions.pools]]", ""]),
        r"pool names must be unique",
    ),
    (
        "unknown-level",
        MINIMAL.replace('"SECRET"', '"CONFIDENTIAL"'),
        r"regions\.east\.accreditation: unknown classification level",
    ),
    (
        "unknown-compartment",
        MINIMAL.replace('"SECRET"', '"SECRET//NOFORN"'),
        r"regions\.east\.accreditation: unknown compartment",
    ),
    (
        "empty-compartment",
        MINIMAL.replace('"SECRET"', '"SECRET//"'),
        r"accreditation: label 'SECRET//' has an empty compartment",
    ),
    (
        "accreditation-outside-custom-levels",
        MINIMAL + '\n[labels]\nlevels = ["LOW", "HIGH"]\n',
        r"accreditation: unknown classification level 'SECRET'",
    ),
    (
        "alias-to-unknown-level",
        MINIMAL + '\n[labels]\naliases = { X = "NOPE" }\n',
        r"labels: alias 'X' names unknown level 'NOPE'",
    ),
    ("no-levels", MINIMAL + "\n[labels]\nlevels = []\n", r"labels: a label scheme needs at least one level"),
    (
        "bad-compartment-name",
        MINIMAL + '\n[labels]\ncompartments = ["A B"]\n',
        r"labels: compartment name 'A B'",
    ),
    (
        "guard-marking-unknown",
        MINIMAL + '\n[[guard.patterns]]\npattern = "x"\nmarking = "NOPE"\n',
        r"guard\.patterns\.0\.marking: unknown",
    ),
    (
        "guard-regex-invalid",
        MINIMAL + '\n[[guard.patterns]]\npattern = "(x"\nmarking = "SECRET"\n',
        r"guard\.patterns\.0\.pattern: not a valid",
    ),
    ("toml-syntax", 'name = "x"\nregions = [', r"not valid TOML"),
    ("toml-duplicate-key", "name = 'x'\nname = 'y'\n", r"not valid TOML"),
    ("empty-file", "", r"name: Field required"),
]


@pytest.mark.parametrize(("text", "message"), [pytest.param(t, m, id=i) for i, t, m in BAD_FILES])
def test_bad_fleet_is_invalid_input_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        parse_fleet(text, "fleet.toml")
    assert info.value.detail.startswith("fleet.toml: ")


def test_bad_file_by_path_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(fleet_text(count="count = -3"), encoding="utf-8")
    with pytest.raises(InvalidInput, match=rf"^{path}: regions\.0\.pools\.0\.count"):
        load_fleet(str(path))


@pytest.mark.parametrize("name", ["nowhere", "gigawat", "/no/such/fleet.toml"])
def test_missing_file_is_invalid_input(name: str) -> None:
    with pytest.raises(InvalidInput, match="no such file") as info:
        load_fleet(name)
    assert "local, gigawatt" in info.value.detail


def test_a_directory_is_not_a_fleet_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        load_fleet(str(tmp_path))


def test_guard_patterns_and_custom_labels_are_kept() -> None:
    text = MINIMAL.replace('"SECRET"', '"R//HR"') + (
        '\n[labels]\nlevels = ["public", "restricted"]\ncompartments = ["hr"]\naliases = { R = "RESTRICTED" }\n'
        '\n[[guard.patterns]]\npattern = "\\\\bSTAFF ONLY\\\\b"\nmarking = "RESTRICTED"\n'
    )
    fleet = parse_fleet(text)
    assert fleet.scheme.levels == ("PUBLIC", "RESTRICTED")
    assert fleet.accreditation(fleet.regions[0]) == fleet.scheme.parse("RESTRICTED//HR")
    assert [(p.pattern, p.marking) for p in fleet.guard.patterns] == [(r"\bSTAFF ONLY\b", "RESTRICTED")]


def test_fleet_is_frozen() -> None:
    fleet = parse_fleet(MINIMAL)
    with pytest.raises(ValidationError, match="frozen"):
        fleet.name = "other"


# -- back ends: region workers and engine queues -------------------------------------------------
def with_backend(backend: str, cap: str = "1.0") -> str:
    return fleet_text(power_cap_mw=f"power_cap_mw = {cap}").replace(
        'accreditation = "SECRET"', f'accreditation = "SECRET"\nbackend = {backend}'
    )


def test_worker_flag_and_engine_settings_are_kept() -> None:
    fleet = parse_fleet(
        with_backend('{ type = "slurm", partition = "batch", worker = true, queue_depth = 2 }')
    )
    backend = fleet.regions[0].backend
    assert (backend.type, backend.worker, backend.queue_depth) == ("slurm", True, 2.0)
    assert backend.model_dump(exclude_defaults=True) == {
        "type": "slurm",
        "worker": True,
        "queue_depth": 2.0,
        "partition": "batch",
    }
    assert parse_fleet(MINIMAL).regions[0].backend.worker is False


def test_a_deeper_engine_queue_scales_only_what_the_scheduler_fills() -> None:
    region = parse_fleet(with_backend('{ type = "ray", address = "h:6379", queue_depth = 2.5 }')).regions[0]
    scheduled = region.as_scheduled()
    assert [p.count for p in scheduled.pools] == [5] and [p.count for p in region.pools] == [2]
    assert scheduled.power_cap_mw == region.power_cap_mw and scheduled.name == region.name
    plain = parse_fleet(MINIMAL).regions[0]
    assert plain.as_scheduled() is plain


@pytest.mark.parametrize(
    ("backend", "cap", "message"),
    [
        ('{ type = "local", queue_depth = 2 }', "1.0", "the local executor keeps no queue"),
        # Peak draw 2 x 200 W x PUE 1.2 = 480 W; a depth of 2 needs 960 W of cap.
        (
            '{ type = "slurm", partition = "p", queue_depth = 2 }',
            "0.0009",
            "needs a power cap of at least 0.00096 MW",
        ),
        (
            '{ type = "slurm", partition = "p", queue_depth = 0.5 }',
            "1.0",
            "queue_depth: Input should be greater than or equal to 1",
        ),
        (
            '{ type = "slurm", partition = "p", queue_depth = 100 }',
            "1.0",
            "queue_depth: Input should be less than or equal to 16",
        ),
        (
            '{ type = "slurm", partition = "p", worker = "yes" }',
            "1.0",
            "worker: Input should be a valid boolean",
        ),
    ],
)
def test_bad_engine_queues_are_refused(backend: str, cap: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_fleet(with_backend(backend, cap))
    assert parse_fleet(
        with_backend('{ type = "slurm", partition = "p", queue_depth = 2 }', "0.00096")
    ).regions[0]


def test_a_fleet_file_with_several_problems_names_them_all_at_once() -> None:
    """Found by a user: only the first problem was reported, one start-up per fix."""
    text = MINIMAL.replace("power_cap_mw = 1.0", "power_cap_mw = -1.0") + (
        '\n[[regions]]\nname = "Bad Name"\naccreditation = "SECRET"\npower_cap_mw = 1.0\n'
        '[[regions.pools]]\nname = "p"\ncount = 0\ncpus = 1\nmemory_mb = 1\nidle_w = 1\npeak_w = 2\n'
    )
    with pytest.raises(InvalidInput) as caught:
        parse_fleet(text, "fleet.toml")
    message = caught.value.detail
    assert message.startswith("fleet.toml: 3 problems: ") and "\n" not in message
    for where in ("regions.0.power_cap_mw", "regions.1.name", "regions.1.pools.0.count"):
        assert where in message, message
    # Checks beyond the schema too: an unknown accreditation and a bad pattern, together.
    semantic = MINIMAL.replace('accreditation = "SECRET"', 'accreditation = "SEKRET"') + (
        '\n[[guard.patterns]]\npattern = "(unclosed"\nmarking = "SECRET"\n'
    )
    with pytest.raises(InvalidInput) as caught:
        parse_fleet(semantic, "fleet.toml")
    assert "accreditation" in caught.value.detail and "guard.patterns.0.pattern" in caught.value.detail
