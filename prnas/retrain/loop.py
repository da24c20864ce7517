"""One retrain epoch's passes over the data: training (adaptive batch size, out-of-memory
back-off) and the test evaluation.

The retrainer's loop, as the epoch loop is the search's: it owns the data side of a
run (the datasets of the run set-up, the batch-order generator) and drives a
:class:`~prnas.retrain.network.RetrainNetwork` through them. The data-parallel loop
(``prnas.retrain.ddp``) replaces how batches are cut and sums over workers.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from prnas.data.device_resident import DeviceBatches, DeviceDataset
from prnas.data.loading import sequential_batches
from prnas.retrain.config import RetrainConfig
from prnas.retrain.network import RetrainNetwork
from prnas.runtime.batch_size import AdaptiveBatchSampler, run_step_with_backoff
from prnas.runtime.guards import TrainingDiverged
from prnas.runtime.prepare import RunSetup
from prnas.runtime.progress_log import ProgressLog


class RetrainLoop:
    """``progress``: a tqdm bar per epoch; ``log`` hears of an epoch that runs long."""

    def __init__(self, cfg: RetrainConfig, run: RunSetup, progress: bool = False,
                 log: ProgressLog | None = None) -> None:
        self.cfg, self.run, self.progress, self.log = cfg, run, progress, log
        self.device, self.controller = run.device, run.controller
        self.train_set, self.test_set = run.datasets
        # Batch order (and worker seeds) from their own stream, so changing how the
        # model consumes the global RNG (e.g. drop-path) does not reshuffle the data.
        self.generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([cfg.seed, 1]).generate_state(1)[0]))

    def train_pass(self, net: RetrainNetwork, epoch: int) -> tuple[float, float, list[int]]:
        """One epoch of SGD steps (``epoch`` 0-based): mean loss, accuracy %, batch sizes."""
        from tqdm import tqdm

        net.model.train()
        loader = self.loader(self.train_set, AdaptiveBatchSampler(
            len(self.train_set), self.controller, self.generator))
        total_loss, correct, seen, sizes = 0.0, 0, 0, []
        t0 = time.perf_counter()
        bar = tqdm(total=len(self.train_set), unit="img", leave=False, disable=not self.progress,
                   desc=f"epoch {epoch + 1}/{self.cfg.epochs}")
        with bar:
            for x, y in loader:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                loss, hits, used = run_step_with_backoff(
                    lambda bs, x=x, y=y: net.step(x[:bs], y[:bs]), self.controller,
                    used_size=lambda r: r[2])
                if not math.isfinite(loss):
                    raise TrainingDiverged.at(loss, f"epoch {epoch + 1} step {len(sizes) + 1}")
                total_loss += loss * used
                correct += hits
                seen += used
                sizes.append(used)
                bar.update(used)
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", bs=used)
                self.speak_if_due(epoch, len(sizes), seen, total_loss / seen, t0)
        return total_loss / seen, 100.0 * correct / seen, sizes

    def speak_if_due(self, epoch: int, steps: int, seen: float, loss: float, t0: float) -> None:
        """A line from within an epoch that runs long (``log``: prnas.runtime.progress_log)."""
        if self.log is not None and self.log.due():
            self.log.say(f"epoch {epoch + 1}/{self.cfg.epochs}: {steps} steps, "
                         f"{seen:.0f}/{len(self.train_set)} images, loss {loss:.3f}, "
                         f"{time.perf_counter() - t0:.0f} s into the epoch")

    @torch.no_grad()
    def evaluate(self, net: RetrainNetwork) -> tuple[float, float, float]:
        """(mean cross-entropy, top-1 %, top-5 %) on the test set, without drop-path or aux
        head; top-5 is top-k with k = min(5, classes), so 100 % on fewer than six classes."""
        net.model.eval()
        loader = self.loader(self.test_set, None, batch_size=self.cfg.eval_batch_size)
        total_loss, correct, correct5, seen = 0.0, 0, 0, 0
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            logits = net.logits(x)
            total_loss += float(net.criterion(logits, y)) * len(y)
            hits1, hits5 = topk_hits(logits, y)
            correct += hits1
            correct5 += hits5
            seen += len(y)
        return self.reduce_eval(total_loss, correct, correct5, seen)

    def reduce_eval(self, total_loss: float, correct: int, correct5: int,
                    seen: int) -> tuple[float, float, float]:
        """Sums -> means; the data-parallel loop sums over its workers first."""
        return total_loss / seen, 100.0 * correct / seen, 100.0 * correct5 / seen

    def loader(self, dataset: Dataset | DeviceDataset,
               batch_sampler: AdaptiveBatchSampler | None,
               batch_size: int = 1) -> DataLoader | DeviceBatches:
        if isinstance(dataset, DeviceDataset):
            batches = batch_sampler or sequential_batches(len(dataset), batch_size)
            return DeviceBatches(dataset, batches, self.run.augment_rng)
        kwargs: dict[str, Any] = {"batch_sampler": batch_sampler} if batch_sampler else {
            "batch_size": batch_size, "shuffle": False}
        return DataLoader(dataset, num_workers=self.run.num_workers, generator=self.generator,
                          pin_memory=self.device.type == "cuda", **kwargs)


def topk_hits(logits: torch.Tensor, y: torch.Tensor, k: int = 5) -> tuple[int, int]:
    """(top-1 hits, top-k hits) of a batch; k is capped at the class count."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    match = top == y.unsqueeze(1)
    return int(match[:, 0].sum()), int(match.any(dim=1).sum())
