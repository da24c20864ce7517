"""One retrain's files, the same for every way a retrain runs: in-process
(``python -m prnas.retrain``), as a Tune trial and as a data-parallel Tune trial.

``epochs.jsonl`` is rewritten whole after every epoch from the retrainer's
checkpointed history, so it never holds an epoch a retry threw away; after the
last epoch ``model.pt`` is saved and the network's inference cost joins the
last row. Every row carries the run's labels (:func:`run_labels`), so
``retrain.parquet`` is the rows of its runs and nothing else.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prnas._io import atomic_write_text, jsonl_text
from prnas.filenames import CONFIG_FILE, EPOCHS_FILE, GENOTYPE_FILE, MODEL_FILE
from prnas.retrain.config import RetrainConfig, dump_config, protocol_json
from prnas.retrain.genotypes import GenotypeRef, ref_for
from prnas.retrain.trainer import Retrainer
from prnas.space.genotype import Genotype
from prnas.storage import Location, as_location


def run_labels(ref: GenotypeRef, cfg: RetrainConfig, dataset: str) -> dict[str, Any]:
    """What every row of a run says about it (``retrain.parquet``'s label columns)."""
    return {"genotype": ref.label, "genotype_path": ref.path, "protocol": protocol_json(cfg),
            "kind": ref.kind, "seed": cfg.seed, "dataset": dataset}


class RunFiles:
    """``epochs.jsonl`` and ``model.pt`` of one run in ``folder()`` (looked up when
    writing: a Tune trial's storage is set after the trial is built)."""

    def __init__(self, folder: Callable[[], Location], trial_id: str,
                 labels: dict[str, Any]) -> None:
        self.folder = folder
        self.trial_id, self.labels = trial_id, labels

    def epoch(self, retrainer: Retrainer) -> dict[str, Any]:
        """Train one epoch and write the files; the epoch's row as written."""
        retrainer.train_epoch()
        rows = [{"trial_id": self.trial_id, **r, **self.labels} for r in retrainer.history]
        if retrainer.done:
            # The last epoch: keep the network and measure what it costs at inference.
            rows[-1].update(retrainer.measure_timing().as_dict(),
                            model_path=self._save_model(retrainer))
        (self.folder() / EPOCHS_FILE).write_text(jsonl_text(rows))
        return rows[-1]

    def _save_model(self, retrainer: Retrainer) -> str:
        target = self.folder() / MODEL_FILE
        if target.is_local:
            retrainer.save_model(target.path)
            return target.uri
        with tempfile.TemporaryDirectory() as tmp:  # remote storage: one whole-object put
            local = Path(tmp) / MODEL_FILE
            retrainer.save_model(local)
            target.write_bytes(local.read_bytes())
        return target.uri


def folder_run(out: Path, cfg: RetrainConfig, genotype: Genotype, dataset: str,
               kind: str = "searched") -> RunFiles:
    """The files of a run outside Tune in the folder ``out`` (named as its ``trial_id``),
    which also holds ``config.yaml`` and ``genotype.json`` as started (written here on
    the first call). The genotype file records the ``kind``, so a resumed run keeps
    its labels."""
    if not (out / GENOTYPE_FILE).is_file():
        atomic_write_text(out / CONFIG_FILE, dump_config(cfg))
        extra = genotype.extra if kind == "searched" else {**genotype.extra, "kind": kind}
        replace(genotype, extra=extra).save(out / GENOTYPE_FILE)
    ref = ref_for(str(out / GENOTYPE_FILE))
    return RunFiles(lambda: as_location(out), out.name, run_labels(ref, cfg, dataset))
