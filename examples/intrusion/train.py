"""Train a network-intrusion classifier (random forest) under the Enclave training-job contract.

The platform runs `python train.py` with ENCLAVE_* variables set (see README.md); by hand:

    python examples/intrusion/generate.py && python examples/intrusion/train.py --hp n_estimators=100

The forest is grown in stages of `trees_per_stage` trees (warm start). After each stage the
script appends held-out metrics and checkpoints the forest, so a requeued job resumes with the
trees it already has; because the forest draws each tree's seed from one seeded stream, a
resumed run builds the same forest as an uninterrupted one.

The forest is saved with skops (model.skops, checkpoints too), not pickle: loading a skops file
builds only the types it is told to trust, so a model file cannot run code when it is served.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import sklearn
import skops.io
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

DEFAULTS = {
    "n_estimators": 200,
    "trees_per_stage": 25,
    "max_depth": 0,  # 0 = grow until leaves are pure or min_samples_leaf
    "min_samples_leaf": 2,
    "max_features": "sqrt",  # "sqrt", "log2" or a fraction such as "0.5"
    "test_size": 0.2,
    "seed": 0,
}
LABEL = "label"
LOCAL_DATA = Path(__file__).resolve().parent / "flows.csv"  # generate.py's default output
# Integer codes used by generate.py; recorded in model.json so clients can encode raw flows.
ENCODINGS = {
    "protocol": {"tcp": 0, "udp": 1, "icmp": 2},
    "service": {"http": 0, "smtp": 1, "ftp": 2, "ssh": 3, "dns": 4, "telnet": 5, "other": 6},
}
# Beyond skops's defaults (scikit-learn estimators, numpy arrays) a forest holds fitted trees.
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


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
        # Only set a flag: the loop checkpoints at the next safe point and exits 143.
        print("SIGTERM received: will checkpoint and exit", flush=True)
        self.stop_requested = True

    def log(self, step: int, **values: float) -> None:
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n")


def hparams(cli_overrides: list[str]) -> dict:
    """DEFAULTS, then ENCLAVE_HPARAMS, then --hp k=v; values coerced to the defaults' types."""
    raw = json.loads(os.environ.get("ENCLAVE_HPARAMS") or "{}")
    raw.update(kv.split("=", 1) for kv in cli_overrides)
    hp = dict(DEFAULTS)
    for key, value in raw.items():
        if key not in DEFAULTS:
            print(f"ignoring unknown hyperparameter {key!r}", flush=True)
            continue
        hp[key] = type(DEFAULTS[key])(value)
    return hp


# --- data and model --------------------------------------------------------------------------

def dataset_path(cli_path: Path | None, contract: Contract) -> Path:
    if cli_path:
        return cli_path
    if contract.datasets:
        return Path(next(iter(contract.datasets.values())))
    for candidate in (Path(os.environ.get("ENCLAVE_DATA_DIR", ".")) / "flows.csv", LOCAL_DATA):
        if candidate.exists():
            return candidate
    sys.exit("no dataset: run generate.py first, pass --data FILE, or run as an Enclave job")


