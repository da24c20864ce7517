"""Retraining a found cell under the DARTS evaluation protocol, in-process and resumable.

No Ray here: ``python -m prnas.retrain`` and the Tune Trainable in
``prnas.tune.retrain`` drive the same :class:`Retrainer`.
"""

from prnas.retrain.config import ConfigError, RetrainConfig, build_config, load_config
from prnas.retrain.schedule import drop_path_at, final_error
from prnas.retrain.trainer import Retrainer

__all__ = [
    "ConfigError",
    "RetrainConfig",
    "Retrainer",
    "build_config",
    "drop_path_at",
    "final_error",
    "load_config",
]
