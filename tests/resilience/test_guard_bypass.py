"""Attacks on the cross-domain guard's scan (issue 12, finding 5), run for real.

Each bypass that once left a SECRET//SI document ``pending`` is tried again: through the API
(a transfer request must now be ``refused``, nothing copied) and at the scanner, with
hypothesis-made variants (random case, zero-width characters, encodings, archives inside
archives). Content the guard cannot read is refused, and released only after a release
authority vouches for it with a written reason (audited).
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import lzma
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from enclave.guard_content import Limits, inspect
from enclave.guard_scan import MarkingScanner
from enclave.labels import DEFAULT_SCHEME
from enclave.store.models import Artifact
from tests.api.conftest import World, world  # noqa: F401 - the fixture, for these tests
from tests.api.helpers import (
    assert_problem,
    audit_events_after,
    audit_seq,
    blob_files,
    listed_ids,
    ok,
    request_transfer,
    unchanged,
    upload,
)

S = DEFAULT_SCHEME
SCANNER = MarkingScanner(S)
UNCLASSIFIED = S.bottom
DOC = "Routine notes.\nSee the annex SECRET//SI for details.\nEnd.\n"


def findings(content: bytes, limits: Limits = Limits()) -> set[str]:
    return {f.label.marking for f in inspect(SCANNER, content, limits).above(UNCLASSIFIED)}


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def tarred(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docx(*runs: str) -> bytes:
    """A Word document whose paragraph is split into runs (as Word writes edited text)."""
    body = "".join(f"<w:r><w:t>{r}</w:t></w:r>" for r in runs)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
        f'wordprocessingml/2006/main"><w:body><w:p>{body}</w:p></w:body></w:document>'
    )
    return zipped(
        {
            "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
            "word/document.xml": xml.encode(),
        }
    )


def pdf(text: str) -> bytes:
    """A one-page PDF whose text is in a compressed content stream (not in the raw bytes)."""
    stream = zlib.compress(f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET".encode())
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# Every bypass of finding 5, and the documents the issue names.
BYPASSES: dict[str, bytes] = {
    "utf-16le": DOC.encode("utf-16-le"),
    "utf-16 with BOM": DOC.encode("utf-16"),
    "utf-16be": DOC.encode("utf-16-be"),
    "utf-32": DOC.encode("utf-32-le"),
    "base64": base64.b64encode(DOC.encode()),
    "base64 wrapped in text": b"attachment:\n" + base64.encodebytes(DOC.encode() * 5) + b"-- end\n",
    "gzip": gzip.compress(DOC.encode()),
    "zip": zipped({"notes.txt": DOC.encode()}),
    "lower case": DOC.lower().encode(),
    "cyrillic look-alikes": DOC.replace("SECRET", "ЅЕСRЕТ").encode(),
    "zero-width space": DOC.replace("SECRET", "SEC\u200bRET").encode(),
    "nbsp before //": DOC.replace("SECRET//", "SECRET\u00a0//").encode(),
    "single slash": DOC.replace("SECRET//SI", "SECRET/SI").encode(),
    "inline": b"This report is classified SECRET. Handle it accordingly.\n",
    "pdf": pdf("Annex SECRET//SI follows"),
    "docx": docx("Annex SEC", "RET//", "SI follows"),
    "tar.gz of a zip": gzip.compress(tarred({"a/b.zip": zipped({"c.txt": DOC.encode()})})),
    "bzip2": bz2.compress(DOC.encode()),
    "xz": lzma.compress(DOC.encode()),
    "base64 of gzip": base64.b64encode(gzip.compress(DOC.encode())),
    "hex": DOC.encode().hex().encode(),
    "html entities": b"<p>S&#69;CRET//SI</p>",
}


@pytest.mark.parametrize("content", BYPASSES.values(), ids=BYPASSES.keys())
def test_each_bypass_is_found_by_the_scanner(content: bytes) -> None:
    verdict = inspect(SCANNER, content)
    assert verdict.above(UNCLASSIFIED), verdict
    assert verdict.readable, verdict.unreadable  # found by reading it, not refused as unreadable
    assert verdict.sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("content", BYPASSES.values(), ids=BYPASSES.keys())
def test_each_bypass_is_refused_through_the_api(world: World, content: bytes) -> None:  # noqa: F811
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, content)
    blobs, seq = blob_files(ctx), audit_seq(ctx)
    t = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")
    assert t["state"] == "refused", t
    assert "markings above UNCLASSIFIED" in t["reason"]
    assert audit_events_after(ctx, seq) == ["transfer.requested", "transfer.scan_refused"]
    with unchanged(ctx):  # a marking is final: no override, no review, no release
        r = client.post(f"/v1/transfers/{t['id']}/override", json={"reason": "trust me"}, headers=world.bob_s)
        assert_problem(r, 409)
        assert_problem(client.post(f"/v1/transfers/{t['id']}/approve", headers=world.bob_s), 409)
    assert blob_files(ctx) == blobs
    assert listed_ids(client, "/v1/artifacts", world.dave_u) == set()


INNOCUOUS = [
    b"Quarterly wind tunnel summary: drag down 4%.\n",
    b"def half(x):\n    return x // 2 + S // 2  # floor division\n",
    b"The secret sauce; Top Secret is a film; the Secretary of Energy.\n",
    b"Sign with S/MIME. Use the file(s) in /srv/data/secret/keys.\n",
    b"sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n",
    b"The mail was classified as spam. UNCLASSIFIED\n",
    "Ünïcödé text, naïve café, 東京, emoji 🙂 — fine.\n".encode(),
    "UTF-16 prose without markings".encode("utf-16"),
    zipped({"a.txt": b"hello", "b/c.xml": b"<a>ordinary</a>"}),
    gzip.compress(b"just logs\n" * 1000),
    base64.b64encode(b"plain words in base64, nothing else"),
    pdf("Nothing to see here"),
    docx("Nothing ", "to see"),
]


@pytest.mark.parametrize("content", INNOCUOUS)
def test_ordinary_text_and_code_are_neither_marked_nor_unreadable(content: bytes) -> None:
    verdict = inspect(SCANNER, content)
    assert (verdict.above(UNCLASSIFIED), verdict.unreadable) == ([], ())


# -- hypothesis variants -------------------------------------------------------------------------
MARKINGS = ["SECRET//SI", "TOP SECRET//TK", "(S//SI)", "SECRET/SI", "TS//SI"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
SPACES = [" ", "\u00a0", "\u2009", "\u202f", "\u3000"]


@st.composite
def disguised(draw: st.DrawFn) -> tuple[str, str]:
    """A marking in random case (aliases and compartments of the scheme keep their meaning in
    any case), with zero-width characters and odd spaces inserted."""
    marking = draw(st.sampled_from(MARKINGS))
    out = []
    for char in marking:
        out.append(char.lower() if draw(st.booleans()) else char)
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(st.sampled_from(ZERO_WIDTH)))
    return marking, "".join(out).replace(" ", draw(st.sampled_from(SPACES)))


def _wrap_encoding(data: str, how: str) -> bytes:
    encoded = {
        "utf-8": data.encode(),
        "utf-16": data.encode("utf-16"),
        "utf-16-le": data.encode("utf-16-le"),
        "utf-16-be": data.encode("utf-16-be"),
        "utf-32": data.encode("utf-32"),
    }[how]
    return encoded


CONTAINERS: dict[str, Callable[[bytes], bytes]] = {
    "zip": lambda b: zipped({"x/doc.txt": b}),
    "stored zip": lambda b: zipped({"doc.txt": b}, zipfile.ZIP_STORED),
    "tar": lambda b: tarred({"doc.txt": b}),
    "gzip": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "base64": base64.b64encode,
    "urlsafe base64 in text": lambda b: b"data=" + base64.urlsafe_b64encode(b) + b";\n",
}


@settings(max_examples=150, deadline=None)
@given(
    disguised(),
    st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]),
    st.lists(st.sampled_from(sorted(CONTAINERS)), max_size=4),
    st.text(alphabet="abcdefgh ,.\n", max_size=200),
)
def test_disguised_markings_in_any_encoding_and_nesting_are_found(
    marking: tuple[str, str], encoding: str, nesting: list[str], filler: str
) -> None:
    expected, text = marking
    content = _wrap_encoding(f"{filler}\n{text} annex\n{filler}", encoding)
    for container in nesting:
        content = CONTAINERS[container](content)
    assert S.parse(_canonical(expected)).marking in findings(content), (expected, text, encoding, nesting)


def _canonical(marking: str) -> str:
    body = marking.strip("()").replace("TS//", "TOP SECRET//").replace("S//", "SECRET//")
    return body.replace("SECRET/SI", "SECRET//SI") if "//" not in body else body


# -- fail closed ---------------------------------------------------------------------------------
UNREADABLE: dict[str, bytes] = {
    "random binary": os.urandom(20_000),
    "png header": b"\x89PNG\r\n\x1a\n" + os.urandom(2000),
    "text then binary": b"harmless preface\n" * 100 + os.urandom(500),
    "encrypted zip member": b"",  # filled below
    "truncated gzip": gzip.compress(os.urandom(5000))[:-20],
    "corrupt zip": b"PK\x03\x04" + os.urandom(300),
    "long base64 of binary": b"blob: " + base64.b64encode(os.urandom(3000)) + b"\n",
}
# A zip whose member claims encryption (the flag is all the guard needs to refuse it).
_enc = bytearray(zipped({"secret.txt": b"x" * 100}, zipfile.ZIP_STORED))
_enc[6] |= 0x1  # local header flag bits
_enc[_enc.rindex(b"PK\x01\x02") + 8] |= 0x1  # central directory flag bits
UNREADABLE["encrypted zip member"] = bytes(_enc)


@pytest.mark.parametrize("content", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_what_cannot_be_read_as_text_is_unreadable(content: bytes) -> None:
    assert not inspect(SCANNER, content).readable


def test_a_zip_bomb_ends_the_scan_with_a_refusal_not_exhausted_memory() -> None:
    bomb = zipped({f"{i}.txt": b"\0" * (8 << 20) for i in range(4)})  # 32 MiB in ~32 KiB
    assert len(bomb) < 200_000
    verdict = inspect(SCANNER, bomb, Limits(expanded_bytes=10 << 20))
    assert any("expands past" in why for why in verdict.unreadable), verdict.unreadable


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    content = DOC.encode()
    for _ in range(5):
        content = gzip.compress(content)
    assert findings(content) == {"SECRET//SI"}
    shallow = inspect(SCANNER, content, Limits(depth=3))
    assert any("nested more than 3" in why for why in shallow.unreadable)


def test_a_container_larger_than_the_limit_is_refused_unopened() -> None:
    content = zipped({"doc.txt": os.urandom(1 << 16)}, zipfile.ZIP_STORED)
    verdict = inspect(SCANNER, content, Limits(container_bytes=1 << 15))
    assert any("is not opened" in why for why in verdict.unreadable)


# -- the override, end to end --------------------------------------------------------------------
def test_unreadable_content_is_refused_then_released_only_after_an_audited_override(
    world: World,  # noqa: F811
) -> None:
    client, ctx = world.client, world.ctx
    binary = os.urandom(4096)
    art = upload(client, world.alice_s, binary, name="weights.bin")
    seq = audit_seq(ctx)
    t = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")
    tid = t["id"]
    assert t["state"] == "refused"
    assert t["reason"].startswith("the guard cannot read the content as text")
    assert audit_events_after(ctx, seq) == ["transfer.requested", "transfer.scan_refused"]
    blobs = blob_files(ctx)

    # Not without a reason, not by the requester, not by someone who is no release authority.
    with unchanged(ctx):
        for bad in ({}, {"reason": ""}, {"reason": "x" * 4001}, {"reason": "ok", "extra": 1}):
            assert_problem(client.post(f"/v1/transfers/{tid}/override", json=bad, headers=world.bob_s), 422)
        assert_problem(
            client.post(f"/v1/transfers/{tid}/override", json={"reason": "  "}, headers=world.bob_s), 422
        )
    with unchanged(ctx, audit=("access.denied",) * 2):
        why = {"reason": "model weights, reviewed offline"}
        assert_problem(client.post(f"/v1/transfers/{tid}/override", json=why, headers=world.alice_s), 403)
        assert_problem(client.post(f"/v1/transfers/{tid}/override", json=why, headers=world.dave_u), 404)
    assert ok(client.get(f"/v1/transfers/{tid}", headers=world.alice_s))["state"] == "refused"

    # Bob vouches for it: audited with his reason; it counts as his approval; pending again.
    seq = audit_seq(ctx)
    reason = "float32 weights of the wind model; checked with the partner's tool, ticket 4411"
    after = ok(client.post(f"/v1/transfers/{tid}/override", json={"reason": reason}, headers=world.bob_s))
    assert after["state"] == "pending"
    assert [(r["reviewer"], r["decision"], r["comment"]) for r in after["reviews"]] == [
        ("bob", "override", reason)
    ]
    assert audit_events_after(ctx, seq) == ["transfer.scan_overridden", "transfer.approved"]
    assert blob_files(ctx) == blobs
    with unchanged(ctx):  # once is enough; bob cannot also approve
        assert_problem(
            client.post(f"/v1/transfers/{tid}/override", json={"reason": reason}, headers=world.bob_s), 409
        )
        assert_problem(client.post(f"/v1/transfers/{tid}/approve", headers=world.bob_s), 409)

    # A second, distinct authority approves: released, and the copy is the bytes scanned.
    seq = audit_seq(ctx)
    done = ok(client.post(f"/v1/transfers/{tid}/approve", headers=world.carol_s))
    assert done["state"] == "released"
    assert audit_events_after(ctx, seq) == ["transfer.approved", "transfer.released", "artifact.created"]
    copy = ok(client.get(f"/v1/artifacts/{done['released_artifact_id']}", headers=world.dave_u))
    assert copy["sha256"] == hashlib.sha256(binary).hexdigest()
    assert client.get(f"/v1/artifacts/{copy['id']}/content", headers=world.dave_u).content == binary


def test_an_override_never_covers_a_marking_or_a_review_refusal(world: World) -> None:  # noqa: F811
    client, ctx = world.client, world.ctx
    # Binary with a marking in it: refused for the marking, which no override lifts.
    marked = upload(client, world.alice_s, os.urandom(2000) + b" SECRET//SI " + os.urandom(2000))
    t = request_transfer(client, world.alice_s, marked["id"], "UNCLASSIFIED")
    assert t["state"] == "refused" and "markings above" in t["reason"]
    # Refused by a reviewer: final, even for content the guard could not read... after override.
    art = upload(client, world.alice_s, os.urandom(3000))
    tid = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")["id"]
    ok(client.post(f"/v1/transfers/{tid}/override", json={"reason": "checked"}, headers=world.bob_s))
    ok(client.post(f"/v1/transfers/{tid}/refuse", json={"comment": "no"}, headers=world.carol_s))
    with unchanged(ctx):
        for who in (world.bob_s, world.carol_s):
            r = client.post(f"/v1/transfers/{t['id']}/override", json={"reason": "x"}, headers=who)
            assert_problem(r, 409)
            r = client.post(f"/v1/transfers/{tid}/override", json={"reason": "x"}, headers=who)
            assert_problem(r, 409)


def test_release_refuses_content_that_is_not_what_was_recorded(world: World) -> None:  # noqa: F811
    """The release reads the blob once; what it scanned must be the artifact's recorded bytes
    (SHA-256), or nothing is copied."""
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, b"clean text\n" * 10)
    tid = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")["id"]
    ok(client.post(f"/v1/transfers/{tid}/approve", headers=world.bob_s))
    with ctx.sessions() as session, session.begin():
        session.execute(update(Artifact).where(Artifact.id == art["id"]).values(sha256="0" * 64))
    blobs = blob_files(ctx)
    assert_problem(client.post(f"/v1/transfers/{tid}/approve", headers=world.carol_s), 500)
    assert ok(client.get(f"/v1/transfers/{tid}", headers=world.alice_s))["state"] == "approved"
    assert blob_files(ctx) == blobs
    assert listed_ids(client, "/v1/artifacts", world.dave_u) == set()
