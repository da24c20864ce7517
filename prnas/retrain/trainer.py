"""One retrain of one genotype, an epoch at a time, with its complete resumable state.

The loop owns nothing global that it does not also save: model, optimiser,
scheduler, batch-size controller, every RNG stream (Python, NumPy, torch CPU
and CUDA, the batch-order generator) and the metric history. So a run killed
after epoch k and restored from its checkpoint continues exactly as if it had
never stopped, which ``tests/test_retrain.py`` checks to the bit on CPU.

No Ray here: the CLI (``python -m prnas.retrain``) and the Tune Trainable both
drive this same object.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prnas import model_file
from prnas.cost import Timing, count_macs, measure_timing
from prnas.data.datasets import retrain_datasets
from prnas.data.device_resident import DeviceBatches, DeviceDataset
from prnas.data.loading import sequential_batches
from prnas.data.source import DataInfo
from prnas.nn.eval_net import count_parameters
from prnas.nn.eval_networks import build_eval_network
from prnas.retrain.config import RetrainConfig
from prnas.retrain.schedule import drop_path_at, final_error
from prnas.runtime import checkpoint, rng
from prnas.runtime import state as run_state
from prnas.runtime.batch_size import AdaptiveBatchSampler, run_step_with_backoff
from prnas.runtime.guards import TrainingDiverged
from prnas.runtime.performance import autocast, compiled, to_memory_format
from prnas.runtime.prepare import prepare
from prnas.runtime.progress_log import ProgressLog
from prnas.space.genotype import Genotype

STATE_VERSION = 2  # 2: the config in its sections only, "best" always kept


class Retrainer:
    """Retrain ``genotype`` under ``cfg``: :meth:`setup`, then :meth:`train_epoch` until
    :attr:`done`; :meth:`save`/:meth:`restore` at any epoch boundary.

    ``progress`` shows a tqdm bar per epoch; keep it off inside Ray trials and tests.
    ``log`` hears of an epoch that runs long (a line after its quiet interval).
    """

    def __init__(self, cfg: RetrainConfig, genotype: Genotype, *, progress: bool = False,
                 log: ProgressLog | None = None) -> None:
        self.cfg = cfg
        self.genotype = genotype
        self.progress = progress
        self.log = log
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        # The epoch with the highest test accuracy so far and a CPU copy of its weights
        # (model.pt offers them, clearly named, beside the final ones).
        self.best: dict[str, Any] | None = None
        self._ready = False

    # ------------------------------------------------------------------ building

    def setup(self, datasets: tuple[Dataset, Dataset, DataInfo] | None = None) -> None:
        """The run set-up (:mod:`prnas.runtime.prepare`: device, seeds, data), then model,
        optimiser and schedule.

        ``datasets`` skips loading (tests, or several retrains on one dataset).
        """
        cfg = self.cfg
        run = prepare(cfg, lambda: _as_list(datasets or retrain_datasets(cfg.data,
                                                                        cutout=cfg.cutout)))
        self.device, self.perf, self.info = run.device, run.perf, run.info
        self.controller, self.augment_generator = run.controller, run.augment_rng
        self.train_set, self.test_set = run.datasets
        self.data_on_device, self.num_workers = run.data_on_device, run.num_workers
        self.model = build_eval_network(
            cfg.network.kind, self.genotype, channels=cfg.network.channels,
            layers=cfg.network.layers, num_classes=self.info.num_classes,
            auxiliary=cfg.network.auxiliary,
            in_channels=self.info.in_channels,
        ).to(self.device, memory_format=self.perf.memory_format)
        # A compiled wrapper shares the model's parameters; state dicts stay the model's.
        self.forward = compiled(self.model, self.perf)
        self.params = count_parameters(self.model)
        self.macs = count_macs(self.model, self.input_shape)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.optim.lr,
                                         momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay)
        self.scheduler = lr_scheduler(self.optimizer, cfg)
        # Batch order (and worker seeds) from their own stream, so changing how the
        # model consumes the global RNG (e.g. drop-path) does not reshuffle the data.
        self.generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([cfg.seed, 1]).generate_state(1)[0]))
        self.criterion = nn.CrossEntropyLoss()
        # Smoothing regularises training only; the reported test loss stays plain (as DARTS).
        self.train_criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self._ready = True

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """C x H x W of one input image."""
        return (self.info.in_channels, self.info.input_size, self.info.input_size)

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs

    def final_test_error(self) -> float | None:
        """The reported result (``prnas.retrain.schedule.final_error``): mean test error (%)
        of the last ``report_last`` epochs, or the last epoch's while the run is shorter."""
        return final_error(self.history, self.cfg.report_last)

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self) -> dict[str, Any]:
        """Train one epoch, evaluate on the test set, step the schedule; the epoch's metrics."""
        if not self._ready:
            raise RuntimeError("call setup() before train_epoch()")
        if self.done:
            raise RuntimeError(f"retrain already finished its {self.cfg.epochs} epochs")
        cfg = self.cfg
        start = time.perf_counter()
        drop_prob = drop_path_at(self.epoch, cfg.epochs, cfg.drop_path_prob)
        self.model.drop_path_prob = drop_prob
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss, train_acc, sizes = self._train_pass()
        test_loss, test_acc, test_top5 = self.evaluate_topk()
        self.scheduler.step()
        self.epoch += 1
        if self.best is None or test_acc > self.best["test_acc"]:
            self.best = {"epoch": self.epoch, "test_acc": test_acc,
                         "state_dict": {k: v.detach().to("cpu", copy=True)
                                        for k, v in self.model.state_dict().items()}}
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "test_error": 100.0 - test_acc,
            "test_top5_error": 100.0 - test_top5,
            "lr": lr,
            "drop_path_prob": drop_prob,
            "epoch_time_s": time.perf_counter() - start,
            "batch_size": sum(sizes) / len(sizes),
            "batch_size_last": sizes[-1],
            "params": self.params,
            "macs": self.macs,
        }
        self.history.append(row)
        row = {**row, "final_test_error": self.final_test_error()}
        self.history[-1] = row
        return dict(row)

    def _train_pass(self) -> tuple[float, float, list[int]]:
        from tqdm import tqdm

        self.model.train()
        loader = self._loader(self.train_set, AdaptiveBatchSampler(
            len(self.train_set), self.controller, self.generator))
        total_loss, correct, seen, sizes = 0.0, 0, 0, []
        t0 = time.perf_counter()
        bar = tqdm(total=len(self.train_set), unit="img", leave=False, disable=not self.progress,
                   desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}")
        with bar:
            for x, y in loader:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                loss, hits, used = run_step_with_backoff(
                    lambda bs, x=x, y=y: self._step(x[:bs], y[:bs]), self.controller,
                    used_size=lambda r: r[2])
                if not math.isfinite(loss):
                    raise TrainingDiverged.at(loss, f"epoch {self.epoch + 1} step {len(sizes) + 1}")
                total_loss += loss * used
                correct += hits
                seen += used
                sizes.append(used)
                bar.update(used)
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", bs=used)
                self._speak_if_due(len(sizes), seen, total_loss / seen, t0)
        return total_loss / seen, 100.0 * correct / seen, sizes

    def _speak_if_due(self, steps: int, seen: float, loss: float, t0: float) -> None:
        """A line from within an epoch that runs long (``log``: prnas.runtime.progress_log)."""
        if self.log is not None and self.log.due():
            self.log.say(f"epoch {self.epoch + 1}/{self.cfg.epochs}: {steps} steps, "
                         f"{seen:.0f}/{len(self.train_set)} images, loss {loss:.3f}, "
                         f"{time.perf_counter() - t0:.0f} s into the epoch")

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
        """One SGD step; repeatable after an OOM because it zeroes the gradients first."""
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.perf):
            logits, aux = self.forward(to_memory_format(x, self.perf))
        logits = logits.float()
        # The objective DARTS optimises and reports: main loss + weighted auxiliary loss.
        loss = self.train_criterion(logits, y)
        if aux is not None and self.cfg.network.auxiliary_weight > 0:
            loss = loss + self.cfg.network.auxiliary_weight * self.train_criterion(aux.float(), y)
        loss.backward()
        if self.cfg.optim.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        hits = int((logits.argmax(1) == y).sum())
        return float(loss.detach()), hits, len(y)

    @torch.no_grad()
    def evaluate_topk(self) -> tuple[float, float, float]:
        """(mean cross-entropy, top-1 %, top-5 %) on the test set, without drop-path or aux
        head; top-5 is top-k with
        k = min(5, classes), so 100 % on fewer than six classes."""
        self.model.eval()
        loader = self._loader(self.test_set, None, batch_size=self.cfg.eval_batch_size)
        total_loss, correct, correct5, seen = 0.0, 0, 0, 0
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with autocast(self.device, self.perf):
                logits, _ = self.forward(to_memory_format(x, self.perf))
            logits = logits.float()
            total_loss += float(self.criterion(logits, y)) * len(y)
            hits1, hits5 = topk_hits(logits, y)
            correct += hits1
            correct5 += hits5
            seen += len(y)
        return self._reduce_eval(total_loss, correct, correct5, seen)

    def _reduce_eval(self, total_loss: float, correct: int, correct5: int,
                     seen: int) -> tuple[float, float, float]:
        """Sums -> means; the data-parallel retrainer sums over its workers first."""
        return total_loss / seen, 100.0 * correct / seen, 100.0 * correct5 / seen

    def _loader(self, dataset: Dataset | DeviceDataset,
                batch_sampler: AdaptiveBatchSampler | None,
                batch_size: int = 1) -> DataLoader | DeviceBatches:
        if isinstance(dataset, DeviceDataset):
            batches = batch_sampler or sequential_batches(len(dataset), batch_size)
            return DeviceBatches(dataset, batches, self.augment_generator)
        kwargs: dict[str, Any] = {"batch_sampler": batch_sampler} if batch_sampler else {
            "batch_size": batch_size, "shuffle": False}
        workers = self.num_workers
        return DataLoader(dataset, num_workers=workers, generator=self.generator,
                          pin_memory=self.device.type == "cuda", **kwargs)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        if not self._ready:
            raise RuntimeError("call setup() before state_dict()")
        return {
            "version": STATE_VERSION,
            "config": self.cfg.model_dump(mode="json"),
            "genotype": self.genotype.to_dict(),
            "epoch": self.epoch,
            "history": [dict(r) for r in self.history],
            "model": self.model.state_dict(),
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "controller": self.controller.state_dict(),
            "rng": rng.capture(generator=self.generator, augment=self.augment_generator),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; refuses one from another genotype or protocol."""
        if not self._ready:
            raise RuntimeError("call setup() before load_state_dict()")
        run_state.check_version(state, STATE_VERSION, "retrain")
        saved = Genotype.from_dict(state["genotype"])
        if saved != self.genotype:
            raise ValueError(f"checkpoint is of genotype {saved.name!r}, not "
                             f"{self.genotype.name!r}: the cells differ")
        run_state.check_config(state["config"], self.cfg.model_dump(mode="json"),
                               RetrainConfig().model_dump(mode="json"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.controller.load_state_dict(state["controller"])
        self.epoch = int(state["epoch"])
        self.history = [dict(r) for r in state["history"]]
        self.best = state["best"]
        rng.restore(state["rng"], generator=self.generator, augment=self.augment_generator)

    # ------------------------------------------------------------------ the result

    def save_model(self, path: str | os.PathLike) -> None:
        """``model.pt`` (see :mod:`prnas.model_file`): final and best-test-epoch weights with
        everything needed to rebuild, evaluate and export the network without this object."""
        if not self._ready or not self.history:
            raise RuntimeError("save_model() needs at least one finished epoch")
        cfg, info, last = self.cfg, self.info, self.history[-1]
        network = model_file.NetworkSpec(
            kind=cfg.network.kind, channels=cfg.network.channels, layers=cfg.network.layers,
            num_classes=info.num_classes, in_channels=info.in_channels,
            input_size=info.input_size, auxiliary=cfg.network.auxiliary)
        metrics = {"epochs": self.epoch, "seed": cfg.seed, "dataset": info.name,
                   "params": self.params, "macs": self.macs, "report_last": cfg.report_last,
                   "final_test_error": self.final_test_error(),
                   **{k: last[k] for k in ("test_acc", "test_error", "test_loss",
                                           "test_top5_error")}}
        model_file.save(
            path, self.model, self.genotype, network, mean=info.mean, std=info.std,
            classes=class_names(self.train_set, info.num_classes),
            # Absolute paths: the evaluation may run from another working directory.
            data=cfg.data.with_absolute_paths().model_dump(mode="json"),
            evaluation={"batch_size": cfg.eval_batch_size,
                        "performance": cfg.performance.model_dump(mode="json")},
            metrics=metrics, best=self.best)

    def measure_timing(self) -> Timing:
        """Batch-1 latency and batch-64 throughput of the network on the run's device."""
        if not self._ready:
            raise RuntimeError("call setup() before measure_timing()")
        return measure_timing(self.model, self.input_shape, self.device,
                              channels_last=self.perf.channels_last)

    def save(self, path: str | os.PathLike) -> None:
        """Atomically: a reader (or a crash) never sees half a checkpoint."""
        checkpoint.save_atomic(self.state_dict(), path)

    def restore(self, path: str | os.PathLike) -> None:
        # CPU first: RNG states must stay CPU tensors; optimiser and model state
        # follow their parameters to the device when loaded.
        self.load_state_dict(checkpoint.load(path, map_location="cpu", kind="retrain"))


def _as_list(datasets: tuple[Dataset, Dataset, DataInfo]) -> tuple[list[Dataset], DataInfo]:
    train, test, info = datasets
    return [train, test], info


def lr_scheduler(optimizer: torch.optim.Optimizer,
                 cfg: RetrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: cosine to ``lr_min`` (CIFAR) or ``lr * lr_gamma^epoch``
    (DARTS' ImageNet ``StepLR(1, gamma)``)."""
    if cfg.optim.lr_schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.optim.lr_gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs,
                                                      eta_min=cfg.optim.lr_min)


def topk_hits(logits: torch.Tensor, y: torch.Tensor, k: int = 5) -> tuple[int, int]:
    """(top-1 hits, top-k hits) of a batch; k is capped at the class count."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    match = top == y.unsqueeze(1)
    return int(match[:, 0].sum()), int(match.any(dim=1).sum())


def class_names(dataset: Dataset, num_classes: int) -> list[str]:
    """The dataset's class names by index (torchvision's ``classes``), else ``0``, ``1``, ..."""
    base = getattr(dataset, "base", dataset)
    names = getattr(base, "classes", None)
    if isinstance(names, list | tuple) and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def log_line(row: dict[str, Any]) -> str:
    """One human-readable line per epoch for terminals and logs."""
    return (f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}% "
            f"| test loss {row['test_loss']:.4f} err {row['test_error']:.2f}% "
            f"| lr {row['lr']:.5f} drop-path {row['drop_path_prob']:.3f} "
            f"bs {row['batch_size']:.0f} | {row['epoch_time_s']:.1f}s")

