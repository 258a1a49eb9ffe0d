"""The README, run as a test: its shell blocks, in order, against a real `enclave up`.

`test_readme_walkthrough` reads README.md, takes every fenced ```bash / ```sh / ```shell block
in order and runs it for real, in a temporary ENCLAVE_HOME and a working directory of its own
that looks like the checkout (the repository's top-level entries linked in, `../shared` beside
it), against `enclave up` started by the test on a free port (`ENCLAVE_URL`; no
`ENCLAVE_TOKEN`, so the CLI falls back to the bootstrap admin's token as the README says).
So the README cannot drift from what the commands do.

- Every block runs unless the line just before it is a marker:
  ``<!-- walkthrough: skip — REASON -->`` (not run; REASON is required and is shown in the
  test summary as a skipped test) or ``<!-- walkthrough: setup -->`` (the install and
  `enclave up` step, which the test performs itself; such a block must contain `enclave up`).
- Each block runs under `bash -euo pipefail`, one command at a time in the shell's own process
  (so variables, `cd` and files carry on), and the shell's new variables and working directory
  carry into the next block like one user's shell session. The test restarts `enclave up`
  before a block when a README command stopped it (`enclave down`): each section of the
  README is written for a running control plane.
- Every command must exit 0, unless the README shows its output as ``# → error: …`` (then it
  must fail, printing that). A trailing ``# → TEXT`` comment is what the command prints: its
  output (stdout and stderr, whitespace collapsed) must contain TEXT's pieces between ``…``,
  in order. Other comments are prose.
- A failure names the README line and the command, with the command's output.

Python blocks (the OpenAI client) are not run here; tests/gateway covers the gateway's API.
`test_security_beyond_the_readme` keeps the checks the README does not show.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CLI, Server, free_port

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SHELL = {"bash", "sh", "shell"}
UNPARSED_SHELL = {"console", "shell-session", "zsh", "terminal"}  # shell we would silently not run
MARKER = re.compile(r"<!--\s*walkthrough:\s*(?P<kind>\S+?)\s*(?:[—–:-]+\s*(?P<reason>.*?))?\s*-->")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
EXPECT = re.compile(r"\s#\s*→\s*(?P<text>.*?)\s*$")
BLOCK_TIMEOUT_S = 240


@dataclass(frozen=True)
class Command:
    line: int  # README line of its first line
    text: str
    expect: str | None  # what `# → …` says it prints

    @property
    def fails(self) -> bool:
        return self.expect is not None and self.expect.startswith("error:")


@dataclass(frozen=True)
class Block:
    line: int  # README line of the opening fence
    lang: str
    marker: str | None  # None (run), "skip" or "setup"
    reason: str
    commands: tuple[Command, ...]


def is_complete(text: str) -> bool:
    """Whether bash parses ``text`` as whole commands (not an open quote, `\\`, `if` ...)."""
    return subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True).returncode == 0


def split_commands(lines: list[tuple[int, str]]) -> tuple[Command, ...]:
    """A block's commands: comment-only and blank lines dropped, continued lines joined."""
    commands: list[Command] = []
    start, text = 0, ""
    for number, line in lines:
        if not text and (not line.strip() or line.lstrip().startswith("#")):
            continue
        start, text = start if text else number, f"{text}{line}\n"
        if line.rstrip().endswith("\\") or not is_complete(text):
            continue
        found = EXPECT.search(line)
        commands.append(Command(start, text.rstrip("\n"), found["text"] if found else None))
        text = ""
    if text:
        raise AssertionError(f"README.md:{start}: not a whole bash command: {text.strip()}")
    return tuple(commands)


