"""CLI start-up: wall time of one `enclave` call, next to Slurm's `squeue` and `sinfo`.

    python benchmarks/bench_cli.py                       # this checkout
    python benchmarks/bench_cli.py --before 93215a2      # and an older commit, same run

A fresh `enclave up` (fleet `local`) on loopback with one completed job; each command runs as
a user runs it, a new process of the `enclave` console script with its output to /dev/null,
`--runs` times (default 20), the commands taking turns so that a burst of load on this shared
machine hits them all alike; the median and the 90th percentile are reported. `--before REV`
extracts REV's `src/` (git archive) to a temporary folder and runs the same script with
PYTHONPATH pointing there, so both versions are measured in the same run. `python -c pass`
is the interpreter's own floor on this machine (its site-packages `.pth` files included);
`python -S -c pass` the same without `site` (no `.pth` file, no site-packages).

`--bytecode` also measures this checkout's `src/` copied to a temporary folder and compiled
(`compileall`), as `pip install` leaves an installed package: where PYTHONDONTWRITEBYTECODE is
set (this sandbox sets it), the checkout's own modules are compiled from source on every call.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, enclave_up, git_state, machine, median, percentile, print_table

SCRIPT = Path(sys.executable).with_name("enclave")


@contextmanager
def compiled() -> Iterator[Path]:
    """This checkout's src/ in a temporary folder, compiled to bytecode."""
    tmp = Path(tempfile.mkdtemp(prefix="enclave-cli-compiled-"))
    try:
        shutil.copytree(REPO / "src", tmp / "src", ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tmp / "src")], check=True)
        yield tmp / "src"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """REV's src/ in a temporary folder (the repository is not touched)."""
    tmp = Path(tempfile.mkdtemp(prefix="enclave-cli-before-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", rev, "src"], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield tmp / "src"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return (time.perf_counter() - t0) * 1000, rc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--before", help="also measure this older commit (its src/) in the same run")
    parser.add_argument("--bytecode", action="store_true", help="also measure this checkout compiled")
    args = parser.parse_args()
    print(machine(), "|", git_state())
    with enclave_up() as server, server.client() as http:
        job = http.post("/v1/jobs", json={"name": "true", "command": ["true"], "label": "UNCLASSIFIED"})
        job.raise_for_status()
        job_id = job.json()["id"]
        while http.get(f"/v1/jobs/{job_id}").json()["state"] not in {"completed", "failed"}:
            time.sleep(0.1)
        base = {**os.environ, "ENCLAVE_URL": server.url, "ENCLAVE_TOKEN": server.token, "COLUMNS": "120"}
        base.pop("PYTHONPATH", None)
        commands = {
            "enclave --help": ["--help"],
            "enclave --version": ["--version"],
            "enclave job --help": ["job", "--help"],
            "enclave job list": ["job", "list"],
            "enclave job show ID": ["job", "show", job_id],
            "enclave regions": ["regions"],
        }
        with (
            checkout(args.before) if args.before else nullcontext() as old,
            compiled() if args.bytecode else nullcontext() as built,
        ):
            sides = {"now": base}
            if built is not None:
                sides["now, compiled"] = {**base, "PYTHONPATH": str(built)}
            if old is not None:
                sides[f"at {args.before}"] = {**base, "PYTHONPATH": str(old)}
            cases: dict[str, tuple[list[str], dict[str, str]]] = {}
            for side, env in sides.items():
                for name, argv in commands.items():
                    cases[f"{name} ({side})"] = ([str(SCRIPT), *argv], env)
            cases["python -c pass"] = ([sys.executable, "-c", "pass"], base)
            cases["python -S -c pass"] = ([sys.executable, "-S", "-c", "pass"], base)
            cases["squeue"] = (["squeue"], base)
            cases["sinfo"] = (["sinfo"], base)
            times: dict[str, list[float]] = {name: [] for name in cases}
            codes: dict[str, set[int]] = {name: set() for name in cases}
            for _ in range(args.runs):
                for name, (cmd, env) in cases.items():
                    ms, rc = timed(cmd, env)
                    times[name].append(ms)
                    codes[name].add(rc)
    rows = [
        [name, f"{median(ms):.0f}", f"{percentile(ms, 90):.0f}", ",".join(map(str, sorted(codes[name])))]
        for name, ms in times.items()
    ]
    print_table(
        f"CLI start-up, {args.runs} runs each (ms, wall, new process)",
        ["command", "median", "p90", "exit"],
        rows,
    )


if __name__ == "__main__":
    main()
