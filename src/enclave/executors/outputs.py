"""Reading what a job wrote, as the control plane must: never following a link, never leaving
the job's folder, never blocking on a FIFO, never reading more than a cap.

A job owns its sandbox, so it can leave a symbolic link where the control plane later reads
(``output/model.bin -> /root/.enclave/keys/master.key``), a FIFO that blocks a reader, or a
sparse file of a terabyte. Every server-side read of job output goes through this module:
each path component is opened relative to the one before with ``O_NOFOLLOW``, the last one
must be a regular file, and reads stop at a cap.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from enclave.errors import InvalidInput

CHUNK_BYTES = 1 << 20
SMALL_BYTES = 4096
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_file(path: Path) -> int | None:
    """A descriptor of the regular file at ``path`` (no component may be a link), or None."""
    parts = path.parts
    try:
        fd = os.open(parts[0], _DIR_FLAGS)
    except OSError:
        return None
    try:
        for name in parts[1:-1]:
            nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        out = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        return None
    return out


def read_small(path: Path, max_bytes: int = SMALL_BYTES) -> bytes | None:
    """A small record a job may have touched (an exit status, a port), or None."""
    fd = open_file(path)
    if fd is None:
        return None
    try:
        return os.read(fd, max_bytes)
    finally:
        os.close(fd)


def chunks(path: Path, max_bytes: int) -> Iterator[bytes]:
    """The file's bytes in chunks, at most ``max_bytes`` of them; nothing if it is not a
    regular file reached without links."""
    fd = open_file(path)
    if fd is None:
        return
    left = max_bytes
    try:
        while left > 0:
            data = os.read(fd, min(CHUNK_BYTES, left))
            if not data:
                return
            left -= len(data)
            yield data
    finally:
        os.close(fd)


def copy_tree(source: Path, target: Path, max_bytes: int) -> int:
    """Copy the regular files and directories under ``source`` into ``target`` (created, 0700),
    skipping links, devices and FIFOs; refuses (InvalidInput) past ``max_bytes`` in all.
    Returns the bytes copied."""
    fd = open_file_dir(source)
    if fd is None:
        raise InvalidInput("the job left no output folder")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(mode=0o700, parents=True)
    try:
        return _copy_dir(fd, target, max_bytes)
    finally:
        os.close(fd)


def open_file_dir(path: Path) -> int | None:
    """A descriptor of the directory at ``path``, reached without links, or None."""
    parts = path.parts
    try:
        fd = os.open(parts[0], _DIR_FLAGS)
    except OSError:
        return None
    for name in parts[1:]:
        try:
            nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def _copy_dir(dir_fd: int, target: Path, budget: int) -> int:
    copied = 0
    for entry in sorted(os.listdir(dir_fd)):
        try:
            info = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            sub = os.open(entry, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                (target / entry).mkdir(mode=0o700)
                copied += _copy_dir(sub, target / entry, budget - copied)
            finally:
                os.close(sub)
        elif stat.S_ISREG(info.st_mode):
            copied += _copy_file(dir_fd, entry, target / entry, budget - copied)
    return copied


def _copy_file(dir_fd: int, name: str, target: Path, budget: int) -> int:
    try:
        src = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return 0
    copied = 0
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            return 0
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(out, "wb") as fh:
            while data := os.read(src, CHUNK_BYTES):
                copied += len(data)
                if copied > budget:
                    raise InvalidInput("the job's output is larger than the per-job output cap")
                fh.write(data)
    finally:
        os.close(src)
    return copied
