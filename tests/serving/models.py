"""Real model directories for the replica tests, in the formats that load without running code:
a trained iris classifier (skops) and character transformers (safetensors + architecture)."""

from __future__ import annotations

import json
from pathlib import Path

# The character model learns one cycle over this alphabet: after "a" greedily comes "bcd...".
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
CHARS = [*ALPHABET, " ", "\n", ".", ",", "!", "?", ":"]
BLOCK_SIZE = 16
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]
IRIS_META = {
    "format": "enclave-model/1",
    "runtime": "sklearn",
    "task": "classification",
    "features": IRIS_FEATURES,
    "classes": IRIS_CLASSES,
}


def iris_estimator(forest: bool = False) -> object:
    from sklearn.datasets import load_iris  # type: ignore[import-untyped,unused-ignore]
    from sklearn.ensemble import RandomForestClassifier  # type: ignore[import-untyped,unused-ignore]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped,unused-ignore]
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped,unused-ignore]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped,unused-ignore]

    x, y = load_iris(return_X_y=True)
    if forest:
        return RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)


def write_sklearn_model(model_dir: Path, estimator: object | None = None) -> Path:
    import skops.io  # type: ignore[import-untyped,unused-ignore]

    model_dir.mkdir(parents=True, exist_ok=True)
    skops.io.dump(iris_estimator() if estimator is None else estimator, model_dir / "model.skops")
    (model_dir / "model.json").write_text(json.dumps(IRIS_META))
    return model_dir


def write_char_model(
    model_dir: Path, *, steps: int = 60, lr: float = 0.5, n_layer: int = 1, n_embd: int = 32, n_head: int = 2
) -> Path:
    """A :class:`CharTransformer` that learnt the alphabet's cycle (``steps`` of plain SGD),
    saved as the pytorch runtime loads it; a wide, deep one with ``steps=0`` is slow on purpose."""
    import torch
    from safetensors.torch import save_file

    from enclave.serving.rt_charlm import CharTransformer

    torch.manual_seed(0)
    arch = {"block_size": BLOCK_SIZE, "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd}
    net = CharTransformer(len(CHARS), **arch)
    if steps:
        cycle = torch.tensor([CHARS.index(c) for c in ALPHABET * 3])
        windows = cycle.unfold(0, BLOCK_SIZE + 1, 1)[: len(ALPHABET)]  # every start letter once
        x, y = windows[:, :-1], windows[:, 1:]
        for _ in range(steps):  # plain SGD: torch.optim would import torch._dynamo (seconds)
            loss = torch.nn.functional.cross_entropy(net(x).reshape(-1, len(CHARS)), y.reshape(-1))
            net.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                for param in net.parameters():
                    if param.grad is not None:
                        param.sub_(lr * param.grad)
    net.eval()
    model_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(model_dir / "model.safetensors"))
    (model_dir / "vocab.json").write_text(json.dumps({"chars": CHARS}))
    meta = {
        "format": "enclave-model/1",
        "runtime": "pytorch",
        "task": "text-generation",
        "block_size": BLOCK_SIZE,
        "architecture": {"type": "char-transformer", **arch},
    }
    (model_dir / "model.json").write_text(json.dumps(meta))
    return model_dir
