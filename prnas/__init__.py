"""prnas: PR-DARTS (Prune and Replace NAS) as a resumable, Ray Tune orchestrated search.

Layers (each imports only those listed before it): ``space`` (pure Python),
``nn`` (torch modules), ``data``, ``search`` (the engine), ``tune`` (Ray only).
"""

__version__ = "0.1.0"
