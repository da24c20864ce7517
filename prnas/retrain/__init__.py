"""Retraining a found cell under the DARTS evaluation protocol, in-process and resumable.

No Ray here: ``python -m prnas.retrain`` and the Tune Trainable in
``prnas.tune.retrain`` drive the same :class:`Retrainer`. The names load on
first use, so that the analysis can read the protocol's pure functions
(``prnas.retrain.schedule``) without importing torch.
"""

from importlib import import_module
from typing import Any

_HOME = {
    "ConfigError": "config", "RetrainConfig": "config", "build_config": "config",
    "load_config": "config", "drop_path_at": "schedule", "final_error": "schedule",
    "Retrainer": "trainer",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'prnas.retrain' has no attribute {name!r}")
    return getattr(import_module(f"prnas.retrain.{_HOME[name]}"), name)
