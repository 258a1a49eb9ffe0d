"""``pytorch``: a character-level language model saved as TorchScript.

Model directory: ``model.pt`` (TorchScript, ``forward(LongTensor[B, T]) -> logits[B, T, V]`` with
``T <= block_size``), ``vocab.json`` (``{"chars": [...]}``, index = token id) and ``model.json``
(``{"runtime": "pytorch", "task": "text-generation", "block_size": int}``).

Choices: a prompt character outside the vocabulary is an error (400 naming it), not silently
dropped, since dropping changes what the model conditions on; one token is one character, so
``usage`` counts characters; the context is cropped to the last ``block_size`` characters.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from enclave.serving.runtimes import (
    CHAT,
    COMPLETIONS,
    Finish,
    Generation,
    InputError,
    ModelError,
    Options,
    Runtime,
    StopScanner,
    cpus,
    read_model_json,
    require_dir,
)

DEFAULT_MAX_TOKENS = 64
MAX_TOKENS = 1024


class CharLM(Runtime):
    name = "pytorch"
    capabilities = frozenset({COMPLETIONS, CHAT})

    def __init__(self, module: Any, chars: list[str], block_size: int) -> None:
        self.module = module
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}
        self.block_size = block_size

    @classmethod
    def load(cls, options: Options) -> CharLM:
        model_dir = require_dir(options, cls.name)
        meta = read_model_json(model_dir, cls.name)
        block_size = meta.get("block_size")
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
            raise ModelError("model.json needs a positive integer 'block_size'")
        try:
            chars = json.loads((model_dir / "vocab.json").read_text())["chars"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"vocab.json must hold {{'chars': [...]}}: {exc}") from None
        if not (isinstance(chars, list) and chars and all(isinstance(c, str) and len(c) == 1 for c in chars)):
            raise ModelError("vocab.json 'chars' must be a non-empty list of single characters")
        if len(set(chars)) != len(chars):
            raise ModelError("vocab.json 'chars' has duplicates")
        import torch

        torch.set_num_threads(cpus())
        path = model_dir / "model.pt"
        if not path.is_file():
            raise ModelError(f"{path} is missing")
        try:
            with warnings.catch_warnings():
                # TorchScript is the declared format; torch 2.x deprecates it in favour of torch.export.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            module.eval()
            with torch.inference_mode():
                logits = module(torch.zeros((1, 1), dtype=torch.long))
        except Exception as exc:
            raise ModelError(f"cannot load or run {path}: {exc}") from None
        if tuple(logits.shape) != (1, 1, len(chars)):
            raise ModelError(
                f"{path} gives logits of shape {tuple(logits.shape)} for one token; "
                f"expected (1, 1, {len(chars)}) for a {len(chars)}-character vocabulary"
            )
        return cls(module, chars, block_size)

    def count_tokens(self, text: str) -> int:
        return len(text)

    def encode(self, text: str) -> list[int]:
        unknown = sorted({c for c in text if c not in self.index})
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:20])
            raise InputError(f"characters not in the model's vocabulary: {shown}", param="prompt")
        return [self.index[c] for c in text]

    def complete(
        self, prompt: str, max_tokens: int | None, temperature: float, stop: Sequence[str], seed: int | None
    ) -> Generation:
        import torch

        if not prompt:
            raise InputError("the prompt is empty: a character model needs text to continue", param="prompt")
        ids = self.encode(prompt)
        limit = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
        if limit > MAX_TOKENS:
            raise InputError(f"max_tokens must be at most {MAX_TOKENS}", param="max_tokens")
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)  # torch takes unsigned 64-bit seeds
        scanner = StopScanner(stop)
        context = torch.tensor([ids[-self.block_size :]], dtype=torch.long)
        with torch.inference_mode():
            for _ in range(limit):
                logits = self.module(context)[0, -1].float()
                if temperature == 0:
                    token = int(torch.argmax(logits))
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                context = torch.cat([context, torch.tensor([[token]])], dim=1)[:, -self.block_size :]
                text, stopped = scanner.feed(self.chars[token])
                if text:
                    yield text
                if stopped:
                    return Finish("stop")
        rest = scanner.flush()
        if rest:
            yield rest
        return Finish("length")
