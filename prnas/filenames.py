"""The name of every file the project writes, in one place.

Search experiments (per trial and per experiment), retrain experiments, model files and
the in-process commands' run folders. Plain constants, no imports: the in-process
engine, the model file and the retrain take their names from here without loading the
parquet machinery of ``prnas.records`` (pandas, pyarrow), which a GPU node running the
engine alone need not have.
"""

CYCLES_FILE = "cycles.jsonl"  # per search trial or run: one plain JSON object per cycle
GENOTYPE_FILE = "genotype.json"  # per search trial, once it finished
RESULTS_FILE = "results.parquet"  # per search experiment: one row per trial and cycle
CANDIDATES_FILE = "candidates.parquet"  # per search experiment: one row per candidate
EPOCHS_FILE = "epochs.jsonl"  # per retrain run: one plain JSON object per epoch
RETRAIN_FILE = "retrain.parquet"  # per retrain experiment: one row per trial and epoch
SEARCH_CHECKPOINT_FILE = "search.pt"  # per search trial (Tune): the whole engine state
SNAPSHOT_PREFIX = "population-cycle-"  # + "<cycle>.pt": a search trial's state for exploit
RETRAIN_CHECKPOINT_FILE = "retrain.pt"  # per retrain trial or data-parallel run
MODEL_FILE = "model.pt"  # a trained network as plain data (prnas.model_file)
# The in-process commands' run folder (python -m prnas.search / prnas.retrain) also holds
# these, beside a trial's own files (cycles.jsonl or epochs.jsonl, genotype.json, model.pt).
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
