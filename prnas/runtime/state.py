"""Version-checked run state and the config check a restore makes, for search and retrain.

A checkpoint is only worth resuming if it was written by the same state format
and under a config that computes the same thing. Both checks live here so the
search and the retrain refuse a mismatch with the same one-line message, naming
every differing field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prnas import config_io

# Fields that may differ between a checkpoint and the run restoring it: where the
# data lives, how it is loaded and how fast it runs never change what is computed.
MAY_DIFFER = frozenset({
    "device", "num_threads", "data.data_dir", "data.download", "data.num_workers",
    "data.device_resident", "performance.channels_last", "performance.compile",
    "performance.fast_path", "performance.fuse",
})


def check_version(state: Mapping[str, Any], expected: int, what: str) -> None:
    """ValueError (one line) for a checkpoint of another state format."""
    found = state.get("version")
    if found != expected:
        raise ValueError(f"{what} checkpoint format {found!r} is not {expected}; "
                         "it was written by another prnas version")


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                       may_differ: Iterable[str] = MAY_DIFFER, prefix: str = "") -> list[str]:
    """``field: saved -> current`` for every field that changes what a run computes."""
    may_differ = frozenset(may_differ)
    out = []
    for key in sorted(set(saved) | set(current)):
        name = prefix + key
        a, b = saved.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, may_differ, name + ".")
        elif a != b and name not in may_differ:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def check_config(saved: Mapping[str, Any], current: Mapping[str, Any],
                 defaults: Mapping[str, Any], may_differ: Iterable[str] = MAY_DIFFER) -> None:
    """ValueError naming each differing field; a field the checkpoint predates counts as
    its default. All three mappings are ``model_dump(mode="json")`` of the run's config."""
    diff = config_differences(config_io.deep_merge(dict(defaults), saved), current, may_differ)
    if diff:
        raise ValueError("checkpoint was written under another config: " + "; ".join(diff))
