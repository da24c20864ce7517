"""The in-process PR-DARTS search: cycles of first-order DARTS, then prune and replace.

``Search`` is a small state machine so that the same object serves the
command line (``run()``: every cycle, deciding itself) and the Ray Trainable
(``run_cycle()`` per Tune step, with the decision taken by the scheduler and
handed back through ``apply()``). Its whole state, RNGs included, round-trips
through ``state_dict()``, at epoch granularity.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from prnas.data.datasets import search_datasets, test_dataset
from prnas.data.device_resident import DeviceBatches, DeviceDataset
from prnas.data.loading import (
    augment_generator,
    device_splits,
    resolve_num_workers,
    sequential_batches,
)
from prnas.nn.search_net import SearchNetwork
from prnas.nn.transfer import transfer_weights
from prnas.runtime.batch_size import (
    AdaptiveBatchSampler,
    BatchSizeController,
    run_step_with_backoff,
)
from prnas.runtime.device import configure_threads, pick_device, seed_everything
from prnas.runtime.guards import TrainingDiverged
from prnas.runtime.memory import probe_for
from prnas.runtime.performance import compiled, resolve
from prnas.runtime.schedules import cosine_lr
from prnas.search.config import SearchConfig
from prnas.search.decision import decide_cycle
from prnas.search.genotype import derive_genotype
from prnas.search.policy import PolicyResult, cycle_from_json, cycle_to_json
from prnas.search.pools import (
    CELL_TYPES,
    Pools,
    histories_from_json,
    histories_to_json,
    initial_histories,
    initial_pools,
    pool_statistics,
    pools_from_json,
    pools_to_json,
)
from prnas.search.steps import SearchSteps
from prnas.space.genotype import Genotype

STATE_VERSION = 2  # 2: cycle_log in the survived/dropped/new vocabulary, plain JSON
EpochHook = Callable[["Search", dict], None]


@dataclass
class _Split:
    dataset: Any
    n: int


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Search:
    """One PR-DARTS search. Not thread-safe; one per process or Tune trial."""

    def __init__(self, cfg: SearchConfig, *, log: Callable[[str], None] | None = print) -> None:
        self.cfg = cfg
        self.log = log or (lambda _msg: None)
        configure_threads(cfg.num_threads)
        self.device = pick_device(cfg.device)
        self.perf = resolve(cfg.performance, self.device)
        seed_everything(cfg.seed)
        self.constraints = cfg.resolved_constraints()
        w_ds, a_ds, self.info = search_datasets(cfg.data)
        test = test_dataset(cfg.data) if cfg.evaluate_test else None
        self.controller = BatchSizeController(cfg.batch, probe_for(self.device,
                                                                   cfg.batch.memory_budget_bytes))
        # Device-resident data (prnas.data.loading): the splits as DeviceDatasets,
        # augmented from a stream of their own that the checkpoint keeps.
        self._augment_rng = augment_generator(cfg.seed)
        probe = self.controller.probe
        resident = device_splits(cfg.data.device_resident, self.device,
                                 [w_ds, a_ds] + ([test] if test is not None else []),
                                 probe.total_bytes() if probe is not None else None)
        if resident is not None:
            w_ds, a_ds, *rest = resident
            test = rest[0] if rest else None
        self.data_on_device = resident is not None
        self.num_workers = resolve_num_workers(cfg.data.num_workers, self.device,
                                               self.data_on_device)
        self._weights = _Split(w_ds, len(w_ds))
        self._alphas = _Split(a_ds, len(a_ds))
        self._test = test
        self.cycle = 0  # 0-based index of the cycle being trained
        self.epoch = 0  # epochs completed within that cycle
        self.pools: Pools = initial_pools(cfg.network.nodes, cfg.initial_ops())
        self.histories = initial_histories(self.pools)
        self.net = self._build_net(self.pools)
        self._fresh_cycle()
        self.epoch_log: list[dict] = []  # this cycle's epochs
        self.cycle_log: list[dict] = []  # finished cycles' metrics (flat, JSON-able)
        self.genotype: Genotype | None = None
        self.finished = False

    # ----------------------------------------------------------------- building
    def _build_net(self, pools: Pools) -> SearchNetwork:
        n = self.cfg.network
        net = SearchNetwork(pools, channels=n.channels, layers=n.layers, nodes=n.nodes,
                            num_classes=self.info.num_classes, in_channels=self.info.in_channels,
                            stem_multiplier=n.stem_multiplier, cell_output=n.cell_output)
        fmt = torch.channels_last if self.perf.channels_last else torch.contiguous_format
        return net.to(self.device, memory_format=fmt)

    def _fresh_cycle(self) -> None:
        """New alphas (1e-3 N(0,1)), fresh optimisers and batch size: every cycle restarts."""
        o = self.cfg.optim
        self.alphas = {
            t: nn.ParameterList(
                nn.Parameter(o.alpha_init_scale * torch.randn(len(edge), device=self.device))
                for edge in self.pools[t])
            for t in CELL_TYPES
        }
        self.w_opt = torch.optim.SGD(self.net.parameters(), lr=o.lr, momentum=o.momentum,
                                     weight_decay=o.weight_decay)
        self.a_opt = torch.optim.Adam([p for t in CELL_TYPES for p in self.alphas[t]],
                                      lr=o.alpha_lr, betas=o.alpha_betas,
                                      weight_decay=o.alpha_weight_decay)
        # A compiled forward is traced again for every cycle's network (new pools).
        self.steps = SearchSteps(self.net, self.alphas, self.w_opt, self.a_opt,
                                 grad_clip=o.grad_clip, perf=self.perf, device=self.device,
                                 forward=compiled(self.net, self.perf),
                                 alpha_grad_clip=o.alpha_grad_clip)
        self.controller.reset()

    # ----------------------------------------------------------------- queries
    @property
    def num_cycles(self) -> int:
        return len(self.cfg.schedule)

    @property
    def cycle_done(self) -> bool:
        return self.epoch >= self.cfg.schedule[self.cycle].epochs

    def alpha_values(self) -> dict[str, list[list[float]]]:
        return {t: [a.detach().cpu().tolist() for a in self.alphas[t]] for t in CELL_TYPES}

    # ----------------------------------------------------------------- training
    def _loader(self, split: _Split, epoch_seed: int) -> DataLoader | DeviceBatches:
        g = torch.Generator().manual_seed(epoch_seed)
        sampler = AdaptiveBatchSampler(split.n, self.controller, g)
        if isinstance(split.dataset, DeviceDataset):
            return DeviceBatches(split.dataset, sampler, self._augment_rng)
        return DataLoader(split.dataset, batch_sampler=sampler,
                          num_workers=self.num_workers,
                          pin_memory=self.device.type == "cuda")

    def _epoch_seed(self, stream: int) -> int:
        """Data order is a function of (seed, cycle, epoch): nothing to checkpoint for it."""
        return random.Random(f"{self.cfg.seed}-{self.cycle}-{self.epoch}-{stream}").getrandbits(62)

    def train_epoch(self) -> dict:
        """One epoch of the current cycle; returns (and logs) that epoch's metrics."""
        if self.finished or self.cycle_done:
            raise RuntimeError("no epoch left in this cycle; call decide()/apply() first")
        spec, o = self.cfg.schedule[self.cycle], self.cfg.optim
        lr = cosine_lr(self.epoch, spec.epochs, o.lr, o.lr_min)  # warm restart per cycle
        for g in self.w_opt.param_groups:
            g["lr"] = lr
        grace = self.epoch < spec.grace_epochs
        self.net.train()
        w_iter = iter(self._loader(self._weights, self._epoch_seed(0)))
        a_loader = self._loader(self._alphas, self._epoch_seed(1))
        a_iter = iter(a_loader)
        loss_sum = correct = seen = steps = 0
        peak_mb = 0.0
        sizes: list[int] = []
        t0 = time.perf_counter()
        for x, y in w_iter:
            if self.cfg.steps_per_epoch is not None and steps >= self.cfg.steps_per_epoch:
                break
            xa = ya = None
            if not grace:
                try:
                    xa, ya = next(a_iter)
                except StopIteration:
                    a_iter = iter(a_loader)
                    xa, ya = next(a_iter)

            # The two halves back off separately, so an out-of-memory retry never repeats
            # an optimiser step that already happened (one Adam step per training step).
            if xa is not None:
                run_step_with_backoff(
                    lambda b, xa=xa, ya=ya: self.steps.alpha_step(xa[:b], ya[:b]),
                    self.controller, record=False)

            def weight_step(b: int, x=x, y=y) -> tuple[float, int, int, float]:
                out = self.steps.weight_step(x[:b], y[:b])
                # Read before the controller's probe resets the peak counter.
                return (*out, _peak_memory_mb(self.device))

            loss, corr, b, peak = run_step_with_backoff(weight_step, self.controller,
                                                        used_size=lambda r: r[2])
            if not math.isfinite(loss):
                raise TrainingDiverged.at(
                    loss, f"cycle {self.cycle + 1} epoch {self.epoch + 1} step {steps + 1}")
            peak_mb = max(peak_mb, peak)
            loss_sum += loss * b
            correct += corr
            seen += b
            steps += 1
            sizes.append(b)
        elapsed = time.perf_counter() - t0
        valid_loss, valid_acc = self._evaluate(self._alphas)
        self.epoch += 1
        m = {
            "cycle": self.cycle + 1, "epoch": self.epoch, "lr": lr, "grace": grace,
            "train_loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen),
            "valid_loss": valid_loss, "valid_acc": valid_acc,
            "epoch_time_s": elapsed, "images_per_s": seen / max(elapsed, 1e-9),
            "steps": steps, "batch_size_mean": float(np.mean(sizes)) if sizes else 0.0,
            "batch_size_max": max(sizes, default=0),
            "peak_memory_mb": peak_mb,
        }
        self.epoch_log.append(m)
        self.log(f"cycle {m['cycle']}/{self.num_cycles} epoch {self.epoch}/{spec.epochs}"
                 f"{' (grace)' if grace else ''}: loss {m['train_loss']:.3f} "
                 f"acc {m['train_acc']:.3f} valid {valid_acc:.3f} "
                 f"bs {m['batch_size_mean']:.0f} {m['images_per_s']:.0f} img/s")
        return m

    @torch.no_grad()
    def _evaluate(self, split: _Split | None, dataset=None) -> tuple[float, float]:
        ds = dataset if dataset is not None else split.dataset
        self.net.eval()
        if isinstance(ds, DeviceDataset):
            loader = DeviceBatches(ds, sequential_batches(len(ds), self.cfg.eval_batch_size),
                                   self._augment_rng)
        else:
            loader = DataLoader(ds, batch_size=self.cfg.eval_batch_size, shuffle=False,
                                num_workers=self.num_workers)
        loss_sum = correct = seen = 0
        cap = self.cfg.steps_per_epoch
        for i, (x, y) in enumerate(loader):
            if cap is not None and i >= cap:
                break
            logits, y = self.steps.logits(x), y.to(self.device)
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        self.net.train()
        return loss_sum / max(1, seen), correct / max(1, seen)

    # ----------------------------------------------------------------- cycles
    def run_cycle(self, on_epoch: EpochHook | None = None) -> dict:
        """Train the rest of the current cycle; return its record (see :meth:`cycle_metrics`)."""
        while not self.cycle_done:
            m = self.train_epoch()
            if on_epoch is not None:
                on_epoch(self, m)
        return self.cycle_metrics()

    def cycle_metrics(self) -> dict:
        """The cycle's record: scalar metrics plus native values (``pools`` and ``histories``
        as Pools/Histories, ``alphas`` and ``epoch_metrics`` as lists); encoded only where it
        leaves the process (``prnas.search.policy.cycle_to_json``)."""
        spec = self.cfg.schedule[self.cycle]
        last = self.epoch_log[-1]
        m: dict[str, Any] = {
            "cycle": self.cycle + 1, "num_cycles": self.num_cycles,
            "epochs": spec.epochs, "grace_epochs": spec.grace_epochs,
            "train_loss": last["train_loss"], "train_acc": last["train_acc"],
            "valid_loss": last["valid_loss"], "valid_acc": last["valid_acc"],
            "cycle_time_s": float(sum(e["epoch_time_s"] for e in self.epoch_log)),
            "images_per_s": float(np.mean([e["images_per_s"] for e in self.epoch_log])),
            "batch_size_mean": float(np.mean([e["batch_size_mean"] for e in self.epoch_log])),
            "batch_size_max": int(max(e["batch_size_max"] for e in self.epoch_log)),
            "peak_memory_mb": float(max(e["peak_memory_mb"] for e in self.epoch_log)),
            **pool_statistics(self.pools),
            "epoch_metrics": [dict(e) for e in self.epoch_log],
            "pools": self.pools,
            "alphas": self.alpha_values(),
            "histories": self.histories,
        }
        if self._test is not None:
            m["test_loss"], m["test_acc"] = self._evaluate(None, self._test)
        return m

    def decide(self) -> PolicyResult:
        """The prune-and-replace decision for the cycle just trained (pure, seeded by cycle)."""
        return decide_cycle(self.cfg, self.cycle, self.pools, self.alpha_values(), self.histories)

    def apply(self, result: PolicyResult, metrics: dict | None = None) -> None:
        """Close the cycle: record it, then move to the next pools (or the genotype after the last).

        Survivors keep their weights by module name; each new op inherits its
        parent's weights once, through the morphism's transfer.
        """
        if not self.cycle_done:
            raise RuntimeError("apply() before the cycle finished training")
        record = dict(metrics if metrics is not None else self.cycle_metrics())
        record["decisions"] = result.decisions
        record["pools_next"] = result.pools
        self.cycle_log.append(record)
        if self.cycle == self.num_cycles - 1:
            self.genotype = derive_genotype(
                self.pools, self.alpha_values(), self.cfg.network.nodes, name=self.cfg.name,
                source=f"prnas search, space {self.cfg.space}, seed {self.cfg.seed}")
            # self.pools stays what the net and alphas were built for, so a finished
            # search's state loads again; the final pools are in cycle_log["pools_next"].
            self.finished = True
            return
        old = self.net
        self.net = self._build_net(result.pools)
        self._carry_weights(old, result)
        self.pools, self.histories = result.pools, result.histories
        self.cycle += 1
        self.epoch = 0
        self.epoch_log = []
        self._fresh_cycle()

    def _carry_weights(self, old: SearchNetwork, result: PolicyResult) -> None:
        old_sd = old.state_dict()
        with torch.no_grad():
            for k, v in self.net.state_dict().items():
                if k in old_sd and old_sd[k].shape == v.shape:
                    v.copy_(old_sd[k])
        for t, e, new in result.new_ops():
            for oc, nc in zip(old.cells_of(t), self.net.cells_of(t)):
                transfer_weights(new.parent, oc.edges[e].ops[str(new.parent)],
                                 new.op, nc.edges[e].ops[str(new.op)], new.morphism)

    def run(self, on_epoch: EpochHook | None = None,
            on_cycle: Callable[[Search], None] | None = None,
            stop_after_cycles: int | None = None) -> Genotype | None:
        """Every remaining cycle in-process, deciding itself; ``on_cycle`` after each one."""
        done = 0
        while not self.finished:
            if stop_after_cycles is not None and done >= stop_after_cycles:
                return None
            metrics = self.run_cycle(on_epoch)
            self.apply(self.decide(), metrics)
            done += 1
            if on_cycle is not None:
                on_cycle(self)
        return self.genotype

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {
            "version": STATE_VERSION,
            "config": self.cfg.model_dump(mode="json"),
            "cycle": self.cycle, "epoch": self.epoch, "finished": self.finished,
            "pools": pools_to_json(self.pools), "histories": histories_to_json(self.histories),
            "net": self.net.state_dict(),
            "alphas": {t: [a.detach().cpu() for a in self.alphas[t]] for t in CELL_TYPES},
            "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
            "controller": self.controller.state_dict(),
            "epoch_log": self.epoch_log,
            "cycle_log": [cycle_to_json(r) for r in self.cycle_log],
            "genotype": self.genotype.to_dict() if self.genotype else None,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate(), "augment": self._augment_rng.get_state()},
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"checkpoint format {state.get('version')} is not {STATE_VERSION}")
        self.cycle, self.epoch = state["cycle"], state["epoch"]
        self.finished = state["finished"]
        self.pools = pools_from_json(state["pools"])
        self.histories = histories_from_json(state["histories"])
        self.net = self._build_net(self.pools)
        self.net.load_state_dict(state["net"])
        self._fresh_cycle()
        with torch.no_grad():
            for t in CELL_TYPES:
                for a, saved in zip(self.alphas[t], state["alphas"][t], strict=True):
                    a.copy_(saved.to(self.device))
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.controller.load_state_dict(state["controller"])
        self.epoch_log = state["epoch_log"]
        self.cycle_log = [cycle_from_json(r) for r in state["cycle_log"]]
        self.genotype = Genotype.from_dict(state["genotype"]) if state["genotype"] else None
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if "augment" in state["rng"]:  # absent from checkpoints written before it existed
            self._augment_rng.set_state(state["rng"]["augment"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
