"""What the guard reads: bytes in; every marking in the text they hold, or why they cannot be read.

Pure: bytes in, a :class:`Verdict` out (no I/O: archives and documents are opened in memory).
A :class:`ContentScanner` is fed an artifact in chunks, hashes it (SHA-256) and reads it as a
person could, each part with a :class:`~enclave.guard_scan.MarkingScanner`:

* **Text encodings**: byte-order marks (UTF-8, UTF-16 and UTF-32, either byte order), UTF-16
  and UTF-32 without one (recognised by where the NUL bytes fall), else UTF-8 with any byte
  that is not UTF-8 read as Windows-1252. Text is normalised (:mod:`enclave.text_normalise`)
  before it is matched.
* **Compressed streams**, decompressed as they stream: gzip (every member), bzip2, xz.
* **Archives**, opened in memory: zip (so Office XML too: docx, xlsx, pptx are zips of XML)
  and tar; member names are text too.
* **Documents**: PDF (the text of every page, the metadata and the attached files, with
  ``pypdf``); XML and HTML (tags taken out, entities decoded, so ``<w:t>SEC</w:t><w:t>RET``
  reads ``SECRET``).
* **Encoded blocks** inside text: base64 (standard and URL-safe alphabets, lines joined, each
  of the four alignments) and hexadecimal runs are decoded and what they hold is read in turn.

Every decoded part is read the same way, recursively, so gzip in base64 in a zip in a tar
is read. The scan also reads the raw bytes of whatever is not plain UTF-8 text, so an ASCII
marking inside a binary format is still found.

**Fail closed.** A part that cannot be read as text — binary that is no known container or
encoding (control characters in text, invalid UTF-16, undecodable runs), an encrypted zip
member or PDF, a corrupt or truncated archive, a PDF page with images and no text layer, a
long base64 block that decodes to binary — is listed in :attr:`Verdict.unreadable`; the
guard refuses such content unless a release authority overrides it (audited). So is any part
beyond the limits below: the scan never reads less than the content and calls it clean.
Runs of the base64 alphabet that are ordinary words ("document", "Hello") are decoded too, but
what they decode to is only searched for markings: being junk is no reason to refuse.

Limits (:class:`Limits`; all counted over the whole scan, so a zip bomb ends the scan early
with a refusal instead of exhausting memory):

* nesting: at most 8 containers or encodings inside one another;
* an archive or PDF is opened in memory: at most 64 MiB each (a compressed one counts its
  decompressed size) — larger ones are refused, plain and compressed text of any size streams;
* decompressed bytes: at most 1 GiB in all; archive members and PDF pages: 10,000 in all.

Not read (documented limits): text drawn as images (no OCR; an image-only PDF page is
refused, an image file is binary and refused), encodings other than those above (quoted-
printable, UTF-7, percent-encoding, ROT13 ...), compression formats other than those above
(7z, rar, zstd, brotli are binary and so refused), and a block of more than 1 MiB of base64
whose padding falls in its middle (read as one stream).
"""

from __future__ import annotations

import base64
import binascii
import bz2
import codecs
import hashlib
import html
import io
import lzma
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol, Union

from enclave.guard_scan import Finding, MarkingScanner, TextDecoder
from enclave.labels import Label
from enclave.text_normalise import normalise

SNIFF_BYTES = 4096  # how much of a part is looked at to decide what it is
PIECE_BYTES = 1 << 20  # decompressed and extracted data is read on in pieces of this size
LONG_RUN_CHARS = 1 << 20  # a base64 run longer than this is decoded as a stream
STRICT_BLOCK_CHARS = 256  # a valid base64 block this long is content: binary in it is refused
MARKUP_CARRY_CHARS = 1 << 16  # a tag not closed within this many chars is read as text
BATCH_BYTES = 1 << 16  # decoded runs are searched in batches of this size
MAX_REASONS = 50

