"""prnas: PR-DARTS (Prune and Replace NAS) as a resumable, Ray Tune orchestrated search.

Layers (each imports only those listed before it): ``space`` (pure Python),
``nn`` (torch modules), ``data``, ``search`` (the engine), ``tune`` (Ray only).

``prnas.load_model(path_or_run_dir, device=...)`` returns a retrained network
(see :mod:`prnas.model_file`); it is imported on first use, so ``import prnas``
and the pure-Python ``prnas.space`` stay free of torch.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("load_model", "read_model_file"):
        from prnas import model_file

        return {"load_model": model_file.load_model, "read_model_file": model_file.read}[name]
    raise AttributeError(f"module 'prnas' has no attribute {name!r}")
