"""examples/charlm: ships real text, learns better than counting, exports safetensors that the pytorch
runtime serves with the same network, resumes exactly."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file

from enclave import archive
from tests.examples.conftest import EXAMPLES, Job, assert_metrics_well_formed, load_example
from tests.serving.conftest import start_replica

TEXT = EXAMPLES / "charlm" / "data" / "shakespeare.txt"
# Small enough to run a few hundred steps in seconds; too small to learn much (not the point there).
# Dropout on, so that an exact resume also needs the dropout RNG restored.
TINY = {
    "steps": 300,
    "batch_size": 16,
    "block_size": 32,
    "n_layer": 1,
    "n_embd": 32,
    "dropout": 0.1,
    "warmup": 10,
    "log_every": 10,
    "eval_every": 100,
    "ckpt_every": 1000,
}
sample = load_example("charlm/sample.py", "charlm_sample")


@pytest.fixture
def text_dataset(tmp_path: Path) -> dict[str, Path]:
    """The shipped text uploaded as a dataset: one file in a data directory, named by the dataset."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(TEXT, data / "shakespeare.txt")
    return {"shakespeare.txt": data / "shakespeare.txt"}


def test_shipped_corpus_is_real_sized_and_documented() -> None:
    assert 200_000 <= TEXT.stat().st_size <= 2_000_000
    text = TEXT.read_text(encoding="utf-8")
    assert "To be, or not to be" in text
    source = (TEXT.parent / "SOURCE.md").read_text()
    assert "public domain" in source.lower() and "Project Gutenberg" in source


def held_out_nll(model_dir: Path, windows: int = 24) -> tuple[float, float]:
    """Score the exported model ourselves on the text's held-out tail; also a unigram model fitted on the rest."""
    model, chars, block = sample.load(model_dir)
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in TEXT.read_text(encoding="utf-8")])
    cut = len(ids) - len(ids) // 10
    train, val = ids[:cut], ids[cut:]
    starts = torch.linspace(0, len(val) - block - 2, windows).long()
    chunks = torch.stack([val[s : s + block + 1] for s in starts])
    with torch.no_grad():
        logits = model(chunks[:, :-1])
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), chunks[:, 1:].flatten()).item()
    freq = torch.bincount(train, minlength=len(chars)).double() + 1
    unigram = -(freq / freq.sum()).log()[chunks[:, 1:].flatten()].mean().item()
    return nll, unigram


def test_smoke_run_beats_the_unigram_baseline_and_exports_safetensors(job_factory, text_dataset) -> None:
    job = job_factory(text_dataset, {"preset": "smoke"})
    rc, out = job.run("charlm/train.py")
    assert rc == 0, out

    card = job.model_card()
    assert card["format"] == "enclave-model/1" and card["runtime"] == "pytorch"
    assert card["task"] == "text-generation" and card["framework"].startswith("pytorch ")
    assert card["block_size"] == 64
    m = card["metrics"]
    assert m["uniform_loss"] == pytest.approx(math.log(card["vocab_size"]))
    assert m["unigram_loss"] < m["uniform_loss"]
    assert m["val_loss"] < m["unigram_loss"] - 0.3
    assert m["val_bpc"] == pytest.approx(m["val_loss"] / math.log(2))
    assert m["steps"] == 300

    rows = job.metrics()
    assert_metrics_well_formed(rows)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(steps) and steps[-1] == 300
    assert rows[-1]["final_val_loss"] == pytest.approx(m["val_loss"])

    # The artefact as serving sees it: weights + architecture, forward [B, T] ids -> [B, T, V], T <= block_size.
    assert sorted(p.name for p in job.output.iterdir()) == ["model.json", "model.safetensors", "vocab.json"]
    model, chars, block = sample.load(job.output)
    assert len(chars) == card["vocab_size"] and all(len(c) == 1 for c in chars)
    for t in (1, 5, block):
        assert model(torch.zeros(2, t, dtype=torch.long)).shape == (2, t, len(chars))
    nll, unigram = held_out_nll(job.output)
    assert nll < unigram - 0.3

    text = sample.generate(model, chars, block, "ROMEO.", length=150, seed=1)
    assert text.startswith("ROMEO.") and len(text) == 156 and set(text) <= set(chars)