# Characters no text has: C0 and C1 controls other than white space, backspace and escape;
# lone surrogates, the replacement character (a decoding error), private-use characters.
_NOT_TEXT = re.compile("[\x00-\x07\x0e-\x1a\x1c-\x1f\x7f-\x9f\ud800-\udfff\ue000-\uf8ff\ufffd\ufffe\uffff]")
_RUN = re.compile(r"[A-Za-z0-9+/=_-]+(?:\r?\n[A-Za-z0-9+/=_-]+)*")
_RUN_PREFIX = re.compile(r"[A-Za-z0-9+/=_\r\n-]*")
_B64_STRICT = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){4,}")
_ENCODED_HINT = re.compile(r"[0-9+/=_-]|(?s:.)[A-Z]")
_URLSAFE = str.maketrans("-_", "+/")
_TAG = re.compile(r"<[^<>]*>")
_MARKUP_NAMES = (".xml", ".rels", ".html", ".htm", ".xhtml", ".svg", ".vml", ".xsl", ".opf", ".ncx")


@dataclass(frozen=True)
class Limits:
    depth: int = 8  # containers and encodings inside one another
    container_bytes: int = 64 << 20  # one archive or PDF, opened in memory
    expanded_bytes: int = 1 << 30  # all decompressed and extracted bytes of one scan
    members: int = 10_000  # archive members and PDF pages of one scan


@dataclass(frozen=True)
class Verdict:
    """What a scan found: every marking, the parts it could not read, and what it read."""

    findings: tuple[Finding, ...]
    unreadable: tuple[str, ...]  # "where: why", one per part that could not be read
    sha256: str  # of the bytes scanned
    size_bytes: int

    @property
    def readable(self) -> bool:
        return not self.unreadable

    def above(self, target: Label) -> list[Finding]:
        """Findings whose label the target does not dominate: the reasons to refuse."""
        return [f for f in self.findings if not target.dominates(f.label)]


class ContentScanner:
    """Feed an artifact's bytes in order, then :meth:`finish` for the verdict."""

    def __init__(self, scanner: MarkingScanner, limits: Limits = Limits()) -> None:
        self._run = _Run(scanner, limits)
        self._root = _Part(self._run, "content", "", 0, lenient=False)
        self._hash = hashlib.sha256()
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._size += len(chunk)
        self._root.feed(chunk)

    def finish(self) -> Verdict:
        self._root.finish()
        run = self._run
        findings = sorted(run.findings.values(), key=lambda f: (-f.label.rank, f.text, f.label.marking))
        return Verdict(tuple(findings), tuple(run.unreadable), self._hash.hexdigest(), self._size)


def inspect(scanner: MarkingScanner, content: bytes, limits: Limits = Limits()) -> Verdict:
    """One-shot helper: the verdict on ``content``."""
    reader = ContentScanner(scanner, limits)
    reader.feed(content)
    return reader.finish()


class _Run:
    """What the parts of one scan share: findings, reasons, and the budgets left."""

    def __init__(self, template: MarkingScanner, limits: Limits) -> None:
        self.template = template.fresh()
        self.limits = limits
        self.findings: dict[tuple[str, Label], Finding] = {}
        self.unreadable: list[str] = []
        self.expanded = 0
        self.members = 0
        self.exhausted = False  # a budget ran out: nothing more is opened

    def scanner(self) -> MarkingScanner:
        return self.template.fresh()

    def collect(self, scanner: MarkingScanner) -> None:
        for f in scanner.findings():
            self.findings.setdefault((f.text, f.label), f)

    def refuse(self, path: str, why: str) -> None:
        if len(self.unreadable) < MAX_REASONS:
            self.unreadable.append(f"{path}: {why}")

    def expand(self, path: str, n: int) -> bool:
        """Count ``n`` more decompressed bytes; False (and a refusal) once over the limit."""
        self.expanded += n
        if self.expanded > self.limits.expanded_bytes:
            if not self.exhausted:
                self.refuse(path, f"expands past {self.limits.expanded_bytes} bytes in all (a bomb?)")
            self.exhausted = True
        return not self.exhausted

    def member(self, path: str) -> bool:
        self.members += 1
        if self.members > self.limits.members:
            if not self.exhausted:
                self.refuse(path, f"more than {self.limits.members} archive members or pages in all")
            self.exhausted = True
        return not self.exhausted


class _Reader(Protocol):
    def feed(self, data: bytes) -> None: ...
    def finish(self) -> None: ...