def readme_blocks(text: str) -> list[Block]:
    """The README's shell blocks, in order, each with the walkthrough marker just before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    marker: tuple[int, str, str] | None = None
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        fence = FENCE.match(line)
        if line.lstrip().startswith("<!--") and "walkthrough" in line:
            found = MARKER.search(line)
            assert found, f"README.md:{number}: unreadable walkthrough marker: {line.strip()}"
            kind, reason = found["kind"], (found["reason"] or "").strip()
            assert kind in ("skip", "setup"), f"README.md:{number}: unknown walkthrough marker {kind!r}"
            assert kind != "skip" or reason, f"README.md:{number}: a skipped block needs a reason"
            assert marker is None, f"README.md:{marker[0] if marker else 0}: marker before no block"
            marker = (number, kind, reason)
        elif line.strip() and not fence and marker is not None:
            raise AssertionError(f"README.md:{marker[0]}: marker not just before a code block")
        if not fence:
            i += 1
            continue
        close = fence["fence"]
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not lines[i].startswith(close):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1  # the closing fence
        lang = fence["lang"].lower()
        assert lang not in UNPARSED_SHELL, f"README.md:{number}: use ```bash with `# →` for output"
        if lang in SHELL:
            kind, reason = (marker[1], marker[2]) if marker else (None, "")
            block = Block(number, lang, kind, reason, split_commands(body))
            if kind == "setup":
                assert any("enclave up" in c.text for c in block.commands), (
                    f"README.md:{number}: a setup block is the `enclave up` the test does itself"
                )
            blocks.append(block)
        else:
            assert marker is None, f"README.md:{marker[0] if marker else 0}: marker on a ```{lang} block"
        marker = None
    assert marker is None, f"README.md:{marker[0]}: marker before no block"
    return blocks


def skipped_blocks() -> list[Block]:
    try:
        return [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.marker == "skip"]
    except AssertionError:
        return []  # test_readme_walkthrough reports it


# -- matching what the README shows -----------------------------------------------------------
def squash(text: str) -> str:
    return " ".join(text.split())


def shows(output: str, expect: str) -> bool:
    """Whether ``output`` holds the pieces of ``expect`` between ``…``, in order."""
    out, pos = squash(output), 0
    for piece in filter(None, (squash(p) for p in re.split(r"…|\.\.\.", expect))):
        found = out.find(piece, pos)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


# -- running a block --------------------------------------------------------------------------
PRELUDE = r"""
__walk_line=0
__walk_vars0=" $(compgen -v | tr '\n' ' ') "
__walk_exit() {
  local __walk_rc=$? __walk_v __walk_d
  [ -e "$__walk_dir/$__walk_line.rc" ] || echo "$__walk_rc" >"$__walk_dir/$__walk_line.rc"
  {  # the session's own variables (not read-only ones) and functions, and where it is
    for __walk_v in $(compgen -v); do
      case "$__walk_vars0 FUNCNAME " in *" $__walk_v "*) continue ;; esac
      [[ $__walk_v != __walk* ]] || continue
      __walk_d=$(declare -p "$__walk_v") && __walk_d=${__walk_d#declare -}
      [[ ${__walk_d%% *} == *r* ]] || declare -p "$__walk_v"
    done
    for __walk_v in $(compgen -A function); do [[ $__walk_v == __walk* ]] || declare -f "$__walk_v"; done
    printf 'cd -- %q\n' "$PWD"
  } >"$__walk_state" 2>/dev/null || true
}
trap __walk_exit EXIT
if [ -e "$__walk_state" ]; then source "$__walk_state"; fi
"""


def block_script(block: Block, state: Path, out: Path) -> str:
    parts = [f"__walk_dir={shlex.quote(str(out))}\n__walk_state={shlex.quote(str(state))}", PRELUDE]
    for c in block.commands:
        files = f'>"$__walk_dir/{c.line}.out" 2>&1 </dev/null'
        parts.append(f"# README.md:{c.line}\n__walk_line={c.line}")
        if c.fails:  # the README shows it failing: run it as a condition, then record its status
            parts.append(f"if {{ {c.text}\n}} {files}; then __walk_rc=0; else __walk_rc=$?; fi")
            parts.append(f'echo "$__walk_rc" >"$__walk_dir/{c.line}.rc"')
        else:  # errexit ends the shell at the first failure; the EXIT trap records its status
            parts.append(f"{{ {c.text}\n}} {files}")
            parts.append(f'echo 0 >"$__walk_dir/{c.line}.rc"')
    return "\n".join(parts) + "\n"


def tail(text: str, n: int = 3000) -> str:
    return text if len(text) <= n else "…" + text[-n:]


def run_block(block: Block, cwd: Path, env: dict[str, str], state: Path, out: Path) -> None:
    """Run one block under `bash -euo pipefail`; fail naming the README line and command."""
    out.mkdir()
    script = out / "block.sh"
    script.write_text(block_script(block, state, out))
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", str(script)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a timeout ends the whole block, the CLIs it started included
    )
    try:
        shell_out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        shell_out, _ = proc.communicate()
        running = next((c for c in block.commands if not (out / f"{c.line}.rc").exists()), None)
        where = f"README.md:{running.line}: `{running.text}`" if running else f"README.md:{block.line}"
        raise AssertionError(f"{where} still running after {BLOCK_TIMEOUT_S} s") from None
    for c in block.commands:
        rc_file = out / f"{c.line}.rc"
        if not rc_file.exists():
            break
        rc = int(rc_file.read_text())
        printed = (out / f"{c.line}.out").read_text(errors="replace")
        where = f"README.md:{c.line}: `{c.text}`"
        if c.fails and rc == 0:
            raise AssertionError(f"{where} succeeded; the README shows it failing:\n{tail(printed)}")
        if not c.fails and rc != 0:
            raise AssertionError(f"{where} exited {rc}:\n{tail(printed)}")
        if c.expect is not None and not shows(printed, c.expect):
            raise AssertionError(f"{where} printed\n{tail(printed)}\nbut the README shows: {c.expect}")
    if proc.returncode != 0:
        raise AssertionError(
            f"README.md:{block.line}: the block's shell exited {proc.returncode}:\n{shell_out}"
        )


def checkout_like(tmp_path: Path) -> Path:
    """A working directory that looks like the checkout (`examples/`, `scripts/`, `../shared`
    ...) but where the README's commands write their files into the test's own folder."""
    work = tmp_path / "work" / "enclave"
    work.mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name != ".git":
            (work / entry.name).symlink_to(entry)
    shared = REPO.parent / "shared"
    if shared.exists():
        (work.parent / "shared").symlink_to(shared)
    return work


@pytest.fixture
def server(live_server: Callable[..., Server], tmp_path: Path) -> Server:
    return live_server(tmp_path / "enclave-home")


@pytest.mark.parametrize("block", skipped_blocks(), ids=lambda b: f"README.md:{b.line}")
def test_readme_block_not_run(block: Block) -> None:
    """One skipped test per README block marked skip, so that the reasons show in the summary."""
    pytest.skip(f"README.md:{block.line}: {block.reason}")


def test_readme_walkthrough(server: Server, tmp_path: Path) -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert any(b.marker == "setup" for b in blocks), "README.md: no block marked <!-- walkthrough: setup -->"
    run = [b for b in blocks if b.marker is None]
    assert len(run) >= 3, f"only {len(run)} README blocks left to run"
    work = checkout_like(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
    # `enclave` and `python` are those of the interpreter the project is installed in.
    bins = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    env |= {
        "PATH": os.pathsep.join([*dict.fromkeys(bins), env.get("PATH", "")]),
        "ENCLAVE_HOME": str(server.home),
        "ENCLAVE_URL": server.url,
    }
    state = tmp_path / "walk-state.sh"
    for block in run:
        if server.proc is None or server.proc.poll() is not None:  # a README `enclave down`
            server.stop()
            server.start()
        run_block(block, work, env, state, tmp_path / f"walk-{block.line}")


def test_walkthrough_reads_markers_and_expectations(tmp_path: Path) -> None:
    """The harness itself, on a made-up README: markers, joined lines, `# →`, failures named."""
    blocks = readme_blocks(
        "<!-- walkthrough: skip — needs a GPU -->\n```bash\nnvidia-smi\n```\n\n"
        "```python\nprint(1)\n```\n"
        "```sh\n# prose\nX=$(echo two \\\n  words)   # → ignored: an assignment prints nothing\n"
        'cd sub   # prose\necho "$X"   # → two … words\n```\n'
    )
    assert [(b.line, b.marker, b.reason) for b in blocks] == [(2, "skip", "needs a GPU"), (9, None, "")]
    assert [(c.line, c.expect) for c in blocks[1].commands] == [
        (11, "ignored: an assignment prints nothing"),
        (13, None),
        (14, "two … words"),
    ]
    for bad, why in [
        ("<!-- walkthrough: skip -->\n```bash\nx\n```\n", "needs a reason"),
        ("<!-- walkthrough: setup -->\n```bash\nx\n```\n", "enclave up"),
        ("<!-- walkthrough: skip — x -->\ntext\n```bash\nx\n```\n", "not just before"),
        ("<!-- walkthrough: skip — x -->\n```python\nx\n```\n", "marker on"),
        ("<!-- walkthrough: skipped — x -->\n```bash\nx\n```\n", "unknown"),
        ("```console\n$ enclave up\n```\n", "use ```bash"),
        ("```bash\necho 'open\n```\n", "README.md:2: not a whole bash command"),
    ]:
        with pytest.raises(AssertionError, match=re.escape(why)):
            readme_blocks(bad)
    assert shows("a  b\nc d", "b … d") and not shows("a b c d", "d … b") and not shows("x", "y")

    (tmp_path / "sub").mkdir()
    env, state = dict(os.environ), tmp_path / "state.sh"
    first = readme_blocks("```bash\nY=1; mkdir -p sub\ncd sub\n```\n")[0]
    run_block(first, tmp_path, env, state, tmp_path / "b1")
    carried = readme_blocks('```bash\n\necho "$Y in ${PWD##*/}"   # → 1 in sub\n```\n')[0]
    run_block(carried, tmp_path, env, state, tmp_path / "b2")
    for text, why in [
        ("true\nfalse   # stops here\necho never", "README.md:3: `false   # stops here` exited 1"),
        ("echo $NOT_SET_ANYWHERE", "README.md:2: `echo $NOT_SET_ANYWHERE` exited 1"),
        ("echo fine   # → error: it fails", "README.md:2: `echo fine   # → error: it fails` succeeded"),
        ("echo one   # → two", "README.md:2: `echo one   # → two` printed\none\n\nbut the README shows: two"),
    ]:
        block = readme_blocks(f"```bash\n{text}\n```\n")[0]
        with pytest.raises(AssertionError, match=re.escape(why)):
            run_block(block, tmp_path, env, state, tmp_path / f"b{len(list(tmp_path.iterdir()))}")


# -- what the README does not show ------------------------------------------------------------
def test_security_beyond_the_readme(server: Server, tmp_path: Path) -> None:
    """The walkthrough's story, with the checks the README does not show: the admin token's
    file mode, invisible exactly like missing, the requester never approving, the released copy
    readable below, a clearance raise needing a second admin, and a refusal's exit contract."""
    assert (server.home / "admin.token").stat().st_mode & 0o077 == 0
    server.run("admin", "agency", "create", "nasa")
    server.run("admin", "user", "create", "alice", "--agency", "nasa", "--clearance", "SECRET")
    for name in ("rob", "rita"):
        server.run(
            "admin",
            "user",
            "create",
            name,
            "--agency",
            "nasa",
            "--clearance",
            "TOP SECRET",
            "--role",
            "release-authority",
        )
    secret = server.run("admin", "token", "create", "--user", "alice", "--label", "SECRET").stdout.strip()
    low = server.run("admin", "token", "create", "--user", "alice", "--label", "UNCLASSIFIED").stdout.strip()
    assert secret.startswith("enc_") and "\n" not in secret

    clean = tmp_path / "forecast.txt"
    clean.write_text("wind tunnel results, no markings\n")
    art = server.run("artifact", "put", str(clean), token=secret).stdout.strip()

    # Invisible, not forbidden: the same one-line error as an id that never existed.
    hidden = server.run("artifact", "get", art, token=low, check=False)
    nobody = "00000000-0000-0000-0000-000000000000"
    missing = server.run("artifact", "get", nobody, token=low, check=False)
    assert hidden.returncode != 0 and missing.returncode != 0
    assert hidden.stderr.strip().replace(art, "ID") == missing.stderr.strip().replace(nobody, "ID")
    assert len(hidden.stderr.strip().splitlines()) == 1
    assert json.loads(server.run("artifact", "list", "--json", token=low).stdout) == []
    listed = json.loads(server.run("artifact", "list", "--json", token=secret).stdout)
    assert [a["id"] for a in listed] == [art]

    # The requester never approves her own downgrade; the released copy is readable below.
    transfer = server.run(
        "transfer", "request", art, "--to", "UNCLASSIFIED", "--why", "public release", token=secret
    ).stdout.strip()
    rob = server.run("admin", "token", "create", "--user", "rob", "--label", "SECRET").stdout.strip()
    rita = server.run("admin", "token", "create", "--user", "rita", "--label", "SECRET").stdout.strip()
    assert server.run("transfer", "approve", transfer, token=secret, check=False).returncode != 0
    assert server.run("transfer", "approve", transfer, token=rob).stdout.strip() == "pending"
    assert server.run("transfer", "approve", transfer, token=rita).stdout.strip() == "released"
    shown = json.loads(server.run("transfer", "show", transfer, "--json", token=secret).stdout)
    out = tmp_path / "released.txt"
    server.run("artifact", "get", shown["released_artifact_id"], "-o", str(out), token=low)
    assert out.read_text() == clean.read_text()

    # A raise is a request that a second admin (here nasa's own, ada) approves.
    asked = server.run("admin", "user", "clearance", "alice", "TOP SECRET//SI").stdout.split()
    assert asked[1] == "pending"
    server.run(
        "admin",
        "user",
        "create",
        "ada",
        "--agency",
        "nasa",
        "--clearance",
        "TOP SECRET//SI",
        "--role",
        "admin",
    )
    ada = server.run("admin", "token", "create", "--user", "ada", "--label", "UNCLASSIFIED").stdout.strip()
    server.run("admin", "user", "approve-clearance", asked[0], token=ada)
    ts = server.run("admin", "token", "create", "--user", "alice", "--label", "TOP SECRET//SI").stdout.strip()
    dirty = tmp_path / "brief.txt"
    dirty.write_text("TOP SECRET//SI\nsource details\n")
    dirty_id = server.run("artifact", "put", str(dirty), token=ts).stdout.strip()
    refused = server.run(
        "transfer", "request", dirty_id, "--to", "SECRET", "--why", "share", token=ts, check=False
    )
    # Refused by the scan at once: the id on stdout, the reason on stderr, exit 1.
    assert refused.returncode == 1 and "refused" in refused.stderr and "TOP SECRET//SI" in refused.stderr
    view = json.loads(server.run("transfer", "show", refused.stdout.strip(), "--json", token=ts).stdout)
    assert view["state"] == "refused" and "TOP SECRET//SI" in view["reason"]


