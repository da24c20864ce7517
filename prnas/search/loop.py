"""The epoch loop of a search: one epoch of first-order DARTS on the supernet, and evaluation.

It owns no state of its own between epochs: data order is a function of
(seed, cycle, epoch) and everything else it touches (weights, alphas,
optimisers, batch-size controller, augmentation stream) belongs to the
supernet or the set-up, which the engine checkpoints.
"""

from __future__ import annotations

import math
import random
import resource
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from prnas.data.device_resident import DeviceBatches, DeviceDataset
from prnas.data.loading import sequential_batches
from prnas.runtime.batch_size import AdaptiveBatchSampler, run_step_with_backoff
from prnas.runtime.guards import TrainingDiverged
from prnas.runtime.progress_log import ProgressLog
from prnas.runtime.schedules import cosine_lr
from prnas.search.config import SearchConfig
from prnas.search.setup import SearchSetup, Split
from prnas.search.supernet import Supernet


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def epoch_line(m: dict[str, Any], num_cycles: int, epochs: int) -> str:
    """The console line of one search epoch."""
    return (f"cycle {m['cycle']}/{num_cycles} epoch {m['epoch']}/{epochs}"
            f"{' (grace)' if m['grace'] else ''}: loss {m['train_loss']:.3f} "
            f"acc {m['train_acc']:.3f} valid {m['valid_acc']:.3f} "
            f"bs {m['batch_size_mean']:.0f} {m['images_per_s']:.0f} img/s")


def step_line(cycle: int, epoch: int, num_cycles: int, epochs: int, steps: int, seen: int,
              loss: float, t0: float) -> str:
    """The console line of an epoch still running (0-based ``cycle`` and ``epoch``)."""
    return (f"cycle {cycle + 1}/{num_cycles} epoch {epoch + 1}/{epochs}: {steps} steps, "
            f"{seen} images, loss {loss:.3f}, {time.perf_counter() - t0:.0f} s into the epoch")


class EpochLoop:
    """Trains and evaluates a :class:`Supernet` on the data of a :class:`SearchSetup`."""

    def __init__(self, setup: SearchSetup) -> None:
        self.setup = setup

    @property
    def cfg(self) -> SearchConfig:
        return self.setup.cfg

    def _loader(self, split: Split, epoch_seed: int) -> DataLoader | DeviceBatches:
        s = self.setup
        g = torch.Generator().manual_seed(epoch_seed)
        sampler = AdaptiveBatchSampler(split.n, s.controller, g)
        if isinstance(split.dataset, DeviceDataset):
            return DeviceBatches(split.dataset, sampler, s.augment_rng)
        return DataLoader(split.dataset, batch_sampler=sampler, num_workers=s.num_workers,
                          pin_memory=s.device.type == "cuda")

    def epoch_seed(self, cycle: int, epoch: int, stream: int) -> int:
        """Data order is a function of (seed, cycle, epoch): nothing to checkpoint for it."""
        return random.Random(f"{self.cfg.seed}-{cycle}-{epoch}-{stream}").getrandbits(62)

    def train_epoch(self, model: Supernet, cycle: int, epoch: int,
                    log: ProgressLog | None = None) -> dict[str, Any]:
        """Epoch ``epoch`` (0-based) of cycle ``cycle`` (0-based); that epoch's metrics,
        with both counted from 1. ``log`` hears of an epoch that runs long."""
        spec, o, s = self.cfg.schedule[cycle], self.cfg.optim, self.setup
        lr = cosine_lr(epoch, spec.epochs, o.lr, o.lr_min)  # warm restart per cycle
        for g in model.w_opt.param_groups:
            g["lr"] = lr
        grace = epoch < spec.grace_epochs
        model.net.train()
        w_iter = iter(self._loader(s.weights, self.epoch_seed(cycle, epoch, 0)))
        a_loader = self._loader(s.alphas, self.epoch_seed(cycle, epoch, 1))
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
                    lambda b, xa=xa, ya=ya: model.steps.alpha_step(xa[:b], ya[:b]),
                    s.controller, record=False)

            def weight_step(b: int, x=x, y=y) -> tuple[float, int, int, float]:
                out = model.steps.weight_step(x[:b], y[:b])
                # Read before the controller's probe resets the peak counter.
                return (*out, _peak_memory_mb(s.device))

            loss, corr, b, peak = run_step_with_backoff(weight_step, s.controller,
                                                        used_size=lambda r: r[2])
            if not math.isfinite(loss):
                raise TrainingDiverged.at(
                    loss, f"cycle {cycle + 1} epoch {epoch + 1} step {steps + 1}")
            peak_mb = max(peak_mb, peak)
            loss_sum += loss * b
            correct += corr
            seen += b
            steps += 1
            sizes.append(b)
            if log is not None and log.due():
                log.say(step_line(cycle, epoch, len(self.cfg.schedule), spec.epochs, steps,
                                  seen, loss_sum / seen, t0))
        elapsed = time.perf_counter() - t0
        valid_loss, valid_acc = self.evaluate(model, s.alphas.dataset)
        return {
            "cycle": cycle + 1, "epoch": epoch + 1, "lr": lr, "grace": grace,
            "train_loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen),
            "valid_loss": valid_loss, "valid_acc": valid_acc,
            "epoch_time_s": elapsed, "images_per_s": seen / max(elapsed, 1e-9),
            "steps": steps, "batch_size_mean": float(np.mean(sizes)) if sizes else 0.0,
            "batch_size_max": max(sizes, default=0),
            "peak_memory_mb": peak_mb,
        }

    @torch.no_grad()
    def evaluate(self, model: Supernet, ds: Any) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of the supernet on ``ds``, in eval mode."""
        s = self.setup
        model.net.eval()
        if isinstance(ds, DeviceDataset):
            loader = DeviceBatches(ds, sequential_batches(len(ds), self.cfg.eval_batch_size),
                                   s.augment_rng)
        else:
            loader = DataLoader(ds, batch_size=self.cfg.eval_batch_size, shuffle=False,
                                num_workers=s.num_workers)
        loss_sum = correct = seen = 0
        cap = self.cfg.steps_per_epoch
        for i, (x, y) in enumerate(loader):
            if cap is not None and i >= cap:
                break
            logits, y = model.steps.logits(x), y.to(s.device)
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        model.net.train()
        return loss_sum / max(1, seen), correct / max(1, seen)
