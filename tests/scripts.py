"""The ``tune_jobs`` scripts' ``main`` functions, for tests that run a command in their
own process: no interpreter start and no second import of torch and Ray, where a fresh
process is not what the test checks."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def script_main(name: str) -> Callable[..., int]:
    """``main`` of ``tune_jobs/<name>.py``, loaded afresh (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}",
                                                  ROOT / "tune_jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