def test_cli_errors_are_one_line(server: Server, tmp_path: Path) -> None:
    bad_label = server.run("admin", "token", "create", "--user", "admin", "--label", "ULTRA", check=False)
    assert bad_label.returncode == 1
    assert bad_label.stderr.startswith("error: ") and len(bad_label.stderr.strip().splitlines()) == 1
    no_file = server.run("artifact", "put", str(tmp_path / "nope"), check=False)
    assert no_file.returncode == 1 and "no such file" in no_file.stderr
    bad_token = server.run("whoami", token="enc_forged", check=False)
    assert bad_token.returncode == 1 and "invalid or expired token" in bad_token.stderr


def test_password_login_saves_session(server: Server) -> None:
    server.run("admin", "agency", "create", "doe")
    server.run(
        "admin",
        "user",
        "create",
        "dana",
        "--agency",
        "doe",
        "--clearance",
        "CUI",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    logged = server.run(
        "login", "--user", "dana", "--label", "CUI", "--password-stdin", stdin="correct horse battery\n"
    )
    assert "logged in as dana at CUI" in logged.stdout
    assert (server.home / "session.token").stat().st_mode & 0o077 == 0
    me = json.loads(server.run("whoami", "--json").stdout)
    assert (me["user"], me["label"]) == ("dana", "CUI")
    wrong = server.run(
        "login",
        "--user",
        "dana",
        "--label",
        "CUI",
        "--password-stdin",
        stdin="wrong password!!\n",
        check=False,
    )
    assert wrong.returncode == 1 and "wrong user name or password" in wrong.stderr
    server.run("logout")
    assert json.loads(server.run("whoami", "--json").stdout)["user"] == "admin"


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ENCLAVE_HOME": str(tmp_path),
        "ENCLAVE_URL": f"http://127.0.0.1:{free_port()}",
        "ENCLAVE_TOKEN": "enc_x",
    }
    proc = subprocess.run([*CLI, "artifact", "list"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and proc.stderr.startswith("error: cannot reach Enclave")
