"""Analysis of prnas experiments: pandas over the parquet results, figures and tables.

Nothing here imports Ray or torch: a finished experiment folder is analysed
on any machine with the project's base dependencies.

* ``loaders``: ``load_results``, ``load_candidates``, ``load_retrain``, ``epoch_frame``
* ``figures``: the search-process figure (paper Fig. 2)
* ``cells``: cell diagrams (paper Fig. 3), Graphviz or matplotlib
* ``lineage``: which candidate came from which parent, and when it left
* ``discovery`` / ``tables``: #ops discovered/discoverable, per-trial and Table III tables
* ``report``: ``python -m analysis report EXPERIMENT_DIR [RETRAIN_DIR] --out DIR``
"""

from analysis.loaders import (
    ExperimentError,
    epoch_frame,
    load_candidates,
    load_results,
    load_retrain,
)

__all__ = ["ExperimentError", "epoch_frame", "load_candidates", "load_results", "load_retrain"]
