"""One PR-DARTS search as a Ray Tune trial: ``step()`` trains exactly one cycle.

The trial never decides its own pools. After each cycle (but the last) it
reports the cycle's pools, alphas and histories; the
:class:`~prnas.tune.scheduler.PruneAndReplaceScheduler` computes the decision
from that result, writes it into the trial's config under :data:`DECISION_KEY`
and pauses the trial. Tune checkpoints it, and resumes it (on a fresh or a
reused actor) from that checkpoint with the new config; the next ``step()``
applies the decision first, so survivors keep their weights and new candidates
inherit their parent's. Keeping the decision in the trial config, next to the
checkpoint Tune already tracks, is what makes a driver restart safe: there is
no scheduler state to lose.

After the last cycle there is nothing left to train, so the trial applies the
final decision itself (same pure ``decide_cycle``; it only keeps the top
candidate per edge and does not change the derived genotype), writes
``genotype.json`` into its trial folder and reports ``done=True``.

Each step also rewrites ``cycles.jsonl`` in the trial folder from the engine's
own cycle log (:class:`~prnas.tune.trial_files.TrialFiles`, which keeps the
wall times and nodes too); ``prnas.tune.results`` turns these files into parquet.

The engine hands over a :class:`~prnas.cycle_record.CycleRecord`; the Tune result
is its one plain-JSON form (``to_json``, nested values as objects), which the
scheduler reads back with ``CycleRecord.from_json``.

Trial config keys: ``search`` (a SearchConfig dump), ``seed`` and ``space``
(set by the fan-out, override ``search``), ``resources`` ({"cpu", "gpu"} per
trial; ``cpu`` also sets torch's thread count), ``verbosity``, plus the decision
the scheduler adds. Tests inject faults by subclassing (``tests/faults.py``).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from ray import tune

from prnas.cycle_record import CycleRecord
from prnas.filenames import GENOTYPE_FILE, SEARCH_CHECKPOINT_FILE
from prnas.runtime import checkpoint
from prnas.runtime.device import release_cached_memory
from prnas.search.alpha_signal import softmax_curves
from prnas.search.config import SearchConfig, build_config
from prnas.search.engine import Search
from prnas.space.fates import HALVED, PolicyResult
from prnas.storage import Location, on_filesystem
from prnas.tune import ray_compat
from prnas.tune.cluster import (
    claim_gpu_share,
    data_on_this_node,
    resource_request,
    trial_gpu_fraction,
)
from prnas.tune.progress import trial_log
from prnas.tune.trial_files import TrialFiles

SEARCH_KEY = "search"
DECISION_KEY = "prnas_decision"
CHECKPOINT_FILE = SEARCH_CHECKPOINT_FILE
CHECKPOINT_VERSION = 3  # 3: "pending" and "final" as CycleRecord.to_json, "files"


class DecisionError(RuntimeError):
    """The scheduler could not compute this trial's prune-and-replace decision."""


def trial_search_config(config: dict[str, Any]) -> SearchConfig:
    """The SearchConfig of one trial: the shared ``search`` dict plus its fan-out values.

    Shared by the Trainable and the scheduler, so both see the same seed and
    constraints and the scheduler's decision is the one the engine would take.
    """
    overrides: dict[str, Any] = {}
    for key in ("seed", "space"):
        if config.get(key) is not None:
            overrides[key] = config[key]
    cpus = (config.get("resources") or {}).get("cpu")
    if cpus:
        overrides["num_threads"] = max(1, int(cpus))
    cfg = build_config(config[SEARCH_KEY], overrides, source="trial config")
    # A name per trial, so the genotypes of a fan-out can be told apart downstream.
    return cfg.model_copy(update={"name": f"{cfg.name}-{cfg.space}-seed{cfg.seed}"})


def _sans_decision(config: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in config.items() if k != DECISION_KEY})


