"""The encrypted blob store: round trips, per-label keys, and every kind of tampering caught.

Frames are shrunk to a few bytes (``FRAME_BYTES`` is read at call time) so that multi-frame
blobs stay tiny and the tests fast.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave import blobs
from enclave.blobs import MAGIC, BlobStore, IntegrityError, load_or_create_master_key
from enclave.errors import TooLarge

FRAME = 16  # plaintext bytes per frame in these tests
TAG = 16  # AES-GCM tag
HEADER = len(MAGIC) + 8
LEN = 4
SECRET = "SECRET//SI"
OTHER = "UNCLASSIFIED"


@pytest.fixture
def small_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs, "FRAME_BYTES", FRAME)


@pytest.fixture
def store(tmp_path: Path, small_frames: None) -> BlobStore:
    return BlobStore(tmp_path / "blobs", bytes(range(32)))


def put(store: BlobStore, marking: str, data: bytes, chunk: int = 7, blob_id: str | None = None) -> str:
    blob_id = blob_id or str(uuid.uuid4())
    writer = store.writer(marking, blob_id, max_bytes=1 << 20)
    for i in range(0, len(data), chunk):
        writer.write(data[i : i + chunk])
    writer.commit()
    assert writer.size == len(data)
    assert writer.sha256 == hashlib.sha256(data).hexdigest()
    return blob_id


def read(store: BlobStore, marking: str, blob_id: str) -> bytes:
    return b"".join(store.read(marking, blob_id))


def blob_path(store: BlobStore, marking: str, blob_id: str) -> Path:
    return store._path(marking, blob_id)


def frames_of(raw: bytes) -> list[bytes]:
    """Split a blob file into its length-prefixed frames (each returned with its prefix)."""
    out, pos = [], HEADER
    while pos < len(raw):
        (n,) = struct.unpack(">I", raw[pos : pos + LEN])
        out.append(raw[pos : pos + LEN + n])
        pos += LEN + n
    assert pos == len(raw)
    return out


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- round trips --------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 6 * FRAME + 3) | st.sampled_from([FRAME - 1, FRAME, FRAME + 1, 3 * FRAME]),
    chunk=st.integers(1, 3 * FRAME),
    seed=st.binary(min_size=1, max_size=8),
)
def test_round_trip_across_frame_boundaries(
    tmp_path_factory: pytest.TempPathFactory, size: int, chunk: int, seed: bytes
) -> None:
    data = (seed * (size // len(seed) + 1))[:size]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blobs, "FRAME_BYTES", FRAME)
        store = BlobStore(tmp_path_factory.mktemp("blobs"), bytes(32))
        blob_id = put(store, SECRET, data, chunk=chunk)
        parts = list(store.read(SECRET, blob_id))
    assert b"".join(parts) == data
    # One frame per FRAME_BYTES, and a (possibly empty) final frame always ends the blob.
    assert len(parts) == max(1, -(-size // FRAME))
    assert all(len(p) == FRAME for p in parts[:-1])
    raw = blob_path(store, SECRET, blob_id).read_bytes()
    assert len(raw) == HEADER + sum(LEN + len(p) + TAG for p in parts)


def test_default_frame_size_is_one_mebibyte() -> None:
    assert blobs.FRAME_BYTES == 1 << 20


def test_ciphertext_on_disk_reveals_nothing(store: BlobStore) -> None:
    plain = b"launch codes: 0000 0000 " * 20
    blob_id = put(store, SECRET, plain)
    raw = blob_path(store, SECRET, blob_id).read_bytes()
    assert raw.startswith(MAGIC)
    for word in (b"launch", b"codes", b"0000 0000"):
        assert word not in raw
    # Storing the same content twice gives different ciphertext (fresh nonce prefix).
    again = blob_path(store, SECRET, put(store, SECRET, plain)).read_bytes()
    assert again[HEADER:] != raw[HEADER:]
    # The directory name is a digest, not the marking.
    assert not any("SECRET" in str(p.relative_to(store._root)) for p in files_under(store._root))


def test_labels_use_different_keys(store: BlobStore) -> None:
    blob_id = put(store, SECRET, b"for SI eyes only, several frames long " * 3)
    src = blob_path(store, SECRET, blob_id)
    dst = blob_path(store, OTHER, blob_id)
    assert src.parent != dst.parent
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    with pytest.raises(IntegrityError, match="failed authentication at frame 0"):
        read(store, OTHER, blob_id)
    os.replace(dst, src)  # back where it belongs, it reads again
    assert read(store, SECRET, blob_id).startswith(b"for SI")


def test_master_key_separates_stores(tmp_path: Path, small_frames: None) -> None:
    a = BlobStore(tmp_path / "a", bytes(32))
    blob_id = put(a, SECRET, b"x" * 40)
    b = BlobStore(tmp_path / "b", b"\x01" * 32)
    dst = blob_path(b, SECRET, blob_id)
    dst.parent.mkdir(parents=True)
    dst.write_bytes(blob_path(a, SECRET, blob_id).read_bytes())
    with pytest.raises(IntegrityError):
        read(b, SECRET, blob_id)


def test_a_blob_renamed_to_another_id_fails(store: BlobStore) -> None:
    first = put(store, SECRET, b"a" * 40)
    second = put(store, SECRET, b"b" * 40)
    os.replace(blob_path(store, SECRET, first), blob_path(store, SECRET, second))
    with pytest.raises(IntegrityError):
        read(store, SECRET, second)


# -- tampering ----------------------------------------------------------------------------
DATA = bytes(range(256))[: 4 * FRAME + 5]  # four full frames and a short final one


def tamper_cases() -> dict[str, Callable[[bytes], bytes]]:
    def flip(pos: int) -> Callable[[bytes], bytes]:
        return lambda raw: raw[:pos] + bytes([raw[pos] ^ 0x01]) + raw[pos + 1 :]

    def rebuild(edit: Callable[[list[bytes]], list[bytes]]) -> Callable[[bytes], bytes]:
        return lambda raw: raw[:HEADER] + b"".join(edit(frames_of(raw)))

    frame = LEN + FRAME + TAG
    return {
        "flip magic": flip(0),
        "flip nonce prefix": flip(len(MAGIC) + 3),
        "flip length prefix": flip(HEADER + 3),
        "flip first ciphertext byte": flip(HEADER + LEN),
        "flip tag of middle frame": flip(HEADER + 2 * frame + LEN + FRAME + 5),
        "flip last byte": lambda raw: raw[:-1] + bytes([raw[-1] ^ 0x80]),
        "truncate inside a frame": lambda raw: raw[: HEADER + frame + 10],
        "truncate inside a length prefix": lambda raw: raw[: HEADER + frame + 2],
        "truncate to the header": lambda raw: raw[:HEADER],
        "truncate the header": lambda raw: raw[: HEADER - 1],
        "empty file": lambda raw: b"",
        "drop the final frame": rebuild(lambda fs: fs[:-1]),
        "drop a middle frame": rebuild(lambda fs: fs[:1] + fs[2:]),
        "append garbage": lambda raw: raw + b"\x00\x00\x00\x00",
        "append one byte": lambda raw: raw + b"x",
        "append a copy of the final frame": rebuild(lambda fs: [*fs, fs[-1]]),
        "swap two frames": rebuild(lambda fs: [fs[1], fs[0], *fs[2:]]),
        "duplicate a frame": rebuild(lambda fs: [fs[0], *fs]),
        "oversized frame length": lambda raw: raw[:HEADER] + struct.pack(">I", 1 << 30) + raw[HEADER + LEN :],
    }


@pytest.mark.parametrize("case", sorted(tamper_cases()))
def test_tampering_is_detected(store: BlobStore, case: str) -> None:
    blob_id = put(store, SECRET, DATA)
    path = blob_path(store, SECRET, blob_id)
    raw = path.read_bytes()
    assert len(frames_of(raw)) == 5
    path.write_bytes(tamper_cases()[case](raw))
    with pytest.raises(IntegrityError):
        read(store, SECRET, blob_id)


def test_frames_cannot_move_between_blobs(store: BlobStore) -> None:
    """Same label, same key: a frame spliced in from another blob still fails (nonce and id)."""
    a = put(store, SECRET, DATA)
    b = put(store, SECRET, DATA)
    pa, pb = blob_path(store, SECRET, a), blob_path(store, SECRET, b)
    ra, rb = pa.read_bytes(), pb.read_bytes()
    fa, fb = frames_of(ra), frames_of(rb)
    pa.write_bytes(ra[:HEADER] + b"".join([fa[0], fb[1], *fa[2:]]))
    with pytest.raises(IntegrityError):
        read(store, SECRET, a)
    # Even the whole body of b under a's header fails: a's nonce prefix and id do not match.
    pa.write_bytes(ra[:HEADER] + rb[HEADER:])
    with pytest.raises(IntegrityError):
        read(store, SECRET, a)


def test_corruption_surfaces_before_later_plaintext(store: BlobStore) -> None:
    blob_id = put(store, SECRET, DATA)
    path = blob_path(store, SECRET, blob_id)
    raw = bytearray(path.read_bytes())
    raw[HEADER + 2 * (LEN + FRAME + TAG) + LEN] ^= 0xFF  # third frame
    path.write_bytes(bytes(raw))
    it: Iterator[bytes] = store.read(SECRET, blob_id)
    assert next(it) == DATA[:FRAME]
    assert next(it) == DATA[FRAME : 2 * FRAME]
    with pytest.raises(IntegrityError, match="frame 2"):
        next(it)


# -- limits and aborts --------------------------------------------------------------------
def test_oversize_write_raises_and_abort_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer(SECRET, "big", max_bytes=40)
    writer.write(b"x" * 40)  # exactly at the limit is fine
    with pytest.raises(TooLarge):
        writer.write(b"y")
    writer.abort()
    writer.abort()  # idempotent
    assert files_under(store._root) == []
    assert not blob_path(store, SECRET, "big").exists()


def test_nothing_is_visible_before_commit(store: BlobStore) -> None:
    writer = store.writer(SECRET, "pending", max_bytes=1000)
    writer.write(b"z" * 100)
    assert not blob_path(store, SECRET, "pending").exists()
    writer.commit()
    assert [p.name for p in files_under(store._root)] == ["pending"]
    assert read(store, SECRET, "pending") == b"z" * 100


def test_delete(store: BlobStore) -> None:
    blob_id = put(store, SECRET, b"gone")
    store.delete(SECRET, blob_id)
    store.delete(SECRET, blob_id)  # missing is fine
    with pytest.raises(FileNotFoundError):
        read(store, SECRET, blob_id)


# -- file system hygiene ------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_file_and_directory_modes(tmp_path: Path, small_frames: None, umask: int) -> None:
    old = os.umask(umask)
    try:
        store = BlobStore(tmp_path / "blobs", bytes(32))
        writer = store.writer(SECRET, "half", max_bytes=100)
        writer.write(b"partial")
        part = next(p for p in files_under(tmp_path) if p.name.endswith(".part"))
        assert mode(part) == 0o600
        writer.abort()
        blob_id = put(store, SECRET, b"content")
    finally:
        os.umask(old)
    path = blob_path(store, SECRET, blob_id)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(tmp_path / "blobs") == 0o700


def test_master_key_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    key = load_or_create_master_key(path)
    assert len(key) == 32
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert load_or_create_master_key(path) == key
    assert load_or_create_master_key(tmp_path / "other.key") != key


def test_master_key_of_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        load_or_create_master_key(path)


def test_a_key_reused_across_store_instances_reads_old_blobs(tmp_path: Path, small_frames: None) -> None:
    key = load_or_create_master_key(tmp_path / "master.key")
    blob_id = put(BlobStore(tmp_path / "blobs", key), SECRET, DATA)
    reopened = BlobStore(tmp_path / "blobs", load_or_create_master_key(tmp_path / "master.key"))
    assert read(reopened, SECRET, blob_id) == DATA
