"""Ray Tune orchestration: the only package that imports Ray.

Modules are imported explicitly (``prnas.tune.cluster``, ``prnas.tune.retrain``,
...) so that importing ``prnas.tune`` never starts or even loads Ray.
"""
