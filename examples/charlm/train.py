"""Train a small character-level transformer language model under the Enclave training-job contract.

The platform runs `python train.py` with ENCLAVE_* variables set (see README.md); by hand:

    python examples/charlm/train.py                    # defaults: a few minutes on 2 CPU cores
    python examples/charlm/train.py --hp preset=smoke  # under a minute

Text comes from the job's first dataset, else --data, else data/shakespeare.txt beside this
script. The last `val_fraction` of the text is held out. Checkpoints (model, optimiser, step,
RNG states) go to ENCLAVE_CHECKPOINT_DIR every `ckpt_every` steps and on SIGTERM (then exit
143); a restarted job resumes from the step it saved and continues the exact same run.

The model is written as safetensors (weights only) plus the architecture in model.json: loading
it runs no code from the file, unlike torch.save / TorchScript (pickles). The `pytorch` serving
runtime builds the same CharTransformer (enclave/serving/rt_charlm.py) and loads the weights in.
Checkpoints are safetensors too (tensors, with step, vocabulary and optimiser settings as JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

DEFAULTS = {
    "preset": "default",  # "smoke" swaps in SMOKE below; explicit hyperparameters still win
    "steps": 600,
    "batch_size": 32,
    "block_size": 128,
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "dropout": 0.0,  # runs this short do not overfit; dropout only slowed learning (2.16 vs 2.00 nats)
    "lr": 3e-3,
    "warmup": 60,
    "weight_decay": 0.01,
    "val_fraction": 0.1,
    "eval_every": 100,
    "eval_batches": 8,
    "log_every": 25,
    "ckpt_every": 100,
    "seed": 1337,
}
SMOKE = {"steps": 300, "block_size": 64, "n_layer": 2, "n_embd": 64, "warmup": 30}
ARCH_KEYS = ("block_size", "n_layer", "n_head", "n_embd", "dropout")
DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "shakespeare.txt"


# --- training-job contract (kept in this file: the platform ships the script alone) ---------

class Contract:
    """Directories, metrics stream and SIGTERM flag of one training job (local fallbacks)."""

    def __init__(self) -> None:
        local = Path(__file__).resolve().parent / "enclave-run"  # only when run by hand, without the platform
        env = os.environ
        self.output = Path(env.get("ENCLAVE_OUTPUT_DIR") or local / "output")
        self.checkpoints = Path(env.get("ENCLAVE_CHECKPOINT_DIR") or local / "checkpoints")
        self.metrics_path = Path(env.get("ENCLAVE_METRICS_FILE") or local / "metrics.jsonl")
        self.cpus = int(env.get("ENCLAVE_CPUS") or os.cpu_count() or 1)
        self.datasets = json.loads(env.get("ENCLAVE_DATASETS") or "{}")
        for d in (self.output, self.checkpoints, self.metrics_path.parent):
            d.mkdir(parents=True, exist_ok=True)
        self.stop_requested = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        # Only set a flag: the loop checkpoints after the current step and exits 143.
        print("SIGTERM received: will checkpoint and exit", flush=True)
        self.stop_requested = True

    def log(self, step: int, **values: float) -> None:
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n")


def hparams(cli_overrides: list[str]) -> dict:
    """DEFAULTS (or SMOKE), then ENCLAVE_HPARAMS, then --hp k=v; values coerced to the defaults' types."""
    raw = json.loads(os.environ.get("ENCLAVE_HPARAMS") or "{}")
    raw.update(kv.split("=", 1) for kv in cli_overrides)
    hp = dict(DEFAULTS)
    if raw.get("preset") == "smoke":
        hp.update(SMOKE)
    for key, value in raw.items():
        if key not in DEFAULTS:
            print(f"ignoring unknown hyperparameter {key!r}", flush=True)
            continue
        hp[key] = type(DEFAULTS[key])(value)
    return hp


# --- model: a GPT-style decoder; the serving runtime has the same modules and names ----------

