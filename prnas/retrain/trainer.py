"""One retrain of one genotype, an epoch at a time, with its complete resumable state.

Split as the search is: the run set-up (:mod:`prnas.runtime.prepare`), the network
with its optimiser and schedule (:mod:`prnas.retrain.network`), the passes over the
data (:mod:`prnas.retrain.loop`), composed here. The retrain owns nothing global
that it does not also save: model, optimiser,
scheduler, batch-size controller, every RNG stream (Python, NumPy, torch CPU
and CUDA, the batch-order generator) and the metric history. So a run killed
after epoch k and restored from its checkpoint continues exactly as if it had
never stopped, which ``tests/test_retrain.py`` checks to the bit on CPU.

No Ray here: the CLI (``python -m prnas.retrain``) and the Tune Trainable both
drive this same object.
"""

from __future__ import annotations

import os
import time
from typing import Any

from torch.utils.data import Dataset

from prnas import model_file
from prnas.cost import Timing, measure_timing
from prnas.data.datasets import retrain_datasets
from prnas.data.source import DataInfo
from prnas.retrain.config import RetrainConfig
from prnas.retrain.loop import RetrainLoop
from prnas.retrain.network import RetrainNetwork
from prnas.retrain.schedule import drop_path_at, final_error
from prnas.runtime import checkpoint, rng
from prnas.runtime import state as run_state
from prnas.runtime.prepare import RunSetup, prepare
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
        """The run set-up (:mod:`prnas.runtime.prepare`: device, seeds, data), then the
        network (:mod:`prnas.retrain.network`) and the loop (:mod:`prnas.retrain.loop`).

        ``datasets`` skips loading (tests, or several retrains on one dataset).
        """
        cfg = self.cfg
        self.run = prepare(cfg, lambda: datasets or retrain_datasets(cfg.data,
                                                                       cutout=cfg.cutout))
        self.net = RetrainNetwork(cfg, self.genotype, self.run)
        self.loop = self._loop(self.run)
        self._ready = True

    def _loop(self, run: RunSetup) -> RetrainLoop:
        return RetrainLoop(self.cfg, run, self.progress, self.log)

    # The parts' attributes, under the names callers know.
    device = property(lambda self: self.run.device)
    info = property(lambda self: self.run.info)
    model = property(lambda self: self.net.model)
    params = property(lambda self: self.net.params)
    macs = property(lambda self: self.net.macs)
    train_set = property(lambda self: self.loop.train_set)

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
        cfg, net = self.cfg, self.net
        start = time.perf_counter()
        drop_prob = drop_path_at(self.epoch, cfg.epochs, cfg.drop_path_prob)
        net.model.drop_path_prob = drop_prob
        lr = net.optimizer.param_groups[0]["lr"]
        train_loss, train_acc, sizes = self.loop.train_pass(net, self.epoch)
        test_loss, test_acc, test_top5 = self.loop.evaluate(net)
        net.scheduler.step()
        self.epoch += 1
        if self.best is None or test_acc > self.best["test_acc"]:
            self.best = {"epoch": self.epoch, "test_acc": test_acc,
                         "state_dict": {k: v.detach().to("cpu", copy=True)
                                        for k, v in net.model.state_dict().items()}}
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
            "params": net.params,
            "macs": net.macs,
        }
        self.history.append(row)
        row = {**row, "final_test_error": self.final_test_error()}
        self.history[-1] = row
        return dict(row)

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
            **self.net.state_dict(),  # model, optimizer, scheduler
            "best": self.best,
            "controller": self.run.controller.state_dict(),
            "rng": rng.capture(generator=self.loop.generator, augment=self.run.augment_rng),
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
        self.net.load_state_dict(state)
        self.run.controller.load_state_dict(state["controller"])
        self.epoch = int(state["epoch"])
        self.history = [dict(r) for r in state["history"]]
        self.best = state["best"]
        rng.restore(state["rng"], generator=self.loop.generator, augment=self.run.augment_rng)

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
            input_size=info.input_size, auxiliary=cfg.network.auxiliary,
            auxiliary_bn=cfg.auxiliary_bn)
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
        return measure_timing(self.model, self.info.input_shape, self.device,
                              channels_last=self.run.perf.channels_last)

    def save(self, path: str | os.PathLike) -> None:
        """Atomically: a reader (or a crash) never sees half a checkpoint."""
        checkpoint.save_atomic(self.state_dict(), path)

    def restore(self, path: str | os.PathLike) -> None:
        # CPU first: RNG states must stay CPU tensors; optimiser and model state
        # follow their parameters to the device when loaded.
        self.load_state_dict(checkpoint.load(path, map_location="cpu", kind="retrain"))


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

