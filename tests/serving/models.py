"""Real model directories for the replica tests: a trained iris classifier and character models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

# The character model learns one cycle over this alphabet: after "a" greedily comes "bcd...".
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
CHARS = [*ALPHABET, " ", "\n", ".", ",", "!", "?", ":"]
BLOCK_SIZE = 16
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


def write_sklearn_model(model_dir: Path) -> Path:
    import joblib  # type: ignore[import-untyped,unused-ignore]
    from sklearn.datasets import load_iris  # type: ignore[import-untyped,unused-ignore]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped,unused-ignore]
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped,unused-ignore]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped,unused-ignore]

    x, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    meta = {
        "format": "enclave-model/1",
        "runtime": "sklearn",
        "task": "classification",
        "features": IRIS_FEATURES,
        "classes": IRIS_CLASSES,
    }
    (model_dir / "model.json").write_text(json.dumps(meta))
    return model_dir


def write_char_model(
    model_dir: Path, *, steps: int = 20, lr: float = 1.0, repeat: int = 0, hidden: int = 32
) -> Path:
    """A TorchScript next-character model; ``repeat`` extra layers per step make it slow on purpose."""
    import torch

    class CharNet(torch.nn.Module):
        def __init__(self, vocab: int, hidden: int, repeat: int) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, hidden)
            self.mix = torch.nn.Linear(hidden, hidden)
            self.head = torch.nn.Linear(hidden, vocab)
            self.repeat = repeat

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            h = self.embed(idx)
            for _ in range(self.repeat):
                h = torch.tanh(self.mix(h))
            out: torch.Tensor = self.head(h)
            return out

    torch.manual_seed(0)
    net = CharNet(len(CHARS), hidden, repeat)
    if steps:
        ids = torch.tensor([CHARS.index(c) for c in ALPHABET + ALPHABET[0]])
        x, y = ids[:-1].unsqueeze(0), ids[1:].unsqueeze(0)
        for _ in range(steps):  # plain SGD: torch.optim would import torch._dynamo (seconds)
            loss = torch.nn.functional.cross_entropy(net(x).reshape(-1, len(CHARS)), y.reshape(-1))
            net.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                for param in net.parameters():
                    if param.grad is not None:  # ``mix`` is unused without ``repeat``
                        param.sub_(lr * param.grad)
    net.eval()
    model_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # TorchScript is the runtime's declared format; torch deprecates it for torch.export.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(model_dir / "model.pt"))  # type: ignore[no-untyped-call]
    (model_dir / "vocab.json").write_text(json.dumps({"chars": CHARS}))
    meta = {
        "format": "enclave-model/1",
        "runtime": "pytorch",
        "task": "text-generation",
        "block_size": BLOCK_SIZE,
    }
    (model_dir / "model.json").write_text(json.dumps(meta))
    return model_dir
