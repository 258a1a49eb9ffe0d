"""The runtimes a replica can serve, behind one small interface, and their registry.

Each runtime lives in its own module, imported only when chosen: an sklearn replica never pays
for torch or sentence-transformers. Runtime methods are synchronous and run on the replica's
single worker thread (see ``streaming``), so a runtime needs no locking of its own.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from starlette.responses import Response

EMBEDDINGS = "embeddings"
COMPLETIONS = "completions"
CHAT = "chat"
MODEL_FORMAT = "enclave-model/1"


class InputError(ValueError):
    """The request's content is unusable: answered as a 400 OpenAI error with this message."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class ModelError(Exception):
    """The model cannot be loaded: the replica exits non-zero with this one-line message."""


@dataclass(frozen=True)
class Options:
    """What the command line tells a runtime's loader."""

    model_dir: Path | None
    upstream: str | None = None
    # The region's fleet entry sets allow_pickle_models (``--allow-pickle``): only then may a
    # runtime fall back to a pickled file when its safe format is absent.
    allow_pickle: bool = False


@dataclass
class Finish:
    """How a generation ended: the value a ``complete()`` generator returns."""

    reason: str = "stop"  # "stop" (natural end or a stop sequence) or "length" (max_tokens)
    extra: dict[str, Any] | None = None  # extra top-level response fields, e.g. {"enclave": {...}}


# complete() yields text pieces as they are produced and returns a Finish.
Generation = Generator[str, None, Finish]


class Runtime:
    """The common interface; a runtime overrides what its ``capabilities`` promise."""

    name: str = ""
    capabilities: frozenset[str] = frozenset()

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def embed(self, texts: list[str]) -> np.ndarray:
        """One row per text, float32, in one batched call."""
        raise NotImplementedError

    def complete(
        self, prompt: str, max_tokens: int | None, temperature: float, stop: Sequence[str], seed: int | None
    ) -> Generation:
        """Yield the completion's text pieces; raise ``InputError`` before the first one for bad input."""
        raise NotImplementedError

    def check_embeddings(self, dimensions: int | None) -> None:
        """Reject embedding options the model cannot honour (raise ``InputError``)."""

    async def aclose(self) -> None:
        """Release what the runtime holds (connections); called once the server has drained."""


class ProxyRuntime(Runtime):
    """A runtime that hands whole requests to another OpenAI-compatible server."""

    async def forward(self, route: str, body: dict[str, Any]) -> Response:
        raise NotImplementedError


Loader = Callable[[Options], Runtime]


def _lazy(module: str, cls: str) -> Loader:
    def load(options: Options) -> Runtime:
        runtime: Runtime = getattr(importlib.import_module(f"enclave.serving.{module}"), cls).load(options)
        return runtime

    return load


RUNTIMES: dict[str, Loader] = {
    "sentence-embeddings": _lazy("rt_sentence", "SentenceEmbeddings"),
    "minilm": _lazy("rt_sentence", "SentenceEmbeddings"),  # the builtin model's id, accepted as a runtime too
    "sklearn": _lazy("rt_sklearn", "SklearnModel"),
    "pytorch": _lazy("rt_charlm", "CharLM"),
    "openai-upstream": _lazy("rt_upstream", "Upstream"),
}
ALIASES = {"minilm": "sentence-embeddings"}


def cpus() -> int:
    """Threads a runtime may use: the job's CPU allocation (``ENCLAVE_CPUS``), 1 by default."""
    try:
        return max(1, int(os.environ.get("ENCLAVE_CPUS", "1")))
    except ValueError:
        return 1


def require_dir(options: Options, runtime: str) -> Path:
    if options.model_dir is None:
        raise ModelError(f"the {runtime} runtime needs --model-dir")
    if not options.model_dir.is_dir():
        raise ModelError(f"model directory {options.model_dir} does not exist")
    return options.model_dir


def pickled(options: Options, path: Path, safe: str) -> Path:
    """``path``, a pickle, when the region allows pickled models; else the refusal (``ModelError``).

    Unpickling runs code the file's author chose (``__reduce__``), so without the region's
    explicit consent a runtime reads only its safe format (``safe``)."""
    if not options.allow_pickle:
        raise ModelError(
            f"{path.name} is a pickle, and loading a pickle runs code its author chose: save the model as "
            f"{safe}, or serve it in a region whose fleet entry sets allow_pickle_models = true"
        )
    return path


def read_model_json(model_dir: Path, runtime: str, required: bool = True) -> dict[str, Any]:
    """``model.json``, checked for the format and for naming this runtime (a mismatch is a deploy error)."""
    path = model_dir / "model.json"
    if not path.is_file():
        if required:
            raise ModelError(f"{path} is missing")
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path} must hold a JSON object")
    if meta.get("format", MODEL_FORMAT) != MODEL_FORMAT:
        raise ModelError(f"{path}: unknown format {meta['format']!r} (expected {MODEL_FORMAT!r})")
    declared = meta.get("runtime")
    if declared is not None and ALIASES.get(declared, declared) != runtime:
        raise ModelError(f"{path} is for runtime {declared!r}, not {runtime!r}")
    return meta


class StopScanner:
    """Cuts streamed text at the first stop sequence, holding back only a tail that could start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buf = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Text that is safe to emit now, and whether a stop sequence was reached."""
        self.buf += piece
        hits = [i for s in self.stops if (i := self.buf.find(s)) >= 0]
        if hits:
            out, self.buf = self.buf[: min(hits)], ""
            return out, True
        hold = 0
        for k in range(min(len(self.buf), max((len(s) for s in self.stops), default=1) - 1), 0, -1):
            if any(s.startswith(self.buf[-k:]) for s in self.stops):
                hold = k
                break
        cut = len(self.buf) - hold
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out, False

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out
