"""Encrypted blob storage: one AES-256-GCM key per label, content streamed in frames.

Keys are derived with HKDF-SHA256 from a master key and the label's canonical marking, so
a blob can only be opened with its own label's key and labels never share one. Each blob is
a header (magic, random 8-byte nonce prefix) followed by frames of at most
``FRAME_BYTES`` plaintext; a frame's nonce is prefix‖counter and its associated data binds
the blob id, the frame number and whether it is the last frame — so frames cannot be
reordered, swapped between blobs or cut off without failing authentication.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enclave.errors import EnclaveError, TooLarge

MAGIC = b"ENCB1"
FRAME_BYTES = 1 << 20
_LEN = struct.Struct(">I")


class IntegrityError(EnclaveError):
    status = 500
    title = "Stored content failed its integrity check"


def load_or_create_master_key(path: Path) -> bytes:
    if path.exists():
        key = path.read_bytes()
        if len(key) != 32:
            raise ValueError(f"{path} must hold 32 bytes")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class BlobStore:
    def __init__(self, root: Path, master_key: bytes) -> None:
        self._root = root
        self._master = master_key
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _key(self, marking: str) -> AESGCM:
        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"enclave-label-key:" + marking.encode()
        )
        return AESGCM(hkdf.derive(self._master))

    def _path(self, marking: str, blob_id: str) -> Path:
        # One directory per label; its name is a digest so listing the store reveals no markings.
        label_dir = self._root / hashlib.sha256(marking.encode()).hexdigest()[:24]
        return label_dir / blob_id

    def writer(self, marking: str, blob_id: str, max_bytes: int) -> BlobWriter:
        path = self._path(marking, blob_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return BlobWriter(self._key(marking), path, blob_id, max_bytes)

    def read(self, marking: str, blob_id: str) -> Iterator[bytes]:
        """Decrypt frame by frame; raises IntegrityError on any tampering or truncation."""
        aead = self._key(marking)
        path = self._path(marking, blob_id)
        with path.open("rb") as fh:
            header = fh.read(len(MAGIC) + 8)
            if header[: len(MAGIC)] != MAGIC or len(header) != len(MAGIC) + 8:
                raise IntegrityError(f"blob {blob_id} has a bad header")
            prefix = header[len(MAGIC) :]
            counter = 0
            while True:
                raw_len = fh.read(_LEN.size)
                if len(raw_len) != _LEN.size:
                    raise IntegrityError(f"blob {blob_id} is truncated")
                (flen,) = _LEN.unpack(raw_len)
                if flen > FRAME_BYTES + 16:
                    raise IntegrityError(f"blob {blob_id} has an oversized frame")
                frame = fh.read(flen)
                final = fh.peek(1) == b""
                try:
                    plain = aead.decrypt(
                        prefix + struct.pack(">I", counter), frame, _aad(blob_id, counter, final)
                    )
                except InvalidTag as exc:
                    raise IntegrityError(f"blob {blob_id} failed authentication at frame {counter}") from exc
                yield plain
                if final:
                    return
                counter += 1

    def delete(self, marking: str, blob_id: str) -> None:
        self._path(marking, blob_id).unlink(missing_ok=True)


def _aad(blob_id: str, counter: int, final: bool) -> bytes:
    return blob_id.encode() + struct.pack(">I?", counter, final)


class BlobWriter:
    """Encrypts a stream into a temporary file; ``commit`` publishes it, ``abort`` removes it."""

    def __init__(self, aead: AESGCM, path: Path, blob_id: str, max_bytes: int) -> None:
        self._aead = aead
        self._path = path
        self._tmp = path.with_name(path.name + ".part")
        self._blob_id = blob_id
        self._max = max_bytes
        self._prefix = secrets.token_bytes(8)
        self._buf = bytearray()
        self._counter = 0
        self.size = 0
        self._sha = hashlib.sha256()
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "wb")
        self._fh.write(MAGIC + self._prefix)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max:
            raise TooLarge(f"content exceeds the limit of {self._max} bytes")
        self._sha.update(chunk)
        self._buf += chunk
        while len(self._buf) > FRAME_BYTES:
            self._frame(bytes(self._buf[:FRAME_BYTES]), final=False)
            del self._buf[:FRAME_BYTES]

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def commit(self) -> None:
        self._frame(bytes(self._buf), final=True)
        self._buf.clear()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self._path)

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def _frame(self, plain: bytes, final: bool) -> None:
        nonce = self._prefix + struct.pack(">I", self._counter)
        sealed = self._aead.encrypt(nonce, plain, _aad(self._blob_id, self._counter, final))
        self._fh.write(_LEN.pack(len(sealed)) + sealed)
        self._counter += 1
