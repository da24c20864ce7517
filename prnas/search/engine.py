"""The in-process PR-DARTS search: cycles of first-order DARTS, then prune and replace.

``Search`` is a small state machine so that the same object serves the
command line (``run()``: every cycle, deciding itself) and the Ray Trainable
(``run_cycle()`` per Tune step, with the decision taken by the scheduler and
handed back through ``apply()``). Its whole state, RNGs included, round-trips
through ``state_dict()``, at epoch granularity.

It is a thin facade over three parts, split the way Lightning splits a
DataModule, a LightningModule and a loop: :mod:`prnas.search.setup` (threads,
device, seeds, data), :mod:`prnas.search.supernet` (the network, its alphas and
optimisers, what changes between cycles) and :mod:`prnas.search.loop` (one
epoch, evaluation). The facade owns the progress (cycle, epoch, logs) and the
checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from prnas.cycle_record import CycleRecord
from prnas.runtime import rng, state
from prnas.runtime.progress_log import ProgressLog
from prnas.search.alpha_signal import cycle_signal
from prnas.search.config import SearchConfig
from prnas.search.decision import decide_cycle
from prnas.search.genotype import derive_genotype
from prnas.search.loop import EpochLoop, epoch_line
from prnas.search.setup import prepare
from prnas.search.supernet import Supernet
from prnas.space.fates import PolicyResult, lineage
from prnas.space.genotype import Genotype
from prnas.space.pools import pool_statistics

STATE_VERSION = 3  # 3: cycle_log as CycleRecord.to_json, pools as plain JSON
EpochHook = Callable[["Search", dict], None]


def _on_model(name: str) -> property:
    """An attribute of the supernet (``Search.model``) under the name callers know,
    readable and settable."""
    return property(lambda self: getattr(self.model, name),
                    lambda self, value: setattr(self.model, name, value))


class Search:
    """One PR-DARTS search. Not thread-safe; one per process or Tune trial."""

    def __init__(self, cfg: SearchConfig, *, log: ProgressLog | None = None) -> None:
        self.log = log
        self.setup = prepare(cfg)
        self.model = Supernet(self.setup)
        self.loop = EpochLoop(self.setup)
        self.cycle = 0  # 0-based index of the cycle being trained
        self.epoch = 0  # epochs completed within that cycle
        self.epoch_log: list[dict] = []  # this cycle's epochs
        self.cycle_log: list[CycleRecord] = []  # finished cycles, with their decisions
        self.genotype: Genotype | None = None
        self.finished = False

    # ----------------------------------------------------------------- parts
    @property
    def cfg(self) -> SearchConfig:
        """The config, held once (in the set-up) for the engine, supernet and loop."""
        return self.setup.cfg

    @cfg.setter
    def cfg(self, cfg: SearchConfig) -> None:
        self.setup.cfg = cfg

    # The set-up's and the supernet's attributes, under the names callers know.
    device = property(lambda self: self.setup.device)
    perf = property(lambda self: self.setup.perf)
    info = property(lambda self: self.setup.info)
    controller = property(lambda self: self.setup.controller)
    data_on_device = property(lambda self: self.setup.data_on_device)
    num_workers = property(lambda self: self.setup.num_workers)
    alphas = property(lambda self: self.model.alphas)
    w_opt = property(lambda self: self.model.w_opt)
    a_opt = property(lambda self: self.model.a_opt)
    steps = property(lambda self: self.model.steps)

    net = _on_model("net")  # replaced whole when the pools change
    pools = _on_model("pools")
    histories = _on_model("histories")

    # ----------------------------------------------------------------- queries
    @property
    def num_cycles(self) -> int:
        return len(self.cfg.schedule)

    @property
    def cycle_done(self) -> bool:
        return self.epoch >= self.cfg.schedule[self.cycle].epochs

    def alpha_values(self) -> dict[str, list[list[float]]]:
        return self.model.alpha_values()

    # ----------------------------------------------------------------- training
    def train_epoch(self) -> dict:
        """One epoch of the current cycle; returns (and logs) that epoch's metrics."""
        if self.finished or self.cycle_done:
            raise RuntimeError("no epoch left in this cycle; call decide()/apply() first")
        m = self.loop.train_epoch(self.model, self.cycle, self.epoch, self.log)
        self.epoch += 1
        self.epoch_log.append(m)
        if self.log is not None:
            self.log.epoch(epoch_line(m, self.num_cycles, self.cfg.schedule[self.cycle].epochs))
        return m

    # ----------------------------------------------------------------- cycles
    def run_cycle(self, on_epoch: EpochHook | None = None) -> CycleRecord:
        """Train the rest of the current cycle; return its record (see :meth:`cycle_metrics`)."""
        while not self.cycle_done:
            m = self.train_epoch()
            if on_epoch is not None:
                on_epoch(self, m)
        if self.log is not None:  # the caller prints the cycle's line next
            self.log.mark()
        return self.cycle_metrics()

    def cycle_metrics(self) -> CycleRecord:
        """The record of the cycle just trained (not decided yet)."""
        spec = self.cfg.schedule[self.cycle]
        last = self.epoch_log[-1]
        columns: dict[str, Any] = {
            "num_cycles": self.num_cycles,
            "epochs": spec.epochs, "grace_epochs": spec.grace_epochs,
            "train_loss": last["train_loss"], "train_acc": last["train_acc"],
            "valid_loss": last["valid_loss"], "valid_acc": last["valid_acc"],
            "cycle_time_s": float(sum(e["epoch_time_s"] for e in self.epoch_log)),
            "images_per_s": float(np.mean([e["images_per_s"] for e in self.epoch_log])),
            "batch_size_mean": float(np.mean([e["batch_size_mean"] for e in self.epoch_log])),
            "batch_size_max": int(max(e["batch_size_max"] for e in self.epoch_log)),
            "peak_memory_mb": float(max(e["peak_memory_mb"] for e in self.epoch_log)),
            **pool_statistics(self.pools),
            **self.alpha_signal(),
        }
        if self.setup.test is not None:
            columns["test_loss"], columns["test_acc"] = self.loop.evaluate(self.model,
                                                                           self.setup.test)
        return CycleRecord(cycle=self.cycle + 1, pools=self.pools, alphas=self.alpha_values(),
                           histories=self.histories,
                           epoch_metrics=[dict(e) for e in self.epoch_log], columns=columns)

    def alpha_signal(self) -> dict[str, float | int]:
        """How far this cycle's alphas moved, and how far noise would have moved them
        (``prnas.search.alpha_signal``): the columns that say whether a decision is noise."""
        o = self.cfg.optim
        steps = sum(e["steps"] for e in self.epoch_log if not e["grace"])
        return cycle_signal(self.alpha_values(), init_scale=o.alpha_init_scale,
                            alpha_lr=o.alpha_lr, alpha_steps=steps)

    def decide(self) -> PolicyResult:
        """The prune-and-replace decision for the cycle just trained (pure, seeded by cycle)."""
        return decide_cycle(self.cfg, self.cycle, self.pools, self.alpha_values(), self.histories)

    def apply(self, result: PolicyResult, record: CycleRecord | None = None) -> None:
        """Close the cycle: record it, then move to the next pools (or the genotype after the last).

        Survivors keep their weights by module name; each new op inherits its
        parent's weights once, through the morphism's transfer.
        """
        if not self.cycle_done:
            raise RuntimeError("apply() before the cycle finished training")
        record = record if record is not None else self.cycle_metrics()
        self.cycle_log.append(record.decided(result))
        if self.cycle == self.num_cycles - 1:
            self.genotype = derive_genotype(
                self.pools, self.alpha_values(), self.cfg.network.nodes, name=self.cfg.name,
                source=f"prnas search, space {self.cfg.space}, seed {self.cfg.seed}",
                # what a random-baseline comparison groups by (analysis.baseline)
                extra={"kind": "searched", "space": self.cfg.space})
            # self.pools stays what the net and alphas were built for, so a finished
            # search's state loads again; the final pools are in cycle_log[-1].pools_next.
            self.finished = True
            return
        old = self.net
        self.net = self.model.build_net(result.pools)
        self.model.carry_weights(old, result, lineage(
            r.decisions or () for r in self.cycle_log) if self.cfg.behaviour == "reference"
            else None)
        self.pools, self.histories = result.pools, result.histories
        self.cycle += 1
        self.epoch = 0
        self.epoch_log = []
        self.model.fresh_cycle()

    def run(self, on_epoch: EpochHook | None = None,
            on_cycle: Callable[[Search], None] | None = None,
            stop_after_cycles: int | None = None) -> Genotype | None:
        """Every remaining cycle in-process, deciding itself; ``on_cycle`` after each one."""
        done = 0
        while not self.finished:
            if stop_after_cycles is not None and done >= stop_after_cycles:
                return None
            record = self.run_cycle(on_epoch)
            self.apply(self.decide(), record)
            done += 1
            if on_cycle is not None:
                on_cycle(self)
        return self.genotype

    def adopt(self, saved: dict, *, own_rng: bool = True) -> None:
        """Take over another seed's state after the same cycle (population exploit, as PBT
        copies a checkpoint): network and alpha weights, optimisers, batch-size state,
        pools and histories (the next :meth:`apply` restarts alphas, optimisers and batch
        size, as every cycle does; the copied alphas decide the pools). This search keeps
        its own cycle and epoch logs and, with ``own_rng``, its own random streams, so it
        goes on from the copied state its own way. Refuses a state of another cycle or of
        a config that differs in more than seed, name and memory budget (GPU models
        differ)."""
        mine = self.state_dict()
        if (saved["cycle"], saved["epoch"]) != (self.cycle, self.epoch):
            raise ValueError(f"cannot adopt the state after cycle {saved['cycle'] + 1} epoch "
                             f"{saved['epoch']} at cycle {self.cycle + 1} epoch {self.epoch}")
        state.check_config(saved["config"], mine["config"],
                           SearchConfig().model_dump(mode="json"),
                           state.MAY_DIFFER | {"seed", "name", "batch.memory_budget_bytes"})
        keep = ("config", "epoch_log", "cycle_log", "genotype") + (("rng",) if own_rng else ())
        self.load_state_dict({**saved, **{k: mine[k] for k in keep}})

    def stop(self, record: CycleRecord) -> None:
        """End the search after the cycle just trained without deciding it (population
        halve): ``record`` closes the log, and there is no genotype."""
        self.cycle_log.append(record)
        self.finished = True

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "config": self.cfg.model_dump(mode="json"),
            "cycle": self.cycle, "epoch": self.epoch, "finished": self.finished,
            **self.model.state_dict(),
            "controller": self.controller.state_dict(),
            "epoch_log": self.epoch_log,
            "cycle_log": [r.to_json() for r in self.cycle_log],
            "genotype": self.genotype.to_dict() if self.genotype else None,
            "rng": rng.capture(augment=self.setup.augment_rng),
        }

    def load_state_dict(self, saved: dict) -> None:
        """Continue from ``saved``; refuses another state format or a config that computes
        something else (one line naming each differing field), like the retrain."""
        state.check_version(saved, STATE_VERSION, "search")
        state.check_config(saved["config"], self.cfg.model_dump(mode="json"),
                           SearchConfig().model_dump(mode="json"))
        self.cycle, self.epoch = saved["cycle"], saved["epoch"]
        self.finished = saved["finished"]
        self.model.load_state_dict(saved)
        self.controller.load_state_dict(saved["controller"])
        self.epoch_log = saved["epoch_log"]
        self.cycle_log = [CycleRecord.from_json(r) for r in saved["cycle_log"]]
        self.genotype = Genotype.from_dict(saved["genotype"]) if saved["genotype"] else None
        rng.restore(saved["rng"], augment=self.setup.augment_rng)
