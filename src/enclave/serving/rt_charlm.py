"""``pytorch``: a character-level transformer language model, weights in safetensors.

Model directory: ``model.safetensors`` (the weights, by the parameter names of
:class:`CharTransformer`), ``vocab.json`` (``{"chars": [...]}``, index = token id) and
``model.json`` (``{"runtime": "pytorch", "task": "text-generation", "block_size": int,
"architecture": {"type": "char-transformer", "block_size", "n_layer", "n_head", "n_embd"}}``).
``examples/charlm/train.py`` writes exactly this.

Why this shape: the network is code that ships with Enclave (:class:`CharTransformer`), and the
model file only holds numbers. safetensors is a JSON header and raw tensor bytes, so loading it
runs nothing the model's author wrote, unlike ``torch.load`` (a pickle) or TorchScript (a zip of
pickles and code). The network is built on torch's ``meta`` device and its tensor shapes checked
against the file's before any memory is spent, so a config cannot ask for more than the file
holds. A TorchScript ``model.pt`` is read only where the region's fleet entry allows pickled
models, and only when there is no ``model.safetensors``.

Choices: a prompt character outside the vocabulary is an error (400 naming it), not silently
dropped, since dropping changes what the model conditions on; one token is one character, so
``usage`` counts characters; the context is cropped to the last ``block_size`` characters.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

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
    pickled,
    read_model_json,
    require_dir,
)

DEFAULT_MAX_TOKENS = 64
MAX_TOKENS = 1024
WEIGHTS_FILE = "model.safetensors"
PICKLE_FILE = "model.pt"
ARCHITECTURE = "char-transformer"
ARCH_LIMITS = {"block_size": 1 << 16, "n_layer": 256, "n_head": 256, "n_embd": 1 << 15}


class Block(nn.Module):
    """Pre-norm causal self-attention and MLP (the same module names as ``examples/charlm``)."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(0.0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size(0), x.size(1), x.size(2)
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        hs = c // self.n_head
        q = q.view(b, t, self.n_head, hs).transpose(1, 2)
        k = k.view(b, t, self.n_head, hs).transpose(1, 2)
        v = v.view(b, t, self.n_head, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        out: torch.Tensor = x + self.mlp(self.ln2(x))
        return out


class CharTransformer(nn.Module):
    """forward(idx LongTensor [B, T], T <= block_size) -> logits [B, T, vocab_size]."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList([Block(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        for block in self.blocks:
            x = block(x)
        out: torch.Tensor = self.head(self.ln_f(x))
        return out


def architecture(meta: dict[str, Any]) -> dict[str, int]:
    """model.json's ``architecture``: the network's shape, each number checked."""
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise ModelError(
            "model.json needs an 'architecture' object (type, block_size, n_layer, n_head, n_embd)"
        )
    if arch.get("type", ARCHITECTURE) != ARCHITECTURE:
        raise ModelError(f"model.json architecture type {arch.get('type')!r} is not {ARCHITECTURE!r}")
    shape: dict[str, int] = {}
    for key, limit in ARCH_LIMITS.items():
        value = arch.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            raise ModelError(f"model.json architecture {key} must be an integer from 1 to {limit}")
        shape[key] = value
    if shape["n_embd"] % shape["n_head"]:
        raise ModelError("model.json architecture n_embd must be a multiple of n_head")
    if shape["block_size"] != meta.get("block_size", shape["block_size"]):
        raise ModelError("model.json block_size and architecture.block_size differ")
    return shape


def load_weights(path: Path, vocab_size: int, arch: dict[str, int]) -> CharTransformer:
    """A :class:`CharTransformer` of this shape with the weights in ``path`` (safetensors).

    The file must name exactly the network's parameters, each with its shape: a missing,
    extra or misshapen tensor is refused, never partly loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    with torch.device("meta"):  # shapes only: nothing is allocated until the file is checked
        model = CharTransformer(vocab_size, **arch)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path.name} is not a readable safetensors file: {exc}") from None
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or sorted(n for n in found if found[n] != expected[n])
        raise ModelError(
            f"{path.name} does not match the architecture in model.json "
            f"(vocabulary of {vocab_size}): {', '.join(wrong[:5])}"
        )
    if any(not t.is_floating_point() for t in tensors.values()):
        raise ModelError(f"{path.name} holds non-floating-point weights")
    model.load_state_dict({name: t.float() for name, t in tensors.items()}, strict=True, assign=True)
    return model.eval()


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
        chars = read_vocab(model_dir)
        torch.set_num_threads(cpus())
        path = model_dir / WEIGHTS_FILE
        if path.is_file():
            module: Any = load_weights(path, len(chars), architecture(meta))
        elif (model_dir / PICKLE_FILE).is_file():
            path = pickled(
                options, model_dir / PICKLE_FILE, f"{WEIGHTS_FILE} (safetensors) with its architecture"
            )
            module = _load_torchscript(path)
        else:
            raise ModelError(f"{path} is missing")
        try:
            with torch.inference_mode():
                logits = module(torch.zeros((1, 1), dtype=torch.long))
        except Exception as exc:
            raise ModelError(f"cannot run {path.name}: {exc}") from None
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


def read_vocab(model_dir: Path) -> list[str]:
    try:
        chars = json.loads((model_dir / "vocab.json").read_text())["chars"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"vocab.json must hold {{'chars': [...]}}: {exc}") from None
    if not (isinstance(chars, list) and chars and all(isinstance(c, str) and len(c) == 1 for c in chars)):
        raise ModelError("vocab.json 'chars' must be a non-empty list of single characters")
    if len(set(chars)) != len(chars):
        raise ModelError("vocab.json 'chars' has duplicates")
    return chars


def _load_torchscript(path: Path) -> Any:
    """A TorchScript module: only where the region allows pickled models, inside the confined replica."""
    try:
        with warnings.catch_warnings():
            # torch 2.x deprecates TorchScript in favour of torch.export.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        module.eval()
    except Exception as exc:
        raise ModelError(f"cannot load {path.name}: {exc}") from None
    return module
