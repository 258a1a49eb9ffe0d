"""``sklearn``: a fitted scikit-learn estimator answering completion/chat requests with predictions.

The prompt (or the last user message) holds the feature rows, as one JSON object per row
``{"feature": number, ...}`` (or a JSON list of such objects), or comma-separated numbers in
``model.json["features"]`` order, one row per line. The completion text is one prediction per
line; classifiers with ``predict_proba`` also return per-row class probabilities as the extra
top-level field ``enclave.probabilities``.

The estimator is ``model.skops`` (``skops.io.dump``): skops rebuilds it from a JSON schema and
arrays and, before constructing anything, refuses any type that is neither in its own trusted
set (scikit-learn estimators, numpy and scipy containers, builtins) nor in :data:`TRUSTED_TYPES`
below. ``model.joblib`` (a pickle) is read only where the region's fleet entry allows pickled
models; otherwise it is refused with a message saying how to save the model instead.
"""

from __future__ import annotations

import importlib.abc
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from enclave.serving.runtimes import (
    CHAT,
    COMPLETIONS,
    Finish,
    Generation,
    InputError,
    ModelError,
    Options,
    Runtime,
    cpus,
    pickled,
    read_model_json,
    require_dir,
)

TASKS = ("classification", "regression")
MAX_ROWS = 10_000
MODEL_FILE = "model.skops"
PICKLE_FILE = "model.joblib"
# The types, beyond skops's own trusted set, a model may hold: the Cython containers of fitted
# trees (random forests, extra trees, gradient boosting, histogram gradient boosting). Their
# state is plain arrays that their __setstate__ copies; no function named by the file is called.
# Keep this list short and named one by one: a type here is one a model author may instantiate.
TRUSTED_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)


class SklearnModel(Runtime):
    name = "sklearn"
    capabilities = frozenset({COMPLETIONS, CHAT})

    def __init__(self, estimator: Any, features: list[str], task: str, class_names: list[str]) -> None:
        self.estimator = estimator
        self.features = features
        self.task = task
        self.class_names = class_names
        self.has_proba = task == "classification" and hasattr(estimator, "predict_proba")
        # raw estimator label (as text) -> class name, for predict()'s output
        fitted = getattr(estimator, "classes_", None)
        raw = [str(c) for c in fitted] if fitted is not None else []
        self.label_names = dict(zip(raw, class_names, strict=False))

    @classmethod
    def load(cls, options: Options) -> SklearnModel:
        model_dir = require_dir(options, cls.name)
        meta = read_model_json(model_dir, cls.name)
        features = meta.get("features")
        if not (isinstance(features, list) and features and all(isinstance(f, str) for f in features)):
            raise ModelError("model.json must list the feature names in 'features'")
        task = meta.get("task", "classification")
        if task not in TASKS:
            raise ModelError(f"model.json task {task!r} is not one of {', '.join(TASKS)}")
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped,unused-ignore]

        path = model_dir / MODEL_FILE
        if path.is_file():
            estimator = load_skops(path)
        elif (model_dir / PICKLE_FILE).is_file():
            path = pickled(options, model_dir / PICKLE_FILE, f"{MODEL_FILE} (skops.io.dump)")
            estimator = _load_joblib(path)
        else:
            raise ModelError(f"{path} is missing")
        # BLAS/OpenMP inside the estimator stays within the job's CPUs (after the load, which
        # is what brings those libraries in)
        threadpool_limits(cpus())
        if not hasattr(estimator, "predict"):
            raise ModelError(f"{path} holds a {type(estimator).__name__}, which has no predict()")
        names = [str(c) for c in meta.get("classes") or []]
        fitted = getattr(estimator, "classes_", None)
        class_names = [_class_name(c, names) for c in fitted] if fitted is not None else names
        return cls(estimator, features, task, class_names)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(
        self, prompt: str, max_tokens: int | None, temperature: float, stop: Sequence[str], seed: int | None
    ) -> Generation:
        """One piece: all predictions (sampling options do not apply to a classifier)."""
        rows = self.parse(prompt)
        with warnings.catch_warnings():
            # Pipelines fitted on a DataFrame warn about unnamed columns; the order is model.json's.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            predictions = self.estimator.predict(rows)
            probabilities = self.estimator.predict_proba(rows) if self.has_proba else None
        if self.task == "classification":
            lines = [self._name(p) for p in predictions]
        else:
            lines = [repr(float(p)) for p in predictions]
        yield "\n".join(lines)
        extra = None
        if probabilities is not None:
            table = [
                {name: round(float(p), 6) for name, p in zip(self.class_names, row, strict=True)}
                for row in probabilities
            ]
            extra = {"enclave": {"probabilities": table}}
        return Finish("stop", extra)

    def _name(self, prediction: Any) -> str:
        return self.label_names.get(str(prediction)) or _class_name(prediction, self.class_names)

    def parse(self, text: str) -> np.ndarray:
        """Feature rows from the prompt as a 2-D float array in ``features`` order."""
        text = text.strip()
        if not text:
            raise InputError(f"the input is empty: send a JSON object of {self._expects()}", param="prompt")
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            rows = [self._row_from_object(data, 1)]
        elif isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
            rows = [self._row_from_object(d, i) for i, d in enumerate(data, 1)]
        else:
            lines = [line for line in text.splitlines() if line.strip()]
            rows = [
                self._row_from_object(_object(line, i), i)
                if line.lstrip().startswith("{")
                else self._row_from_csv(line, i)
                for i, line in enumerate(lines, 1)
            ]
        if len(rows) > MAX_ROWS:
            raise InputError(f"at most {MAX_ROWS} rows per request", param="prompt")
        return np.asarray(rows, dtype=np.float64)

    def _expects(self) -> str:
        return f"features {', '.join(self.features)}"

    def _row_from_object(self, obj: dict[str, Any], row: int) -> list[float]:
        missing = [f for f in self.features if f not in obj]
        if missing:
            raise InputError(f"row {row}: missing features: {', '.join(missing)}", param="prompt")
        unknown = [k for k in obj if k not in self.features]
        if unknown:
            raise InputError(
                f"row {row}: unknown features: {', '.join(unknown)} (the model takes {', '.join(self.features)})",
                param="prompt",
            )
        return [_number(obj[f], f"row {row}, feature {f}") for f in self.features]

    def _row_from_csv(self, line: str, row: int) -> list[float]:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(self.features):
            raise InputError(
                f"row {row} has {len(cells)} values, expected {len(self.features)} ({self._expects()})",
                param="prompt",
            )
        values = []
        for feature, cell in zip(self.features, cells, strict=True):
            try:
                value = float(cell)
            except ValueError:
                raise InputError(
                    f"row {row}, feature {feature}: {cell!r} is not a number", param="prompt"
                ) from None
            values.append(_number(value, f"row {row}, feature {feature}"))
        return values


