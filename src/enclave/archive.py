"""Model archives: a model is a directory shipped as one gzip'd tar.

The client packs a directory (or one file) before upload; the server checks the archive
before registering it and unpacks it into a replica's or a training job's sandbox. Members
must be plain files and directories with relative names inside the archive root: no links,
devices, absolute paths or ``..`` (a hostile archive must not write outside its folder).
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from enclave.errors import InvalidInput

MANIFEST = "model.json"
MAX_MANIFEST_BYTES = 1 << 20


def pack(source: Path, out: BinaryIO) -> None:
    """Write ``source`` (a directory's contents, or one file) as a tar.gz to ``out``."""
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        if source.is_dir():
            for path in sorted(source.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    tar.add(path, arcname=str(path.relative_to(source)), recursive=False)
        elif source.is_file():
            tar.add(source, arcname=source.name, recursive=False)
        else:
            raise InvalidInput(f"{source} is neither a file nor a directory")


def pack_bytes(files: dict[str, bytes]) -> bytes:
    """An archive of in-memory files (a manifest-only model such as an upstream pointer)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (decrypted blobs stream this way)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buf))
        target[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        name = member.name
        parts = Path(name).parts
        if name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise InvalidInput(f"model archive member {name!r} is not a plain file inside the archive")
        yield member


def inspect(chunks: Iterable[bytes]) -> dict[str, Any]:
    """Check an archive and return its manifest (``{}`` when it has none)."""
    manifest: dict[str, Any] = {}
    try:
        with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks)), mode="r|*") as tar:
            files = 0
            for member in _members(tar):
                files += member.isfile()
                if member.name.lstrip("./") == MANIFEST and member.isfile():
                    if member.size > MAX_MANIFEST_BYTES:
                        raise InvalidInput("model.json is too large")
                    fh = tar.extractfile(member)
                    manifest = _manifest(fh.read() if fh else b"")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise InvalidInput(f"not a model archive (tar or tar.gz): {exc}") from None
    if files == 0:
        raise InvalidInput("the model archive holds no files")
    return manifest


def _manifest(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"model.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("model.json must hold a JSON object")
    return data


def unpack(chunks: Iterable[bytes], dest: Path) -> None:
    """Extract into ``dest`` (created 0700); files become read-only (0400)."""
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks)), mode="r|*") as tar:
        for member in _members(tar):
            tar.extract(member, dest, filter="data")
            target = dest / member.name
            target.chmod(0o700 if member.isdir() else 0o400)
