"""Generate text from a trained charlm model directory (model.safetensors + vocab.json + model.json).

    python examples/charlm/sample.py --prompt "HAMLET." --length 400   # default dir: a local train.py run
    python examples/charlm/sample.py path/to/model_dir --temperature 0.6 --top-k 10

This is what a serving runtime does with the artifact, with the runtime's own loader: build the
network from model.json's architecture, load the safetensors weights into it (no code from the
file runs), encode the prompt with vocab.json, feed at most block_size ids, sample the next id
from the last position's logits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from enclave.serving.rt_charlm import CharTransformer, architecture, load_weights, read_vocab


def load(model_dir: Path) -> tuple[CharTransformer, list[str], int]:
    meta = json.loads((model_dir / "model.json").read_text())
    chars = read_vocab(model_dir)
    model = load_weights(model_dir / "model.safetensors", len(chars), architecture(meta))
    return model, chars, meta["block_size"]


@torch.no_grad()
def generate(model: CharTransformer, chars: list[str], block_size: int, prompt: str, length: int,
             temperature: float = 0.8, top_k: int = 0, seed: int = 0) -> str:
    lookup = {c: i for i, c in enumerate(chars)}
    unknown = sorted({c for c in prompt if c not in lookup})
    if unknown:
        raise ValueError(f"prompt has characters outside the model's vocabulary: {unknown}")
    ids = [lookup[c] for c in prompt or "\n"]
    rng = torch.Generator().manual_seed(seed)
    for _ in range(length):
        context = torch.tensor([ids[-block_size:]], dtype=torch.long)  # the model sees <= block_size ids
        logits = model(context)[0, -1] / max(temperature, 1e-6)
        if top_k:
            cutoff = logits.topk(min(top_k, len(logits))).values[-1]
            logits = logits.masked_fill(logits < cutoff, float("-inf"))
        ids.append(int(torch.multinomial(logits.softmax(-1), 1, generator=rng)))
    return "".join(chars[i] for i in ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, nargs="?", default=Path(__file__).resolve().parent / "enclave-run" / "output")
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, chars, block_size = load(args.model_dir)
    print(generate(model, chars, block_size, args.prompt, args.length, args.temperature, args.top_k, args.seed))


if __name__ == "__main__":
    main()
