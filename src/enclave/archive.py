"""Model archives: a model is a directory shipped as one gzip'd tar.

The client packs a directory (or one file) before upload; the server checks the archive
before registering it and unpacks it into a replica's or a training job's sandbox. Members
must be plain files and directories with relative names inside the archive root: no links,
devices, absolute paths or ``..`` (a hostile archive must not write outside its folder).

The check also names the members that are pickles: loading a pickle runs whatever code its
author put in it (``__reduce__``), so a model made of pickles is one only a region that allows
them may serve (see ``enclave.services.models``). A member is a pickle by its name (``.pkl``,
``.joblib``, ``.pt`` ...) or by its first bytes (a pickle header, raw or zlib/gzip/xz/bz2
compressed as joblib writes it, or torch's zip layout), so renaming a pickle does not pass. The
runtimes are the last word: they read only ``model.skops`` / ``model.safetensors`` unless told
that the region allows pickles.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from enclave.errors import InvalidInput

MANIFEST = "model.json"
MAX_MANIFEST_BYTES = 1 << 20
# Suffixes of files that load by unpickling (joblib, pickle, dill, torch.save / TorchScript,
# Hugging Face's pytorch_model.bin, Lightning checkpoints).
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".dill", ".sav", ".pt", ".pth", ".ckpt", ".bin"})
HEAD_BYTES = 512  # how much of each member the content check reads
# torch.save and torch.jit.save write a zip whose first entry is <folder>/data.pkl or <folder>/data/<n>.
_TORCH_ZIP_ENTRY = re.compile(rb"^[^/]+/(data\.pkl|data/\d+|constants\.pkl|version)$")


@dataclass(frozen=True)
class Inspection:
    """What the check of an archive found: its manifest and the members that are pickles."""

    manifest: dict[str, Any]
    pickles: tuple[str, ...] = ()


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


def inspect(chunks: Iterable[bytes]) -> Inspection:
    """Check an archive; return its manifest (``{}`` when it has none) and its pickled members."""
    manifest: dict[str, Any] = {}
    pickles: list[str] = []
    try:
        with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks)), mode="r|*") as tar:
            files = 0
            for member in _members(tar):
                if not member.isfile():
                    continue
                files += 1
                name = member.name.removeprefix("./")
                fh = tar.extractfile(member)
                if name == MANIFEST:
                    if member.size > MAX_MANIFEST_BYTES:
                        raise InvalidInput("model.json is too large")
                    manifest = _manifest(fh.read() if fh else b"")
                elif is_pickle(name, fh.read(HEAD_BYTES) if fh else b""):
                    pickles.append(name)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise InvalidInput(f"not a model archive (tar or tar.gz): {exc}") from None
    if files == 0:
        raise InvalidInput("the model archive holds no files")
    return Inspection(manifest, tuple(sorted(pickles)))


def is_pickle(name: str, head: bytes) -> bool:
    """Whether a file named ``name`` that starts with ``head`` loads by unpickling."""
    if Path(name).suffix.lower() in PICKLE_SUFFIXES:
        return True
    return _pickle_header(head) or _pickle_header(_decompressed_head(head)) or _torch_zip(head)


def _pickle_header(head: bytes) -> bool:
    # Protocol 2 and later open with PROTO (0x80) and the protocol number.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _decompressed_head(head: bytes) -> bytes:
    """The first bytes of ``head`` decompressed, when it opens a zlib, gzip, xz or bz2 stream."""
    decoders: list[Any] = []
    if head[:2] == b"\x1f\x8b":
        decoders.append(zlib.decompressobj(16 + zlib.MAX_WBITS))
    elif len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
        decoders.append(zlib.decompressobj())
    elif head[:6] == b"\xfd7zXZ\x00":
        decoders.append(lzma.LZMADecompressor())
    elif head[:3] == b"BZh":
        decoders.append(bz2.BZ2Decompressor())
    for decoder in decoders:
        try:
            return bytes(decoder.decompress(head, 16))
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
            return b""
    return b""


def _torch_zip(head: bytes) -> bool:
    if head[:4] != b"PK\x03\x04" or len(head) < 30:
        return False
    name_len = int.from_bytes(head[26:28], "little")
    return bool(_TORCH_ZIP_ENTRY.match(head[30 : 30 + name_len]))


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