def load_skops(path: Path) -> Any:
    """The object in a skops file, refused when it names a type outside skops's trusted set and
    :data:`TRUSTED_TYPES` (checked on the file's schema, before anything is constructed)."""
    skops_io = _import_skops()
    try:
        untrusted = skops_io.get_untrusted_types(file=path)
    except Exception as exc:
        raise ModelError(f"{path.name} is not a readable skops file: {exc}") from None
    refused = sorted(set(untrusted) - TRUSTED_TYPES)
    if refused:
        raise ModelError(f"{path.name} holds types that are not trusted: {', '.join(refused)}")
    try:
        # ``trusted`` is the file's own untrusted types, every one of them checked against our list.
        return skops_io.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise ModelError(f"cannot load {path.name}: {exc}") from None


def _import_skops() -> Any:
    """``skops.io``, imported with torch kept out.

    skops lists scikit-learn's estimators at import by walking every sklearn module, and one
    of them (``sklearn.externals.array_api_compat.torch``) imports torch: seconds and hundreds
    of megabytes an sklearn replica never uses. While skops is imported ``import torch`` fails,
    which that walk skips; a model naming a torch type is refused as untrusted anyway."""
    if "skops.io" in sys.modules or "torch" in sys.modules:
        import skops.io  # type: ignore[import-untyped,unused-ignore]

        return skops.io
    finder = _NoTorch()
    sys.meta_path.insert(0, finder)
    try:
        import skops.io  # type: ignore[import-untyped,unused-ignore]
    finally:
        sys.meta_path.remove(finder)
    return skops.io


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is not imported by an sklearn replica")
        return None


def _load_joblib(path: Path) -> Any:
    """A pickled estimator: only where the region allows it, inside the confined replica."""
    import joblib  # type: ignore[import-untyped,unused-ignore]

    try:
        return joblib.load(path)
    except Exception as exc:
        raise ModelError(f"cannot load {path.name}: {exc}") from None


def _object(line: str, row: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError:
        raise InputError(f"row {row} is not valid JSON", param="prompt") from None
    if not isinstance(obj, dict):
        raise InputError(f"row {row} must be a JSON object", param="prompt")
    return obj


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{where}: {value!r} is not a finite number", param="prompt")
    return float(value)


def _class_name(label: Any, names: list[str]) -> str:
    """An estimator label as a class name: itself when named, else an index into model.json's classes."""
    text = str(label)
    if text in names or not names:
        return text
    if isinstance(label, int | np.integer) and 0 <= int(label) < len(names):
        return names[int(label)]
    return text
