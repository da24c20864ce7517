"""The PR-DARTS search engine, in-process and without Ray.

``config`` (validated YAML), ``pools`` and ``policy`` (pure prune and
replace), ``genotype`` (derivation), ``engine`` (the resumable ``Search``).
"""
