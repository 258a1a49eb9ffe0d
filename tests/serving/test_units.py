"""Pure pieces of the serving package: stop-sequence scanning, the runtime registry, SSE relaying."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.serving.rt_upstream import _rename_event
from enclave.serving.runtimes import RUNTIMES, ModelError, StopScanner, read_model_json


def scan(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    scanner, out = StopScanner(stops), []
    for piece in pieces:
        text, stopped = scanner.feed(piece)
        out.append(text)
        if stopped:
            return out, True
    out.append(scanner.flush())
    return out, False


def test_stop_sequences_across_pieces() -> None:
    # "o" and "o " are held back until "o w" completes the stop sequence, then dropped
    assert scan(list("hello world"), ["o w"]) == (["h", "e", "l", "l", "", "", ""], True)
    # a held-back prefix that turns out not to be a stop sequence is released
    out, stopped = scan(list("abxaby"), ["aby"])
    assert "".join(out) == "abx" and stopped
    assert scan(["ab", "c"], ["zz"]) == (["ab", "c", ""], False)
    assert "".join(scan(["xxENDyy"], ["yy", "END"])[0]) == "xx"  # the earliest stop wins
    assert scan(list("abc"), [""]) == (["a", "b", "c", ""], False)  # an empty stop never matches


def test_registry_and_model_json(tmp_path: Path) -> None:
    assert {"sentence-embeddings", "minilm", "sklearn", "pytorch", "openai-upstream"} <= set(RUNTIMES)
    (tmp_path / "model.json").write_text(json.dumps({"format": "enclave-model/1", "runtime": "minilm"}))
    assert read_model_json(tmp_path, "sentence-embeddings")["runtime"] == "minilm"
    with pytest.raises(ModelError, match="is for runtime"):
        read_model_json(tmp_path, "sklearn")
    (tmp_path / "model.json").write_text(json.dumps({"format": "other/2"}))
    with pytest.raises(ModelError, match="unknown format"):
        read_model_json(tmp_path, "sklearn")


def test_relayed_events_get_the_callers_model_name() -> None:
    event = b'data: {"id":"c1","model":"upstream-name","choices":[]}\n\n'
    renamed = json.loads(_rename_event(event, "mine").decode().removeprefix("data: "))
    assert renamed == {"id": "c1", "model": "mine", "choices": []}
    assert _rename_event(b"data: [DONE]\n\n", "mine") == b"data: [DONE]\n\n"
    assert _rename_event(b": keep-alive\n\n", "mine") == b": keep-alive\n\n"
