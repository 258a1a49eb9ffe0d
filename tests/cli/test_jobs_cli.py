"""`enclave job ...` against a real `enclave up` running real processes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Server


def test_submit_watch_logs_show(live_server: Callable[..., Server], tmp_path: Path) -> None:
    server = live_server(tmp_path / "home")
    job = server.run(
        "job",
        "submit",
        "--label",
        "UNCLASSIFIED",
        "--cpus",
        "1",
        "--walltime",
        "30",
        "--",
        "sh",
        "-c",
        "echo hello; echo oops >&2",
    ).stdout.strip()
    watched = server.run("job", "watch", job, "--interval", "0.1")
    assert watched.returncode == 0 and "completed" in watched.stdout
    assert server.run("job", "logs", job).stdout == "hello\n"
    assert server.run("job", "logs", job, "--stderr").stdout == "oops\n"
    shown = json.loads(server.run("job", "show", job, "--json").stdout)
    assert shown["state"] == "completed" and shown["exit_code"] == 0
    assert shown["region"] in {"gov-east", "secret-west", "ts-east"}
    assert shown["energy"]["source"] in {"measured", "modelled"} and shown["energy"]["kwh"] > 0
    listed = json.loads(server.run("job", "list", "--json").stdout)
    assert [j["id"] for j in listed] == [job]


def test_watch_shows_time_run_and_the_last_lines_of_output(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = live_server(tmp_path / "home")
    script = "for i in 1 2 3 4 5; do echo line-$i; done; sleep 1"
    job = server.run("job", "submit", "--walltime", "60", "--", "sh", "-c", script).stdout.strip()
    watched = server.run("job", "watch", job, "--interval", "0.2").stdout
    assert "completed" in watched and ", ran " in watched
    assert "line-5" in watched and "line-3" in watched and "line-2" not in watched  # the last 3 lines
    # The short id a watch shows is accepted wherever an id is.
    short = job[:8]
    assert f"[{short}]" in watched
    assert json.loads(server.run("job", "show", short, "--json").stdout)["id"] == job


def test_failed_job_watch_exits_with_its_code(live_server: Callable[..., Server], tmp_path: Path) -> None:
    server = live_server(tmp_path / "home")
    job = server.run("job", "submit", "--", "sh", "-c", "exit 4").stdout.strip()
    watched = server.run("job", "watch", job, "--interval", "0.1", check=False)
    assert watched.returncode == 4
    assert json.loads(server.run("job", "show", job, "--json").stdout)["reason"] == "exit code 4"


def test_bad_submission_is_one_line(live_server: Callable[..., Server], tmp_path: Path) -> None:
    server = live_server(tmp_path / "home")
    bad = server.run("job", "submit", "--walltime", "0", "--", "true", check=False)
    assert (
        bad.returncode == 1 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    )
    above = server.run("job", "submit", "--label", "SECRET", "--", "true", check=False)
    assert above.returncode == 1 and "session label" in above.stderr
    assert "enclave login --label 'SECRET'" in above.stderr  # ... and what to do about it


def test_logs_of_a_job_that_said_nothing_on_stdout_point_to_stderr(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = live_server(tmp_path / "home")
    job = server.run("job", "submit", "--", "no-such-command-here").stdout.strip()
    assert server.run("job", "watch", job, "--interval", "0.1", check=False).returncode == 127
    logs = server.run("job", "logs", job)
    assert logs.stdout == ""  # stdout stays the job's own
    assert "exit code 127" in logs.stderr and "not found" in logs.stderr and "--stderr" in logs.stderr
    assert "no-such-command-here" in server.run("job", "logs", job, "--stderr").stdout
    quiet = server.run("job", "submit", "--", "true").stdout.strip()
    server.run("job", "watch", quiet, "--interval", "0.1")
    assert server.run("job", "logs", quiet).stderr == ""  # a job that succeeded quietly: no remark