def load_csv(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    label_col = header.index(LABEL)
    features = [h for i, h in enumerate(header) if i != label_col]
    X = np.array([[float(v) for i, v in enumerate(r) if i != label_col] for r in body])
    y = np.array([r[label_col] for r in body])
    return X, y, features


def new_forest(hp: dict, cpus: int) -> RandomForestClassifier:
    return RandomForestClassifier(
        n_estimators=0, warm_start=True, n_jobs=cpus, random_state=hp["seed"],
        max_depth=hp["max_depth"] or None, min_samples_leaf=hp["min_samples_leaf"],
        max_features=_number_or_name(hp["max_features"]),
    )


def _number_or_name(value: str) -> str | float:
    try:
        return float(value)
    except ValueError:
        return value


def evaluate(model: RandomForestClassifier, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = model.predict(X)
    return {"accuracy": accuracy_score(y, pred), "macro_f1": f1_score(y, pred, average="macro")}


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """Always predict the most frequent training class: the bar a real model has to clear."""
    names, counts = np.unique(y_train, return_counts=True)
    pred = np.full(len(y_test), names[counts.argmax()])
    return {"baseline_accuracy": accuracy_score(y_test, pred),
            "baseline_macro_f1": f1_score(y_test, pred, average="macro", zero_division=0)}


def save_checkpoint(path: Path, model: RandomForestClassifier) -> None:
    tmp = path.with_suffix(".tmp")
    skops.io.dump(model, tmp)
    os.replace(tmp, path)  # atomic: a SIGKILL mid-write leaves the previous checkpoint intact


def load_forest(path: Path) -> RandomForestClassifier:
    """A saved forest, refused if it holds any type beyond skops's defaults and TRUSTED_TYPES."""
    unknown = sorted(set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    if unknown:
        sys.exit(f"{path} holds types this script does not trust: {', '.join(unknown)}")
    return skops.io.load(path, trusted=TRUSTED_TYPES)


def grow(model: RandomForestClassifier, hp: dict, data: tuple, contract: Contract, ckpt: Path) -> bool:
    """Add trees stage by stage; returns False if stopped by SIGTERM before reaching n_estimators."""
    X_train, X_test, y_train, y_test = data
    while model.n_estimators < hp["n_estimators"]:
        if contract.stop_requested:
            return False
        model.n_estimators = min(hp["n_estimators"], model.n_estimators + hp["trees_per_stage"])
        t0 = time.perf_counter()
        model.fit(X_train, y_train)
        seconds = time.perf_counter() - t0
        scores = evaluate(model, X_test, y_test)
        save_checkpoint(ckpt, model)
        contract.log(model.n_estimators, val_accuracy=scores["accuracy"], val_macro_f1=scores["macro_f1"],
                     fit_seconds=seconds)
        print(f"trees {model.n_estimators:4d}  val acc {scores['accuracy']:.4f}  "
              f"macro-F1 {scores['macro_f1']:.4f}  ({seconds:.1f}s)", flush=True)
    return True


def write_model(out: Path, model: RandomForestClassifier, features: list[str], metrics: dict, hp: dict) -> None:
    skops.io.dump(model, out / "model.skops", compression=zipfile.ZIP_DEFLATED, compresslevel=6)  # trees compress well
    card = {
        "format": "enclave-model/1",
        "runtime": "sklearn",
        "framework": f"scikit-learn {sklearn.__version__}",
        "task": "classification",
        "features": features,
        "classes": [str(c) for c in model.classes_],
        "feature_encodings": ENCODINGS,
        "metrics": metrics,
        "hparams": hp,
    }
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="CSV with a 'label' column (default: the job's dataset)")
    parser.add_argument("--hp", action="append", default=[], metavar="K=V", help="override a hyperparameter")
    args = parser.parse_args()
    contract = Contract()
    hp = hparams(args.hp)
    path = dataset_path(args.data, contract)
    X, y, features = load_csv(path)
    print(f"loaded {path}: {X.shape[0]} rows, {X.shape[1]} features; hparams {hp}", flush=True)
    data = train_test_split(X, y, test_size=hp["test_size"], stratify=y, random_state=hp["seed"])

    ckpt = contract.checkpoints / "forest.skops"
    if ckpt.exists():
        model = load_forest(ckpt)
        print(f"resuming from checkpoint with {model.n_estimators} trees", flush=True)
    else:
        model = new_forest(hp, contract.cpus)
    model.n_jobs = contract.cpus  # a requeued job may be granted a different number of CPUs

    if not grow(model, hp, data, contract, ckpt):
        print(f"stopped at {model.n_estimators} trees; checkpoint saved", flush=True)
        return 143

    metrics = {**evaluate(model, data[1], data[3]), **majority_baseline(data[2], data[3]),
               "n_train": float(len(data[2])), "n_test": float(len(data[3]))}
    contract.log(model.n_estimators, **{f"final_{k}": v for k, v in metrics.items()})
    write_model(contract.output, model, features, metrics, hp)
    print(f"held-out accuracy {metrics['accuracy']:.4f} (majority baseline {metrics['baseline_accuracy']:.4f}), "
          f"macro-F1 {metrics['macro_f1']:.4f} (baseline {metrics['baseline_macro_f1']:.4f})", flush=True)
    print(f"model written to {contract.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