class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size(0), x.size(1), x.size(2)
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        hs = c // self.n_head
        q = q.view(b, t, self.n_head, hs).transpose(1, 2)  # [B, heads, T, head_size]
        k = k.view(b, t, self.n_head, hs).transpose(1, 2)
        v = v.view(b, t, self.n_head, hs).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + F.dropout(self.proj(y.transpose(1, 2).reshape(b, t, c)), p, self.training)
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """forward(idx LongTensor [B, T], T <= block_size) -> logits [B, T, vocab_size]."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(n_embd, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


# --- data and baselines ----------------------------------------------------------------------

def text_path(cli_path: Path | None, contract: Contract) -> Path:
    if contract.datasets:
        return Path(next(iter(contract.datasets.values())))
    return cli_path or DEFAULT_DATA


def split(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    # A contiguous tail, not random windows: random windows would overlap the training text.
    n_val = int(len(ids) * val_fraction)
    return ids[:-n_val], ids[-n_val:]


def baselines(train: torch.Tensor, val: torch.Tensor, vocab_size: int) -> dict[str, float]:
    """Held-out nats/char of models with no learning beyond counting (add-one smoothing)."""
    targets, prev = val[1:], val[:-1]
    unigram = torch.bincount(train, minlength=vocab_size).double() + 1
    unigram_nll = -(unigram / unigram.sum()).log()[targets].mean()
    pairs = torch.bincount(train[:-1] * vocab_size + train[1:], minlength=vocab_size**2).double()
    bigram = pairs.view(vocab_size, vocab_size) + 1
    bigram_nll = -(bigram / bigram.sum(1, keepdim=True)).log()[prev, targets].mean()
    return {"uniform_loss": math.log(vocab_size), "unigram_loss": unigram_nll.item(), "bigram_loss": bigram_nll.item()}


def batch(windows: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    chunk = windows[rows]  # windows: [N, block_size + 1] view of the text
    return chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def mean_loss(model: nn.Module, windows: torch.Tensor, rows: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        x, y = batch(windows, rows[start:start + batch_size])
        logits = model(x)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


# --- training --------------------------------------------------------------------------------

def lr_at(step: int, hp: dict) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < hp["warmup"]:
        return hp["lr"] * (step + 1) / hp["warmup"]
    progress = (step - hp["warmup"]) / max(1, hp["steps"] - hp["warmup"])
    return hp["lr"] * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


class Run:
    """Everything a checkpoint holds: model, optimiser, step and both RNG streams."""

    def __init__(self, path: Path, chars: list[str], hp: dict) -> None:
        self.path, self.chars = path, chars
        saved = load_checkpoint(path) if path.exists() else None
        if saved and saved["chars"] != chars:
            sys.exit("checkpoint was trained on a different vocabulary; refusing to resume")
        self.arch = saved["arch"] if saved else {k: hp[k] for k in ARCH_KEYS}  # a resumed run keeps its shape
        self.model = CharTransformer(len(chars), **self.arch)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=hp["lr"], betas=(0.9, 0.99),
                                     weight_decay=hp["weight_decay"])
        self.sampler = torch.Generator().manual_seed(hp["seed"])  # which training windows each step sees
        self.step = 0
        if saved:
            self.model.load_state_dict(saved["model"])
            self.opt.load_state_dict(saved["optimizer"])
            self.sampler.set_state(saved["sampler_rng"])
            torch.set_rng_state(saved["torch_rng"])  # dropout masks continue where they left off
            self.step = saved["step"]

    def save(self) -> None:
        state = {"step": self.step, "arch": self.arch, "chars": self.chars, "model": self.model.state_dict(),
                 "optimizer": self.opt.state_dict(), "sampler_rng": self.sampler.get_state(),
                 "torch_rng": torch.get_rng_state()}
        tmp = self.path.with_suffix(".tmp")
        save_checkpoint(state, tmp)
        os.replace(tmp, self.path)  # atomic: a kill mid-write leaves the previous checkpoint intact


# A checkpoint as safetensors: every tensor by a dotted name, everything else as JSON metadata.
def save_checkpoint(state: dict, path: Path) -> None:
    opt = state["optimizer"]
    tensors = {f"model.{k}": v for k, v in state["model"].items()}
    for index, values in opt["state"].items():
        for key, value in values.items():
            tensors[f"opt.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.sampler"], tensors["rng.torch"] = state["sampler_rng"], state["torch_rng"]
    meta = {"step": state["step"], "arch": state["arch"], "chars": state["chars"],
            "param_groups": opt["param_groups"]}
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"run": json.dumps(meta)})


def load_checkpoint(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["run"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no iterator)
    opt_state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, index, key = name.split(".", 2)
            opt_state.setdefault(int(index), {})[key] = value
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    return {"step": meta["step"], "arch": meta["arch"], "chars": meta["chars"], "model": model,
            "optimizer": {"state": opt_state, "param_groups": meta["param_groups"]},
            "sampler_rng": tensors["rng.sampler"], "torch_rng": tensors["rng.torch"]}


def train_steps(run: Run, train: torch.Tensor, val: torch.Tensor, hp: dict, contract: Contract) -> bool:
    """Train up to hp["steps"]; returns False if SIGTERM stopped it (after checkpointing)."""
    block = run.arch["block_size"]
    train_windows = train.unfold(0, block + 1, 1)
    val_windows = val.unfold(0, block + 1, block)
    probe_rows = torch.linspace(0, len(val_windows) - 1, hp["eval_batches"] * hp["batch_size"]).long()
    run.model.train()
    running, seen, t_log = 0.0, 0, time.perf_counter()
    while run.step < hp["steps"]:
        for group in run.opt.param_groups:
            group["lr"] = lr_at(run.step, hp)
        rows = torch.randint(len(train_windows), (hp["batch_size"],), generator=run.sampler)
        x, y = batch(train_windows, rows)
        loss = F.cross_entropy(run.model(x).flatten(0, 1), y.flatten())
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
        run.opt.step()
        run.step += 1
        running, seen = running + loss.item(), seen + 1

        if run.step % hp["log_every"] == 0 or run.step == hp["steps"]:
            values = {"loss": running / seen, "lr": lr_at(run.step - 1, hp)}
            if run.step % hp["eval_every"] == 0 or run.step == hp["steps"]:
                values["val_loss"] = mean_loss(run.model, val_windows, probe_rows, hp["batch_size"])
            contract.log(run.step, **values)
            shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            rate = seen / (time.perf_counter() - t_log)
            print(f"step {run.step:5d}/{hp['steps']}  {shown}  ({rate:.1f} steps/s)", flush=True)
            running, seen, t_log = 0.0, 0, time.perf_counter()
        if contract.stop_requested:
            run.save()
            print(f"checkpoint saved at step {run.step}; exiting 143", flush=True)
            return False
        if run.step % hp["ckpt_every"] == 0:
            run.save()
    run.save()
    return True


def final_metrics(run: Run, train: torch.Tensor, val: torch.Tensor) -> dict[str, float]:
    """Loss over the whole held-out tail (non-overlapping windows: each char scored once) vs baselines."""
    block = run.arch["block_size"]
    val_windows = val.unfold(0, block + 1, block)
    val_loss = mean_loss(run.model, val_windows, torch.arange(len(val_windows)), 64)
    metrics = {"val_loss": val_loss, **baselines(train, val, len(run.chars))}
    for name in ("val", "uniform", "unigram", "bigram"):
        metrics[f"{name}_bpc"] = metrics[f"{name}_loss"] / math.log(2)
    return {**metrics, "steps": float(run.step), "parameters": float(sum(p.numel() for p in run.model.parameters()))}


def export(out: Path, model: CharTransformer, chars: list[str], arch: dict, metrics: dict, hp: dict) -> None:
    model.eval()
    # Weights only, by parameter name; the network itself is the code the runtime ships.
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "vocab.json").write_text(json.dumps({"chars": chars}) + "\n")
    card = {
        "format": "enclave-model/1",
        "runtime": "pytorch",
        "framework": f"pytorch {torch.__version__.split('+')[0]}",
        "task": "text-generation",
        "block_size": arch["block_size"],
        "vocab_size": len(chars),
        "architecture": {"type": "char-transformer", **arch},
        "metrics": metrics,
        "hparams": hp,
    }
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help=f"UTF-8 text file (default: the job's dataset, else {DEFAULT_DATA})")
    parser.add_argument("--hp", action="append", default=[], metavar="K=V", help="override a hyperparameter")
    args = parser.parse_args()
    t_start = time.perf_counter()
    contract = Contract()
    hp = hparams(args.hp)
    torch.set_num_threads(contract.cpus)
    torch.manual_seed(hp["seed"])

    path = text_path(args.data, contract)
    if not path.exists():
        sys.exit(f"no text at {path}: pass --data FILE or attach a text dataset to the job")
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    ids = _codes(text, chars)
    train, val = split(ids, hp["val_fraction"])
    print(f"{path}: {len(text):,} chars, vocab {len(chars)}, train {len(train):,} / val {len(val):,}", flush=True)

    run = Run(contract.checkpoints / "charlm.safetensors", chars, hp)
    if run.step:
        print(f"resumed from {run.path} at step {run.step}", flush=True)
    n_params = sum(p.numel() for p in run.model.parameters())
    print(f"model: {n_params:,} parameters, {run.arch}; {contract.cpus} threads", flush=True)
    if not train_steps(run, train, val, hp, contract):
        return 143

    metrics = {**final_metrics(run, train, val), "wall_seconds": time.perf_counter() - t_start}
    contract.log(run.step, **{f"final_{k}": v for k, v in metrics.items()})
    export(contract.output, run.model, chars, run.arch, metrics, hp)
    print(f"held-out loss {metrics['val_loss']:.4f} nats/char = {metrics['val_bpc']:.3f} bits/char; baselines: "
          f"uniform {metrics['uniform_loss']:.3f}, unigram {metrics['unigram_loss']:.3f}, "
          f"bigram {metrics['bigram_loss']:.3f} nats/char", flush=True)
    print(f"model written to {contract.output} ({metrics['wall_seconds']:.0f}s)", flush=True)
    return 0


def _codes(text: str, chars: list[str]) -> torch.Tensor:
    lookup = {c: i for i, c in enumerate(chars)}
    return torch.tensor([lookup[c] for c in text], dtype=torch.long)


if __name__ == "__main__":
    sys.exit(main())
