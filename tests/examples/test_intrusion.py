"""examples/intrusion: the generator is realistic enough to be hard, and train.py learns, resumes, exports
a skops model and that model is served by a real sklearn replica."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io

from enclave import archive
from tests.examples.conftest import EXAMPLES, assert_metrics_well_formed, load_example
from tests.serving.conftest import start_replica

generate = load_example("intrusion/generate.py", "intrusion_generate")
train = load_example("intrusion/train.py", "intrusion_train")

FAST = {"n_estimators": 50, "trees_per_stage": 25}


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset written by the real generator script, as a user would upload it."""
    path = tmp_path_factory.mktemp("data") / "flows.csv"
    subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "intrusion" / "generate.py"),
            "--out",
            str(path),
            "--rows",
            "6000",
            "--seed",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    return path


def test_generator_is_seeded_imbalanced_and_noisy() -> None:
    X1, y1 = generate.generate(3000, seed=5)
    X2, y2 = generate.generate(3000, seed=5)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert not np.array_equal(generate.generate(3000, seed=6)[0], X1)
    share = {c: float(np.mean(y1 == c)) for c in generate.CLASS_PRIORS}
    assert share["normal"] > 0.5 and share["u2r"] < 0.05 and min(share.values()) > 0.005
    assert X1.shape == (3000, len(generate.FEATURES))


def test_train_beats_majority_baseline_and_exports_a_loadable_model(job_factory, flows: Path) -> None:
    job = job_factory({"flows.csv": flows}, FAST)
    rc, out = job.run("intrusion/train.py")
    assert rc == 0, out
    assert "held-out accuracy" in out

    card = job.model_card()
    assert card["format"] == "enclave-model/1" and card["runtime"] == "sklearn"
    assert card["task"] == "classification" and card["framework"].startswith("scikit-learn ")
    assert card["features"] == generate.FEATURES
    assert sorted(card["classes"]) == sorted(generate.CLASS_PRIORS)
    m = card["metrics"]
    assert m["accuracy"] > m["baseline_accuracy"] + 0.2
    assert m["macro_f1"] > m["baseline_macro_f1"] + 0.4
    assert m["accuracy"] < 0.995, "the synthetic task should not be trivially separable"

    # Judge the exported artefact ourselves, on flows it has never seen (another seed).
    assert sorted(p.name for p in job.output.iterdir()) == ["model.json", "model.skops"]
    model = train.load_forest(job.output / "model.skops")
    X, y = generate.generate(2000, seed=99)
    pred = model.predict(X.astype(float))
    assert set(pred) <= set(card["classes"]) and isinstance(pred[0], str)
    majority = max(np.mean(y == c) for c in card["classes"])
    assert np.mean(pred == y) > majority + 0.2
    proba = model.predict_proba(X[:1])
    assert proba.shape == (1, len(card["classes"])) and list(model.classes_) == card["classes"]


def test_metrics_stream_one_line_per_stage(job_factory, flows: Path) -> None:
    job = job_factory({"flows.csv": flows}, FAST)
    assert job.run("intrusion/train.py")[0] == 0
    rows = job.metrics()
    assert_metrics_well_formed(rows)
    assert [r["step"] for r in rows if "val_accuracy" in r] == [25, 50]
    assert "final_accuracy" in rows[-1]


def test_resume_grows_the_checkpointed_forest_to_the_same_model(job_factory, flows: Path) -> None:
    # An interrupted job: it got as far as 25 trees, then is requeued with its full budget.
    job = job_factory({"flows.csv": flows}, {**FAST, "n_estimators": 25}, name="requeued")
    assert job.run("intrusion/train.py")[0] == 0
    job.hparams = FAST
    rc, out = job.run("intrusion/train.py")
    assert rc == 0, out
    assert "resuming from checkpoint with 25 trees" in out
    assert [r["step"] for r in job.metrics() if "val_accuracy" in r] == [25, 50]  # 50 came from the 2nd run

    whole = job_factory({"flows.csv": flows}, FAST, name="uninterrupted")
    assert whole.run("intrusion/train.py")[0] == 0
    X, _ = generate.generate(500, seed=7)
    resumed = train.load_forest(job.output / "model.skops").predict_proba(X)
    direct = train.load_forest(whole.output / "model.skops").predict_proba(X)
    assert np.allclose(resumed, direct, rtol=0, atol=1e-12)  # identical trees; threads sum in any order


def test_sigterm_stops_at_a_stage_boundary_with_the_forest_checkpointed(job_factory, flows: Path) -> None:
    job = job_factory({"flows.csv": flows}, {"n_estimators": 2000, "trees_per_stage": 25})
    proc = job.start("intrusion/train.py")
    deadline = time.monotonic() + 120
    while not job.metrics():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    trees = job.metrics()[-1]["step"]
    assert 25 <= trees < 2000 and f"stopped at {trees} trees" in out
    assert train.load_forest(job.checkpoints / "forest.skops").n_estimators == trees
    assert not (job.output / "model.json").exists()


def test_hparams_are_coerced_and_unknown_ones_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_HPARAMS", '{"n_estimators": "80", "test_size": 0.3, "bogus": 1}')
    hp = train.hparams(["max_depth=12"])
    assert hp["n_estimators"] == 80 and hp["test_size"] == 0.3 and hp["max_depth"] == 12
    assert "bogus" not in hp


def test_the_trained_model_is_served_end_to_end_without_pickle(
    job_factory, flows: Path, tmp_path: Path
) -> None:
    """train.py's output, packed and checked as an upload is, then served by a real replica that
    loads it with skops; its answers are the forest's own predictions."""
    job = job_factory({"flows.csv": flows}, {"n_estimators": 25, "trees_per_stage": 25})
    rc, out = job.run("intrusion/train.py")
    assert rc == 0, out
    assert skops.io.get_untrusted_types(file=job.output / "model.skops") == train.TRUSTED_TYPES
    packed = tmp_path / "model.tar.gz"
    with packed.open("wb") as fh:
        archive.pack(job.output, fh)
    found = archive.inspect([packed.read_bytes()])
    assert found.pickles == () and found.manifest["runtime"] == "sklearn"
    model_dir = tmp_path / "model"
    archive.unpack([packed.read_bytes()], model_dir)

    replica = start_replica(tmp_path / "run", "--runtime", "sklearn", "--model-dir", str(model_dir))
    try:
        X, _ = generate.generate(20, seed=3)
        rows = [dict(zip(generate.FEATURES, map(float, row), strict=True)) for row in X]
        r = httpx.post(f"{replica.url}/v1/completions", json={"prompt": json.dumps(rows)}, timeout=60)
        assert r.status_code == 200, r.text
        answer = r.json()
        expected = train.load_forest(job.output / "model.skops").predict(X.astype(float))
        assert answer["choices"][0]["text"].split("\n") == list(expected)
        assert len(answer["enclave"]["probabilities"]) == 20
    finally:
        assert replica.stop() == 0, replica.stderr
