"""SWF reader: every field kind, -1 fields, requested vs actual run time, cancelled jobs,
agencies from user/group ids, header MaxProcs/MaxNodes, .swf.gz, and malformed lines."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.errors import InvalidInput
from enclave.labels import DEFAULT_SCHEME
from enclave.scheduler.policies import make_policy
from enclave.sim import swf
from enclave.sim.engine import simulate
from enclave.sim.metrics import summarize
from enclave.sim.swf import FIELDS, load_swf, read_table
from enclave.sim.workloads import load_workload, trace_fleet, workload_and_fleet

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"
BOTTOM = DEFAULT_SCHEME.bottom


def swf_line(
    job: int = 1,
    submit: float = 0,
    wait: float = -1,
    run: float = 100,
    alloc: int = 4,
    cpu: float = -1,
    mem: float = -1,
    req_procs: int = 4,
    req_time: float = 200,
    req_mem: float = -1,
    status: int = 1,
    user: int = 7,
    group: int = 3,
    exe: int = -1,
    queue: int = -1,
    partition: int = -1,
    preceding: int = -1,
    think: float = -1,
) -> str:
    fields = (job, submit, wait, run, alloc, cpu, mem, req_procs, req_time, req_mem, status, user, group,
              exe, queue, partition, preceding, think)  # fmt: skip
    return " ".join(str(f) for f in fields)


HEADER = "; Version: 2.2\n; Computer: test machine\n; MaxNodes: 16\n; MaxProcs: 64\n;\n"


def write(tmp_path: Path, lines: list[str], header: str = HEADER, name: str = "t.swf") -> Path:
    path = tmp_path / name
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def test_every_field_kind(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            swf_line(
                job=11, submit=1000, wait=5, run=100, alloc=4, req_procs=8, req_time=300, user=7, group=3
            ),
            swf_line(job=12, submit=1010.5, run=50, alloc=2, req_procs=-1, req_time=-1, user=8, group=-1),
            swf_line(job=13, submit=1020, run=900, alloc=1, req_procs=1, req_time=600),  # ran past its limit
        ],
    )
    header, table = read_table(path)
    assert header["MaxProcs"] == "64" and header["Computer"] == "test machine"
    assert table.shape == (3, 18)
    wl = load_swf(path, BOTTOM)
    a, b, c = (s.job for s in wl.jobs)
    # ids, submission times relative to the first job, processors as single-core nodes
    assert [a.id, b.id, c.id] == ["11", "12", "13"]
    assert [a.submit_s, b.submit_s, c.submit_s] == [0.0, 10.5, 20.0]
    assert a.nodes == 8  # requested processors first
    assert b.nodes == 2  # -1 requested: the allocated count
    assert (a.cpus, a.gpus, a.memory_mb) == (1, 0, 1)
    # requested time is the estimate; -1 falls back to the actual run time
    assert a.walltime_s == 300 and wl.jobs[0].run_s == 100
    assert b.walltime_s == 50 and wl.jobs[1].run_s == 50
    # a job is killed at its limit: the run is capped at the estimate
    assert c.walltime_s == 600 and wl.jobs[2].run_s == 600
    assert a.agency == "group-3"
    assert [s.job.seq for s in wl.jobs] == [0, 1, 2]
    assert wl.skipped == {}
    assert wl.max_procs == 64


def test_user_ids_as_agencies(tmp_path: Path) -> None:
    path = write(tmp_path, [swf_line(job=1, user=7, group=3), swf_line(job=2, user=9, group=3)])
    wl = load_swf(path, BOTTOM, agency_by="user")
    assert [s.job.agency for s in wl.jobs] == ["user-7", "user-9"]


def test_jobs_sorted_by_submission(tmp_path: Path) -> None:
    path = write(
        tmp_path, [swf_line(job=1, submit=50), swf_line(job=2, submit=10), swf_line(job=3, submit=50)]
    )
    wl = load_swf(path, BOTTOM)
    assert [s.job.id for s in wl.jobs] == ["2", "1", "3"]
    times = [s.job.submit_s for s in wl.jobs]
    assert [t - times[0] for t in times] == [0.0, 40.0, 40.0]


def test_out_of_order_trace_starts_at_zero(tmp_path: Path) -> None:
    path = write(tmp_path, [swf_line(job=1, submit=50), swf_line(job=2, submit=10)])
    assert [s.job.submit_s for s in load_swf(path, BOTTOM).jobs] == [0.0, 40.0]


def test_unreplayable_jobs_are_counted_never_dropped_silently(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            swf_line(job=1),
            swf_line(job=2, alloc=-1, req_procs=-1),  # no processor count
            swf_line(job=3, run=-1),  # no run time
            swf_line(job=4, run=0, status=5),  # cancelled before it ran
            swf_line(job=5, run=30, status=5),  # cancelled after running 30 s: replayed
            swf_line(job=6, run=0, status=1),  # completed in no time: replayed
        ],
    )
    wl = load_swf(path, BOTTOM)
    assert [s.job.id for s in wl.jobs] == ["1", "5", "6"]
    assert wl.skipped == {"no processor count": 1, "no run time": 1, "cancelled before it ran": 1}
    assert len(wl.jobs) + sum(wl.skipped.values()) == 6
    assert wl.jobs[2].run_s == 0 and wl.jobs[2].job.walltime_s >= 1  # a zero estimate becomes 1 s


def test_max_nodes_when_no_max_procs(tmp_path: Path) -> None:
    path = write(tmp_path, [swf_line()], header="; MaxNodes: 16\n")
    assert load_swf(path, BOTTOM).max_procs == 16
    path = write(tmp_path, [swf_line()], header="; MaxProcs: -1\n; MaxNodes: 32\n")
    assert load_swf(path, BOTTOM).max_procs == 32


def test_trace_fleet_from_header_and_error_without(tmp_path: Path) -> None:
    wl = load_swf(write(tmp_path, [swf_line()]), BOTTOM)
    fleet = trace_fleet(wl)
    assert sum(r.cpus for r in fleet.regions) == 64
    bare = load_swf(write(tmp_path, [swf_line()], header="; Computer: x\n", name="bare.swf"), BOTTOM)
    assert bare.max_procs is None
    with pytest.raises(InvalidInput, match="MaxProcs"):
        trace_fleet(bare)


def test_gzip_reads_like_plain(tmp_path: Path) -> None:
    plain = write(tmp_path, [swf_line(job=1), swf_line(job=2, submit=5)])
    gz = tmp_path / "t.swf.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert load_swf(gz, BOTTOM).jobs == load_swf(plain, BOTTOM).jobs
    assert load_workload(gz, DEFAULT_SCHEME).jobs == load_swf(plain, BOTTOM).jobs


def test_corrupt_gzip_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.swf.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_swf(bad, BOTTOM)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("1 0 -1 100 4", r"t\.swf:8: expected 18 fields, found 5"),
        (swf_line() + " 99", r"t\.swf:8: expected 18 fields, found 19"),
        (swf_line().replace(" 200 ", " 2x0 ", 1), r"t\.swf:8: not a number"),
        (swf_line().replace("-1", "n/a", 1), r"t\.swf:8: not a number"),
    ],
)
def test_malformed_line_is_an_error_naming_the_line(tmp_path: Path, bad: str, message: str) -> None:
    # five header lines, then line 6 and 7 good, line 8 bad, line 9 good
    path = write(tmp_path, [swf_line(job=1), swf_line(job=2), bad, swf_line(job=4)])
    with pytest.raises(InvalidInput, match=message):
        load_swf(path, BOTTOM)


def test_comments_after_data_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, [swf_line(job=1), "", "; a late comment: ignored", swf_line(job=2)])
    header, _ = read_table(path)
    assert "a late comment" not in header
    assert [s.job.id for s in load_swf(path, BOTTOM).jobs] == ["1", "2"]


def test_empty_trace(tmp_path: Path) -> None:
    wl = load_swf(write(tmp_path, []), BOTTOM)
    assert wl.jobs == [] and wl.max_procs == 64


def test_real_kth_trace() -> None:
    path = TRACES / "KTH-SP2-1996-2.1.swf"
    wl, fleet = workload_and_fleet(path)
    assert len(wl.jobs) + sum(wl.skipped.values()) == 28489
    assert wl.max_procs == 100 and fleet.name == "trace"
    assert all(s.run_s <= s.job.walltime_s for s in wl.jobs)
    first = wl.jobs[0].job
    assert (first.id, first.nodes, first.walltime_s, wl.jobs[0].run_s) == ("1", 56, 210000.0, 97225.0)


def test_real_nasa_gz_trace() -> None:
    wl = load_workload(TRACES / "NASA-iPSC-1993-3.1-cln.swf.gz", DEFAULT_SCHEME)
    assert len(wl.jobs) + sum(wl.skipped.values()) == 18239
    assert wl.max_procs == 128
    # no requested times in this trace: the estimate is the run time
    assert all(s.job.walltime_s == max(s.run_s, 1.0) for s in wl.jobs)


def test_small_trace_through_the_simulator(tmp_path: Path) -> None:
    lines = [
        swf_line(job=k, submit=10 * k, run=100 + k, alloc=16, req_procs=16, req_time=300)
        for k in range(1, 41)
    ]
    wl = load_swf(write(tmp_path, lines), BOTTOM)
    fleet = trace_fleet(wl)
    outcome = simulate(fleet, wl.jobs, make_policy("easy"))
    summary = summarize(fleet, outcome)
    assert summary["jobs"] == 40 and summary["power_cap_violations"] == 0
    # 64 processors, 16 per job: never more than 4 at once
    events = sorted([(r.start_s, 1) for r in outcome.runs] + [(r.end_s, -1) for r in outcome.runs])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak <= 4


def test_unknown_owner_is_its_own_agency(tmp_path: Path) -> None:
    path = tmp_path / "t.swf"
    path.write_text("1 0 0 10 1 -1 -1 1 20 -1 1 -1 -1 -1 -1 -1 -1 -1\n")
    [job] = load_swf(path, DEFAULT_SCHEME.bottom).jobs
    assert job.job.agency == "unknown"


@st.composite
def swf_texts(draw: st.DrawFn) -> str:
    """Traces as the archive writes them, and with the variations the column-wise reader hands
    over to the general one: fractions, comments among the data, short lines, CR line ends."""
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    sep = st.sampled_from([" ", "  ", "\t", " \t "])
    value = st.one_of(
        st.integers(-1, 1000),
        st.integers(-(10**15), 10**15),
        st.just(-1),
        st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 2)),
    )
    lines = [f"; {key}: {val}" for key, val in draw(st.lists(st.tuples(st.sampled_from(["MaxProcs", "Note", "x"]), st.integers(0, 99)), max_size=3))]  # fmt: skip
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["row", "row", "row", "blank", "comment", "short"]))
        if kind == "blank":
            lines.append(draw(st.sampled_from(["", "  ", "\t"])))
        elif kind == "comment":
            lines.append("; a note")
        else:
            fields = [
                draw(value) for _ in range(FIELDS if kind == "row" else draw(st.integers(1, FIELDS + 2)))
            ]
            lines.append(draw(sep).join(str(f) for f in fields) + draw(st.sampled_from(["", " "])))
    return eol.join(lines) + draw(st.sampled_from(["", eol]))


@settings(max_examples=300, deadline=None)
@given(swf_texts())
def test_the_column_wise_reader_reads_what_the_general_one_reads(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.swf"
        path.write_bytes(text.encode())
        try:
            want = swf._read_any_table(path, text)
        except InvalidInput as exc:
            with pytest.raises(InvalidInput) as got:
                read_table(path)
            assert str(got.value) == str(exc)
            return
        header, table = read_table(path)
        assert header == want[0]
        assert table.shape == want[1].shape and np.array_equal(table, want[1])
        fast = swf._read_integer_table(text.encode())
        if fast is not None:
            assert fast[0] == want[0] and np.array_equal(fast[1], want[1])