class _Part:
    """One stream of bytes: what it is is decided from its first bytes, then it is read as that."""

    def __init__(self, run: _Run, path: str, name: str, depth: int, lenient: bool) -> None:
        self.run, self.path, self.name, self.depth, self.lenient = run, path, name, depth, lenient
        self._head = b""
        self._reader: _Reader | None = None
        self._raw: MarkingScanner | None = None  # the bytes as they are, for what is not UTF-8

    def child(self, name: str, lenient: bool = False) -> _Part:
        return _Part(self.run, f"{self.path}/{name}", name, self.depth + 1, lenient)

    def feed(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            self._head += data
            if len(self._head) < SNIFF_BYTES:
                return
            data, self._head = self._head, b""
            reader = self._start(data)
        if self._raw is not None:
            self._raw.feed(data)
        reader.feed(data)

    def finish(self) -> None:
        reader = self._reader
        if reader is None:
            data, self._head = self._head, b""
            reader = self._start(data)
            self.feed(data)
        reader.finish()
        if self._raw is not None:
            self.run.collect(self._raw)

    def _start(self, head: bytes) -> _Reader:
        if self.depth > self.run.limits.depth:
            self.run.refuse(self.path, f"nested more than {self.run.limits.depth} deep")
            kind = "skip"
        elif self.run.exhausted:
            kind = "skip"
        else:
            kind = sniff(head)
        if kind != "utf-8":
            self._raw = self.run.scanner()
        reader: _Reader
        if kind in ("zip", "tar", "pdf"):
            reader = _Buffered(self, kind)
        elif kind in _DECOMPRESSORS:
            reader = _Decompressed(self, kind)
        elif kind == "skip":
            reader = _Skipped()
        else:
            reader = _Text(self, kind)
        self._reader = reader
        return reader


def sniff(head: bytes) -> str:
    """What a part is, from its first bytes: a text encoding or a container kind."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if re.match(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)", head):
        return "bz2"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head[257:262] == b"ustar":
        return "tar"
    return _nul_pattern(head) or "utf-8"


_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_MAGIC = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
)
# (codec, byte positions that are NUL for Latin text, positions that hold the letters, step)
_NUL_LAYOUTS = (
    ("utf-32-le", (1, 2, 3), (0,), 4),
    ("utf-32-be", (0, 1, 2), (3,), 4),
    ("utf-16-le", (1,), (0,), 2),
    ("utf-16-be", (0,), (1,), 2),
)


def _nul_pattern(head: bytes) -> str | None:
    """UTF-16 or UTF-32 without a byte-order mark: Latin text has a NUL in a fixed place of
    every code unit and (almost) none where the letters are."""
    n = len(head) - len(head) % 4
    if n < 4:
        return None
    data = head[:n]

    def nuls(pos: int, step: int) -> float:
        units = data[pos::step]
        return units.count(0) / len(units)

    for codec, zeros, letters, step in _NUL_LAYOUTS:
        if min(nuls(p, step) for p in zeros) >= 0.5 and max(nuls(p, step) for p in letters) <= 0.1:
            return codec
    return None


class _Skipped:
    """Past a limit: the bytes are only read raw (the refusal is already recorded)."""

    def feed(self, data: bytes) -> None:
        pass

    def finish(self) -> None:
        pass


class _Text:
    """Text in one encoding: normalised, matched, its markup and encoded blocks read too."""

    def __init__(self, part: _Part, codec: str) -> None:
        self.part = part
        self.decode: Callable[[bytes, bool], str] = (
            TextDecoder().decode if codec == "utf-8" else _decoder(codec)
        )
        self.scanner = part.run.scanner()
        self.junk = part.run.scanner()  # what runs of ordinary words decode to
        self.bad_at: int | None = None  # the first char that no text has
        self.seen = 0
        self.markup: tuple[MarkingScanner, MarkingScanner] | None = None
        self.markup_carry = ""
        self.carry = ""  # an encoded run that may go on in the next piece
        self.long: _LongRun | None = None
        self.decoded: _Part | None = None  # the text that this text's encoded runs decode to
        self.decoded_batch = bytearray()
        self.junk_batch = bytearray()
        if part.name.lower().endswith(_MARKUP_NAMES):
            self._start_markup()

    def _start_markup(self) -> None:
        self.markup = (self.part.run.scanner(), self.part.run.scanner())

    def feed(self, data: bytes) -> None:
        self._text(self.decode(data, False))

    def finish(self) -> None:
        self._text(self.decode(b"", True))
        if self.long is not None:
            self.long.finish()
        elif self.carry:
            self._decode_run(self.carry)
        if self.markup is not None:
            self._strip(self.markup_carry, final=True)
        self._flush_decoded()
        if self.decoded is not None:
            self.decoded.finish()
        run = self.part.run
        for scanner in (self.scanner, self.junk, *(self.markup or ())):
            run.collect(scanner)
        if self.bad_at is not None and not self.part.lenient:
            run.refuse(self.part.path, f"not text (binary or control characters from char {self.bad_at})")

    def _text(self, text: str) -> None:
        if not text:
            return
        if self.bad_at is None:
            bad = _NOT_TEXT.search(text)
            if bad is not None:
                self.bad_at = self.seen + bad.start()
        if self.seen == 0 and self.markup is None and text.lstrip()[:1] == "<":
            self._start_markup()
        self.seen += len(text)
        text = normalise(text)
        self.scanner.feed_normalised(text)
        if self.markup is not None:
            self._strip(text, final=False)
        self._blocks(text)

    def _strip(self, text: str, final: bool) -> None:
        """Markup with its tags taken out (joined, and as line breaks) and entities decoded;
        an unclosed tag or entity at the end waits for the next piece."""
        if self.markup is None:
            return
        text = self.markup_carry + text
        cut = len(text)
        if not final:
            tag, entity = text.rfind("<"), text.rfind("&")
            if tag >= 0 and ">" not in text[tag:] and len(text) - tag < MARKUP_CARRY_CHARS:
                cut = tag
            if entity >= len(text) - 12 and ";" not in text[entity:]:
                cut = min(cut, entity)
        text, self.markup_carry = text[:cut], text[cut:]
        joined, lines = self.markup
        joined.feed_text(html.unescape(_TAG.sub("", text)))
        lines.feed_text(html.unescape(_TAG.sub("\n", text)))

    # -- encoded blocks ------------------------------------------------------------------------
    def _blocks(self, text: str) -> None:
        if self.long is not None:
            text = self.long.feed(text)
            if self.long.open:
                return
            self.long.finish()
            self.long = None
        text = self.carry + text
        self.carry = ""
        last = None
        for match in _RUN.finditer(text):
            if last is not None:
                self._decode_run(last.group(0))
            last = match
        if last is None:
            return
        if text[last.end() :].strip("\r\n"):  # something else follows: the run is complete
            self._decode_run(last.group(0))
            return
        self.carry = text[last.start() :]
        if len(self.carry) > LONG_RUN_CHARS:
            compact = _compact(self.carry)
            if _looks_encoded(compact[:LONG_RUN_CHARS]):
                self.long = _LongRun(self.part.child("base64"))
                self.long.feed(self.carry)
            self.carry = ""  # a long run that is no base64 (a DNA sequence ...) is dropped

    def _decode_run(self, run: str) -> None:
        compact = _compact(run)
        if len(compact) < 4 or not (len(compact) >= 16 or _looks_encoded(compact)):
            return  # an ordinary word
        if _HEX.fullmatch(compact):
            self._read_decoded(bytes.fromhex(compact), strict=False)
        for segment in re.split("=+", compact):
            for shift in range(4 if len(segment) >= 16 else 1):
                data = _b64(segment[shift:])
                if data is None:
                    continue
                if shift:
                    self.junk_batch += data + b"\n"
                    if len(self.junk_batch) >= BATCH_BYTES:
                        self._flush_decoded()
                else:
                    strict = len(compact) >= STRICT_BLOCK_CHARS and bool(_B64_STRICT.fullmatch(compact))
                    self._read_decoded(data, strict and not _HEX.fullmatch(compact))

    def _read_decoded(self, data: bytes, strict: bool) -> None:
        """Decoded bytes: a container or another encoding is read as its own part; text joins
        the one part that holds this text's decoded text (so base64 in base64 is read too);
        anything else is only searched for markings, unless it came from a block too long and
        too well-formed to be words (``strict``): then it must be readable as well."""
        kind = sniff(data[:SNIFF_BYTES])
        if kind != "utf-8" or strict:
            child = self.part.child("base64", lenient=not strict)
            child.feed(data)
            child.finish()
            return
        try:
            text_like = _NOT_TEXT.search(data.decode("utf-8")) is None
        except UnicodeDecodeError:
            text_like = False
        batch = self.decoded_batch if text_like else self.junk_batch
        batch += data + b"\n"
        if len(batch) >= BATCH_BYTES:
            self._flush_decoded()

    def _flush_decoded(self) -> None:
        """Small decoded runs are passed on in batches: each feed is a pass of every pattern."""
        if self.junk_batch:
            self.junk.feed(bytes(self.junk_batch))
            self.junk_batch.clear()
        if self.decoded_batch:
            if self.decoded is None:
                self.decoded = self.part.child("base64", lenient=True)
            self.decoded.feed(bytes(self.decoded_batch))
            self.decoded_batch.clear()


class _LongRun:
    """A base64 run longer than LONG_RUN_CHARS: decoded as it streams into one part."""

    def __init__(self, part: _Part) -> None:
        self.part = part
        self.pending = ""
        self.open = True

    def feed(self, text: str) -> str:
        """Takes the run's chars from the front of ``text``; returns what follows the run."""
        span = _RUN_PREFIX.match(text)
        end = span.end() if span else 0
        self.open = end == len(text)
        chars = self.pending + _compact(text[:end]).replace("=", "").translate(_URLSAFE)
        whole = len(chars) - len(chars) % 4
        self.pending = chars[whole:]
        if whole:
            self.part.feed(base64.b64decode(chars[:whole]))
        return text[end:]

    def finish(self) -> None:
        tail = _b64(self.pending)
        if tail:
            self.part.feed(tail)
        self.part.finish()


def _compact(run: str) -> str:
    return run.replace("\r", "").replace("\n", "")


def _looks_encoded(chars: str) -> bool:
    """Not an ordinary word: a digit, a base64 symbol, or a capital after the first char."""
    return _ENCODED_HINT.search(chars) is not None


def _b64(chars: str) -> bytes | None:
    chars = chars.translate(_URLSAFE)
    extra = len(chars) % 4
    if extra == 1:
        chars = chars[:-1]
    elif extra:
        chars += "=" * (4 - extra)
    if not chars:
        return None
    try:
        return base64.b64decode(chars)
    except (binascii.Error, ValueError):
        return None


def _decoder(codec: str) -> Callable[[bytes, bool], str]:
    decoder = codecs.getincrementaldecoder(codec)(errors="replace")
    return decoder.decode


# -- compressed streams ------------------------------------------------------------------------
_DECOMPRESSORS = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz"}
_Engine = Union["zlib._Decompress", bz2.BZ2Decompressor, lzma.LZMADecompressor]


class _Decompressed:
    """A compressed stream, decompressed piece by piece into one part (every gzip member)."""

    def __init__(self, part: _Part, kind: str) -> None:
        self.part, self.kind = part, kind
        name = part.name[: -len(_DECOMPRESSORS[kind])] if part.name.endswith(_DECOMPRESSORS[kind]) else ""
        self.child = part.child(name or f"{kind}-content")
        self.engine = self._new()
        self.fed = False  # the current engine has had input
        self.failed = False

    def _new(self) -> _Engine:
        if self.kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return bz2.BZ2Decompressor() if self.kind == "bz2" else lzma.LZMADecompressor()

    def feed(self, data: bytes) -> None:
        try:
            while data and not self.failed:
                data = self._step(data)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            self._fail(f"corrupt {self.kind} data ({exc})")

    def _step(self, data: bytes) -> bytes:
        """Decompress ``data``; returns what follows the end of a member (another member)."""
        engine, self.fed = self.engine, True
        if isinstance(engine, bz2.BZ2Decompressor | lzma.LZMADecompressor):
            self._emit(engine.decompress(data, PIECE_BYTES))
            while not engine.eof and not engine.needs_input and not self.failed:
                self._emit(engine.decompress(b"", PIECE_BYTES))
        else:
            self._emit(engine.decompress(data, PIECE_BYTES))
            while engine.unconsumed_tail and not self.failed:
                self._emit(engine.decompress(engine.unconsumed_tail, PIECE_BYTES))
        if engine.eof:
            self.engine, self.fed = self._new(), False
            return engine.unused_data
        return b""

    def _emit(self, out: bytes) -> None:
        if out and not self.failed:
            if self.part.run.expand(self.child.path, len(out)):
                self.child.feed(out)
            else:
                self.failed = True

    def _fail(self, why: str) -> None:
        if not self.failed:
            self.part.run.refuse(self.part.path, why)
        self.failed = True

    def finish(self) -> None:
        if self.fed and not self.failed:
            self._fail(f"truncated {self.kind} data")
        self.child.finish()


# -- archives and documents --------------------------------------------------------------------
class _Buffered:
    """An archive or PDF: kept in memory (up to the limit) and opened when it is complete."""

    def __init__(self, part: _Part, kind: str) -> None:
        self.part, self.kind = part, kind
        self.buffer = bytearray()
        self.too_large = False

    def feed(self, data: bytes) -> None:
        if self.too_large:
            return
        self.buffer += data
        limit = self.part.run.limits.container_bytes
        if len(self.buffer) > limit:
            self.too_large, self.buffer = True, bytearray()
            self.part.run.refuse(self.part.path, f"a {self.kind} larger than {limit} bytes is not opened")

    def finish(self) -> None:
        if self.too_large:
            return
        data, self.buffer = bytes(self.buffer), bytearray()
        {"zip": _open_zip, "tar": _open_tar, "pdf": _open_pdf}[self.kind](self.part, data)


def _read_member(part: _Part, child: _Part, fh: IO[bytes]) -> None:
    while piece := fh.read(PIECE_BYTES):
        if not part.run.expand(child.path, len(piece)):
            break
        child.feed(piece)


def _open_zip(part: _Part, data: bytes) -> None:
    run, names = part.run, part.run.scanner()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        run.refuse(part.path, f"not a readable zip ({exc})")
        return
    with archive:
        names.feed_text(archive.comment.decode("utf-8", "replace") + "\n")
        for info in archive.infolist():
            names.feed_text(info.filename + "\n")
            if info.is_dir():
                continue
            if not run.member(f"{part.path}/{info.filename}"):
                break
            if info.flag_bits & 0x1:
                run.refuse(f"{part.path}/{info.filename}", "encrypted")
                continue
            child = part.child(info.filename)
            try:
                with archive.open(info) as fh:
                    _read_member(part, child, fh)
            except (
                zipfile.BadZipFile,
                NotImplementedError,
                RuntimeError,
                OSError,
                EOFError,
                zlib.error,
            ) as exc:
                run.refuse(child.path, f"cannot be extracted ({exc})")
            child.finish()
    run.collect(names)


def _open_tar(part: _Part, data: bytes) -> None:
    run, names = part.run, part.run.scanner()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                names.feed_text(f"{member.name}\n{member.linkname}\n")
                if not member.isfile():
                    continue
                if not run.member(f"{part.path}/{member.name}"):
                    break
                fh = archive.extractfile(member)
                if fh is not None:
                    child = part.child(member.name)
                    _read_member(part, child, fh)
                    child.finish()
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        run.refuse(part.path, f"not a readable tar ({exc})")
    run.collect(names)


def _open_pdf(part: _Part, data: bytes) -> None:
    """Every page's text, the metadata and the attached files. pypdf raises many kinds of
    error on hostile input; any of them means the document could not be read: refused."""
    from pypdf import PdfReader  # only a guard that meets a PDF pays for the import

    run = part.run
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            run.refuse(part.path, "an encrypted PDF")
            return
        info = part.child("metadata")
        for key, value in (reader.metadata or {}).items():
            info.feed(f"{key}: {value}\n".encode("utf-8", "replace"))
        info.finish()
        for number, page in enumerate(reader.pages, 1):
            path = f"{part.path}/page-{number}"
            if not run.member(path):
                return
            text = page.extract_text()
            if not text.strip() and page.images:
                run.refuse(path, "no text, only images (the guard does not read images)")
            child = part.child(f"page-{number}")
            child.feed(text.encode("utf-8", "replace"))
            child.finish()
        for name, contents in reader.attachments.items():
            for content in contents:
                if run.member(f"{part.path}/{name}") and run.expand(f"{part.path}/{name}", len(content)):
                    child = part.child(name)
                    child.feed(content)
                    child.finish()
    except Exception as exc:  # see the docstring: any failure is "unreadable"
        run.refuse(part.path, f"not a readable PDF ({type(exc).__name__}: {exc})")