def test_sample_script_runs_from_the_command_line(job_factory, text_dataset) -> None:
    job = job_factory(text_dataset, {**TINY, "steps": 20})
    assert job.run("charlm/train.py")[0] == 0
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "charlm" / "sample.py"),
            str(job.output),
            "--prompt",
            "KING",
            "--length",
            "40",
            "--top-k",
            "5",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("KING") and len(out.rstrip("\n")) >= 44


def interrupt(job: Job, after_step: int) -> tuple[int, str]:
    """Start the job, SIGTERM it once it has logged `after_step`, and return (exit code, output)."""
    proc = job.start("charlm/train.py")
    deadline = time.monotonic() + 120
    while not any(r["step"] >= after_step for r in job.metrics()):
        assert proc.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def test_sigterm_checkpoints_and_the_requeued_job_continues_the_same_run(job_factory, text_dataset) -> None:
    job = job_factory(text_dataset, TINY, name="preempted")
    rc, out = interrupt(job, after_step=20)
    assert rc == 143, out
    assert (job.checkpoints / "charlm.safetensors").exists() and not (job.output / "model.json").exists()
    assert [p.name for p in job.checkpoints.iterdir()] == ["charlm.safetensors"]  # no pickle anywhere
    saved = int(out.split("checkpoint saved at step ")[1].split(";")[0])
    first_run = [r["step"] for r in job.metrics()]
    assert 20 <= max(first_run) <= saved < TINY["steps"]

    rc, out = job.run("charlm/train.py")
    assert rc == 0, out
    assert "resumed from" in out and f"at step {saved}" in out
    second_run = [r["step"] for r in job.metrics()][len(first_run) :]
    # Step numbers carry on from the checkpoint instead of restarting at 0.
    assert saved < second_run[0] <= saved + TINY["log_every"] and second_run[-1] == TINY["steps"]

    # Model, optimiser and RNG state were all restored: the same result as a job never interrupted.
    whole = job_factory(text_dataset, TINY, name="uninterrupted")
    assert whole.run("charlm/train.py")[0] == 0
    resumed, direct = job.model_card()["metrics"], whole.model_card()["metrics"]
    assert resumed["val_loss"] == pytest.approx(direct["val_loss"], abs=1e-6)


def test_the_trained_model_is_served_end_to_end_by_the_pytorch_runtime(
    job_factory, text_dataset, tmp_path
) -> None:
    """train.py's output, packed and checked as an upload is, served by a real replica: its greedy
    text is what the training script's own network (train.CharTransformer) predicts from the same
    weights, so the runtime's architecture is the example's, name for name."""
    job = job_factory(text_dataset, {**TINY, "steps": 20})
    assert job.run("charlm/train.py")[0] == 0
    packed = tmp_path / "model.tar.gz"
    with packed.open("wb") as fh:
        archive.pack(job.output, fh)
    found = archive.inspect([packed.read_bytes()])
    assert found.pickles == () and found.manifest["architecture"]["type"] == "char-transformer"
    model_dir = tmp_path / "model"
    archive.unpack([packed.read_bytes()], model_dir)

    train = load_example("charlm/train.py", "charlm_train")
    card, chars = job.model_card(), json.loads((job.output / "vocab.json").read_text())["chars"]
    arch = {k: card["architecture"][k] for k in train.ARCH_KEYS}
    net = train.CharTransformer(len(chars), **arch)
    net.load_state_dict(load_file(str(job.output / "model.safetensors")))
    net.eval()
    ids = [chars.index(c) for c in "ROMEO."]
    with torch.no_grad():
        for _ in range(12):
            ids.append(int(net(torch.tensor([ids[-arch["block_size"] :]]))[0, -1].argmax()))
    expected = "".join(chars[i] for i in ids[6:])

    replica = start_replica(tmp_path / "run", "--runtime", "pytorch", "--model-dir", str(model_dir))
    try:
        body = {"prompt": "ROMEO.", "max_tokens": 12, "temperature": 0}
        r = httpx.post(f"{replica.url}/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == expected
    finally:
        assert replica.stop() == 0, replica.stderr