class SearchTrainable(tune.Trainable):
    """A :class:`~prnas.search.engine.Search` driven one cycle per Tune step."""

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]):
        return resource_request(config)

    # ----------------------------------------------------------------- lifecycle
    def setup(self, config: dict[str, Any]) -> None:
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        self.cfg = trial_search_config(config)
        self._built_for = (self.trial_id, _sans_decision(config))
        budget = claim_gpu_share(trial_gpu_fraction(self))
        if budget is not None and self.cfg.batch.memory_budget_bytes is None:
            batch = self.cfg.batch.model_copy(update={"memory_budget_bytes": budget})
            self.cfg = self.cfg.model_copy(update={"batch": batch})
        with data_on_this_node():
            self.search = Search(self.cfg, log=trial_log(
                f"{config.get('space')} seed {config.get('seed')} ({self.trial_id})",
                int(config.get("verbosity", 1))))
        # The cycle trained but not yet decided on: a restored trial can report it again
        # instead of retraining the cycle.
        self._pending: CycleRecord | None = None
        self._final: CycleRecord | None = None  # the last cycle, closed, with its genotype
        gpus = (config.get("resources") or {}).get("gpu")
        self.files = TrialFiles(self.trial_folder,
                                {"trial_id": self.trial_id, **self._identity(),
                                 "gpus_per_trial": float(gpus or 0)},
                                [c.morphs for c in self.cfg.schedule])

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """A reused actor: the same trial's next cycle keeps its engine, another starts over.

        Tune restores the trial's checkpoint right after (it has one after every
        pause), and that sets every piece of state the engine carries from cycle to
        cycle: pools, network, alphas, optimisers, batch size, logs, RNGs. What the
        restore does not set (config, device, threads, datasets) comes from the
        trial config alone, so when only the scheduler's decision changed, a rebuild
        would give the very same engine; it would cost a dataset load and a network
        per cycle. Any other config (another seed or space, a new trial) gets a new
        engine, datasets and RNGs.
        """
        if self._continues(new_config):
            self.config = new_config
            return True
        self._release()
        self._build(new_config)
        self.config = new_config
        return True

    def _continues(self, new_config: dict[str, Any]) -> bool:
        """The same trial as the engine was built for, with at most a new decision."""
        return (getattr(self, "search", None) is not None
                and self._built_for == (self.trial_id, _sans_decision(new_config)))

    def _release(self) -> None:
        """Drop the old engine before building the next: never two supernets in memory."""
        self.search = None
        release_cached_memory()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = {"version": CHECKPOINT_VERSION, "search": self.search.state_dict(),
                 **{k: None if r is None else r.to_json()
                    for k, r in (("pending", self._pending), ("final", self._final))},
                 "files": self.files.state_dict()}
        checkpoint.save_atomic(state, Path(checkpoint_dir) / CHECKPOINT_FILE)

    def load_checkpoint(self, checkpoint_dir: str | dict | None) -> None:
        if not isinstance(checkpoint_dir, str):
            raise TypeError(f"expected a checkpoint directory, got {type(checkpoint_dir)}")
        state = checkpoint.load(Path(checkpoint_dir) / CHECKPOINT_FILE, kind="search")
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint format {state.get('version')} is not "
                             f"{CHECKPOINT_VERSION}")
        self.search.load_state_dict(state["search"])
        self._pending, self._final = (None if state[k] is None else
                                      CycleRecord.from_json(state[k]) for k in ("pending", "final"))
        self.files.load_state_dict(state["files"])

    # ----------------------------------------------------------------- one cycle
    def step(self) -> dict[str, Any]:
        s = self.search
        if s.finished:
            # Restored after the last cycle (the driver died before the trial was
            # marked done): report the final result again.
            return self._result(self._final, done=True)
        t0 = time.perf_counter()
        if s.cycle_done and not self.apply_decision():
            # No decision for this cycle in the config (a restored driver whose
            # experiment snapshot predates it): report the cycle again so the
            # scheduler decides; the decision is a pure function of this result.
            return self._result(self._pending or s.cycle_metrics(), redecide=True)
        if s.finished:  # the population stopped this seed (halve): no genotype
            self.files.write_cycles(s.cycle_log)
            self._final = s.cycle_log[-1]
            return self._result(self._final, done=True)
        record = s.run_cycle()
        self.files.trained(record.cycle, time.perf_counter() - t0, ray_compat.node_id())
        if record.cycle < s.num_cycles:
            self._pending = record
            if record.cycle in self.cfg.population.exploit_after(s.num_cycles):
                self.files.snapshot(record.cycle, s.state_dict())  # others may take it over
            self.files.write_cycles([*s.cycle_log, record])
            return self._result(record)
        # The last cycle: nothing to train after it, so the trial closes it itself.
        s.apply(s.decide(), record)
        self._pending = None
        path = self.files.write(GENOTYPE_FILE, s.genotype.to_json() + "\n")
        self.files.write_cycles(s.cycle_log)
        self._final = s.cycle_log[-1].with_columns(genotype_path=path)
        return self._result(self._final, done=True)

    def apply_decision(self) -> bool:
        """Apply the scheduler's decision for the cycle just trained, if the config holds it.

        Returns False when the config has no decision for this cycle.
        """
        s = self.search
        d = self.config.get(DECISION_KEY)
        if not d or int(d.get("cycle", -1)) != s.cycle:
            return False
        if d.get("error"):
            raise DecisionError(f"prune-and-replace after cycle {s.cycle + 1} failed: "
                                f"{d['error']}")
        record = self._pending or s.cycle_metrics()
        population = d.get("population") or {}
        if population.get("event"):
            record = record.with_columns(population_event=population["event"])
        self._pending = None
        if population.get("event") == HALVED:
            s.stop(record)
            return True
        if population.get("source"):  # exploit: take over a better seed's state first
            source = on_filesystem(self.trial_folder().fs, population["source"])
            s.adopt(checkpoint.load(source.uri, kind="search", data=source.read_bytes()))
        s.apply(PolicyResult.from_plain(d), record)
        return True

    def _identity(self) -> dict[str, Any]:
        return {"seed": self.cfg.seed, "space": self.cfg.space, "name": self.cfg.name}

    def _result(self, record: CycleRecord, **extra: Any) -> dict[str, Any]:
        # "softmax": Tune's TensorBoard logger makes one curve per edge and op of it.
        return {"genotype_path": None, **record.to_json(), **self._identity(),
                "trial_path": self.trial_folder().path, "redecide": False,
                "softmax": softmax_curves(record.pools, record.alphas), **extra}

    def trial_folder(self) -> Location:
        """The trial's folder in the experiment storage (where Tune's result.json lives)."""
        return ray_compat.trial_storage(self)
