"""Make Hypothesis failures readable under ``filterwarnings = error``.

When a property fails, Hypothesis's pytest plugin imports ``hypothesis.extra._patching``
(and through it libcst) to suggest a patch; libcst's import emits a DeprecationWarning from
``mypy_extensions``, which the suite turns into an error inside the plugin's hook, so the
run ends in INTERNALERROR and the failing example is lost. Importing it once here, with that
warning ignored, keeps the real failure report.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    with contextlib.suppress(ImportError):  # no libcst: the plugin then skips the patch quietly
        importlib.import_module("hypothesis.extra._patching")
