"""The tiny search config the tests share: a whole search takes seconds on 2 CPU cores.

Each test module states only how its config differs (``tiny_search(**overrides)``,
nested mappings merged), so the shared shape is written once.
"""

from typing import Any

from prnas.config_io import apply_overrides

TINY_SEARCH: dict[str, Any] = {
    "name": "tiny",
    "device": "cpu",
    "data": {"dataset": "demo", "input_size": 8, "subset": 160},
    "network": {"channels": 4, "layers": 3, "nodes": 2},
    "schedule": [
        {"epochs": 1, "grace_epochs": 0, "morphs": 2, "candidates": 4},
        {"epochs": 1, "grace_epochs": 0, "morphs": 1, "candidates": 3},
        {"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 1},
    ],
    "batch": {"b_min": 16, "b_mult": 8, "b_max": 32},
    "steps_per_epoch": 2,
    "eval_batch_size": 64,
}


def tiny_search(**overrides: Any) -> dict[str, Any]:
    return apply_overrides(TINY_SEARCH, overrides)
