"""Egress: a confined process reaches only the destinations its region's fleet entry lists.

A region with ``backend.network = "allow"`` gives its jobs and replicas no network of their
own (their network namespace holds only a loopback) but an HTTP proxy at
``127.0.0.1:3128`` inside the sandbox, in ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``.
Behind that port is a relay outside the sandbox (root, in the host's network namespace, out of
the job's sight and reach) that checks every request against the region's ``network_allow``
list before it connects anywhere.

The relay (``python -I -S egress.py relay --allow RULE... -- bwrap ...``) is started in place
of bubblewrap. It leaves a process of its own behind and becomes bubblewrap, with
``--info-fd`` (bubblewrap reports the sandbox's init) and ``--block-fd`` (the sandbox waits).
The process left behind enters the sandbox's network namespace just long enough to open a
listening socket on the proxy port there, steps back into its own, lets the sandbox start and
serves that socket until bubblewrap ends. So the executors keep treating the pid they started
as bubblewrap's (whose only child is the sandbox's init), and the job's first connection
always finds the port listening.

The relay speaks HTTP/1.1 proxy: ``CONNECT host:port`` (HTTPS, or any TCP protocol a client
tunnels) and absolute-form plain HTTP requests (forwarded with ``Connection: close``).
What is refused gets ``403`` and a line on the job's stderr naming the destination.

**Rules** (``HOST:PORT``): a DNS name (``pypi.org:443``), a wildcard for names below a domain
(``*.example.org:443``; not the domain itself), an address (``10.0.0.5:8000``,
``[fd00::5]:443``) or a network (``10.1.0.0/16:8000``). A name a rule lists is resolved by the
relay and connected to at an address it resolved to — never a loopback, link-local (cloud
metadata), multicast or unspecified address, which only an address or network rule that
contains it reaches; a name no rule lists is allowed where it resolves into a listed network
(and connected to at that address). Clients that cannot use a proxy get no network at all:
fail closed.

Standard library only: the relay runs as root, so it is started as a file with
``python -I -S`` (no ``PYTHON*`` variables, no site-packages, no current directory on the
path), wherever the ``enclave`` package lies on an engine's node.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 - loaded while root: the relay serves as a uid that may not read the installation
import ipaddress
import os
import re
import select
import socket
import sys
import threading
from typing import NamedTuple

PROXY_PORT = 3128
CLONE_NEWNET = 0x40000000
CHILD_PID = re.compile(rb'"child-pid":\s*(\d+)')
# What a confined process is told: every proxy variable clients read, upper and lower case.
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
PROXY_ENV = {
    **{name: PROXY_URL for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
    **{name: PROXY_URL for name in ("http_proxy", "https_proxy", "all_proxy")},
    "NO_PROXY": "localhost,127.0.0.1,::1",
    "no_proxy": "localhost,127.0.0.1,::1",
}
MAX_HEAD = 64 << 10  # a request head larger than this is refused
CONNECT_TIMEOUT_S = 10.0
CHUNK = 64 << 10
_NAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Rule(NamedTuple):
    """One allowed destination: a name (``wildcard``: names below it), or a network."""

    port: int
    name: str | None = None
    wildcard: bool = False
    network: Network | None = None

    def names(self, host: str) -> bool:
        if self.name is None:
            return False
        return host.endswith("." + self.name) if self.wildcard else host == self.name


def parse_rule(text: str) -> Rule:
    """``HOST:PORT`` as the fleet file writes it; ValueError says what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: a network_allow entry is HOST:PORT with a port 1-65535")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return Rule(port, network=ipaddress.ip_network(host, strict=True))
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if ":" in name or "/" in name or not _NAME.match(name) or name.replace(".", "").isdigit():
        raise ValueError(f"{text!r}: the host must be a DNS name, *.domain, an address or a network")
    wildcard = name.startswith("*.")
    return Rule(port, name=name[2:] if wildcard else name, wildcard=wildcard)


def parse_rules(texts: list[str] | tuple[str, ...]) -> tuple[Rule, ...]:
    return tuple(parse_rule(t) for t in texts)


def literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def special(address: Address) -> bool:
    """Addresses a name never leads to: this machine, link-local (cloud metadata), multicast."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified


def permitted(rules: tuple[Rule, ...], host: str, port: int, resolved: list[Address]) -> list[Address]:
    """The addresses among ``resolved`` (what ``host`` resolves to, or the literal address
    itself) that the rules allow connecting to for ``host:port``; empty: refused."""
    host = host.lower().rstrip(".")
    by_name = literal(host) is None and any(r.port == port and r.names(host) for r in rules)
    nets = [r.network for r in rules if r.network is not None and r.port == port]
    out = []
    for address in resolved:
        if any(address in net for net in nets if net.version == address.version) or (
            by_name and not special(address)
        ):
            out.append(address)
    return out


def lists(rules: tuple[Rule, ...], host: str, port: int) -> bool:
    """Whether the rules name ``host:port`` outright (a name rule, or an address inside a
    network rule), without resolving anything: what a deploy-time check can know."""
    host = host.lower().rstrip(".")
    address = literal(host)
    if address is None:
        return any(r.port == port and r.names(host) for r in rules)
    return bool(permitted(rules, host, port, [address]))


# -- the relay (outside the sandbox) --------------------------------------------------------


def _resolve(host: str, port: int) -> list[Address]:
    address = literal(host)
    if address is not None:
        return [address]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _read_head(conn: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(CHUNK)
        if not piece or len(data) + len(piece) > MAX_HEAD + 4:
            return None
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return (head, rest) if len(head) <= MAX_HEAD else None


def _target(method: str, uri: str) -> tuple[str, int, str] | None:
    """(host, port, origin-form path) of a proxy request; None if it names no http target."""
    if method == "CONNECT":
        host, sep, port = uri.rpartition(":")
        return (host.strip("[]"), int(port), "") if sep and port.isdigit() and 0 < int(port) < 65536 else None
    if not uri.lower().startswith("http://"):
        return None
    authority, slash, path = uri[7:].partition("/")
    authority = authority.rpartition("@")[2]  # never forward credentials in the URL's authority
    if authority.startswith("["):
        host, _, port = authority[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = authority.partition(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return None
    return host, int(port or 80), slash + path


def _answer(conn: socket.socket, status: str, why: str) -> None:
    body = f"enclave egress: {why}\n".encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    try:  # noqa: SIM105 - contextlib costs the relay's start 4 ms
        conn.sendall(head.encode() + body)
    except OSError:
        pass


def _forwarded(head: bytes, method: str, path: str, version: str) -> bytes:
    """The request as the destination gets it: origin-form, no proxy headers, one request."""
    lines = [f"{method} {path or '/'} {version}".encode()]
    for line in head.split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive"):
            continue
        lines.append(line)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _serve_relay(conn: socket.socket, rules: tuple[Rule, ...]) -> None:
    with conn:
        got = _read_head(conn)
        if got is None:
            return _answer(conn, "400 Bad Request", "not an HTTP proxy request")
        head, rest = got
        try:
            method, uri, version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return _answer(conn, "400 Bad Request", "not an HTTP proxy request")
        target = _target(method, uri)
        if target is None:
            return _answer(
                conn, "400 Bad Request", f"{method} {uri[:200]!r}: CONNECT host:port or http:// only"
            )
        host, port, path = target
        resolved = _resolve(host, port)
        addresses = permitted(rules, host, port, resolved)
        if not addresses:
            where = f"{host[:200]}:{port}"
            if not lists(rules, host, port):
                why = f"{where} is not on the region's network_allow list"
            elif not resolved:
                why = f"{where} does not resolve"
            else:  # a listed name that leads to loopback, link-local or multicast only
                why = f"{where} resolves only to addresses a name may not lead to (list the address itself)"
            print(
                f"enclave egress: refused {method} {host[:200]}:{port} ({why})", file=sys.stderr, flush=True
            )
            return _answer(conn, "403 Forbidden", why)
        upstream = _connect(addresses, port)
        if upstream is None:
            return _answer(conn, "502 Bad Gateway", f"{host[:200]}:{port} did not answer")
        with upstream:
            if method == "CONNECT":
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(_forwarded(head, method, path, version))
            if rest:
                upstream.sendall(rest)
            splice(conn, upstream)


def _connect(addresses: list[Address], port: int) -> socket.socket | None:
    for address in addresses:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect((str(address), port))
        except OSError:
            sock.close()
            continue
        sock.settimeout(None)
        return sock
    return None


def splice(a: socket.socket, b: socket.socket) -> None:
    """Carry bytes both ways until both sides have finished sending."""
    open_ = {a: b, b: a}
    while open_:
        ready, _, _ = select.select(list(open_), [], [])
        for src in ready:
            dst = open_[src]
            try:
                data = src.recv(CHUNK)
            except OSError:
                data = b""
            if data:
                try:
                    dst.sendall(data)
                    continue
                except OSError:
                    return
            del open_[src]
            try:  # noqa: SIM105
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _daemon() -> bool:
    """Fork a process that outlives this one's exec and is nobody's child here (True in it)."""
    first = os.fork()
    if first:
        os.waitpid(first, 0)
        return False
    if os.fork():
        os._exit(0)
    return True


def _child_pid(info: int) -> int:
    """The sandbox's init, as bubblewrap reports it on its info descriptor. bubblewrap writes
    its report in several pieces (the pid, then its namespaces' ids, then the closing brace)
    and dies of EPIPE if the reader has gone: read the whole object before closing."""
    data = b""
    while (found := CHILD_PID.search(data)) is None or not data.rstrip().endswith(b"}"):
        piece = os.read(info, 4096)
        if not piece:
            raise OSError("bubblewrap ended before it reported its sandbox")
        data += piece
    return int(found.group(1))


def _listen_in(pid: int) -> socket.socket:
    """A listening socket on the proxy port in the network namespace of process ``pid``: made
    by this thread from inside that namespace, then back in its own (where it connects out)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    theirs = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(theirs, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "cannot enter the sandbox's network namespace")
        try:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Any address of that namespace: it has only its loopback (which bubblewrap may
            # not have brought up yet).
            listener.bind(("0.0.0.0", PROXY_PORT))  # noqa: S104
            listener.listen(128)
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                os._exit(1)  # never serve from the sandbox's side
    finally:
        os.close(own)
        os.close(theirs)
    return listener


def _serve_forever(listener: socket.socket, rules: tuple[Rule, ...], until: int) -> None:
    threading.stack_size(256 << 10)
    while True:
        ready, _, _ = select.select([listener.fileno(), until], [], [])
        if until in ready:
            os._exit(0)  # bubblewrap, and so the job, has ended
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        threading.Thread(target=_serve_one, args=(conn, rules), daemon=True).start()


def _serve_one(conn: socket.socket, rules: tuple[Rule, ...]) -> None:
    """One connection; an unexpected failure is one line on the job's stderr, not a trace."""
    try:
        _serve_relay(conn, rules)
    except Exception as exc:
        print(f"enclave egress: request failed ({type(exc).__name__})", file=sys.stderr, flush=True)
        _answer(conn, "502 Bad Gateway", "the relay could not serve this request")
        conn.close()


def relay(rules: tuple[Rule, ...], uid: int, argv: list[str]) -> None:
    """Become bubblewrap (``argv``), leaving behind the relay that serves the proxy port in
    the sandbox's network namespace; the sandbox starts only once that port listens. The relay
    parses what the job sends: once its socket is made it gives up root for ``uid`` (the
    job's own, whose processes cannot see it from their PID namespace)."""
    info_r, info_w = os.pipe()  # bubblewrap reports its sandbox's init here
    block_r, block_w = os.pipe()  # ... which waits until a byte arrives here
    os.set_inheritable(info_w, True)
    os.set_inheritable(block_r, True)
    watched = os.pidfd_open(os.getpid())  # this process: bubblewrap once it execs
    if _daemon():
        os.close(info_w)
        os.close(block_r)
        listener = None
        try:
            listener = _listen_in(_child_pid(info_r))
        except OSError as exc:  # fail closed: the job runs, with no way out
            print(f"enclave egress: no proxy for this job ({exc})", file=sys.stderr, flush=True)
        os.close(info_r)
        os.write(block_w, b"1")
        os.close(block_w)
        if listener is None:
            os._exit(0)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # every capability goes with root
        _serve_forever(listener, rules, until=watched)
    os.close(info_r)
    os.close(block_w)
    os.close(watched)
    argv = [argv[0], "--info-fd", str(info_w), "--block-fd", str(block_r), *argv[1:]]
    os.execvp(argv[0], argv)  # noqa: S606 -- becomes bubblewrap, by design


def main(args: list[str]) -> None:
    """``relay --uid UID --allow RULE ... -- bwrap ARGS...``"""
    split = args.index("--") if "--" in args else len(args)
    opts, argv = args[:split], args[split + 1 :]
    pairs = list(zip(opts[1::2], opts[2::2], strict=False))
    uids = [v for k, v in pairs if k == "--uid"]
    if (
        opts[:1] != ["relay"]
        or len(opts) % 2 != 1
        or any(k not in ("--uid", "--allow") for k, _ in pairs)
        or len(uids) != 1
        or not uids[0].isdigit()
        or int(uids[0]) == 0
        or not argv
    ):
        raise SystemExit("usage: egress.py relay --uid UID --allow HOST:PORT ... -- bwrap ARGS...")
    relay(parse_rules([v for k, v in pairs if k == "--allow"]), int(uids[0]), argv)


if __name__ == "__main__":
    main(sys.argv[1:])
