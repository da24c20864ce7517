"""Data-parallel retraining (PyTorch DDP): one retrain on N workers that computes what one
process computes with the same global batch and seed.

Every worker holds one contiguous shard of each global batch, so for the
arithmetic to match a single process, three things that a naive DDP loop
gets wrong per worker are made global:

- **BatchNorm statistics.** A worker's shard has other mean/variance than the
  global batch; training-mode BatchNorm therefore normalises with statistics
  summed over all workers (``torch.nn.SyncBatchNorm`` on CUDA; on CPU, where
  it is not implemented, :class:`GlobalBatchNorm2d`, the same arithmetic with
  autograd-aware all-reduces), and the running statistics follow the global
  batch on every worker.
- **Augmentation.** Each training image is transformed under a torch seed
  derived from ``(seed, epoch, image index)`` (:class:`SampleSeeded`), so it
  gets the same crop, flip, jitter and Cutout whichever worker, DataLoader
  process or batch it lands in.
- **Drop-path.** Every worker draws the masks of the whole global batch from
  its (identical) RNG stream and keeps its own rows
  (:func:`prnas.nn.drop_path.global_batch_masks`).

Gradients are averaged by DDP over equal shards, i.e. the gradient of the
global batch's mean loss; the global batch is ``batch.b_max``, fixed (an
adaptive size or an out-of-memory back-off on one worker would desynchronise
the others), and an epoch's last incomplete global batch is dropped so every
shard is equal. Metrics are summed over the workers.

No Ray here: ``prnas.tune.retrain_ddp`` runs it through Ray Train's
``TorchTrainer`` on a node or cluster (the tests' ``tests/ddp_local.py`` also on
local processes, without Ray).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prnas.nn.drop_path import global_batch_masks
from prnas.retrain.config import RetrainConfig
from prnas.retrain.loop import RetrainLoop
from prnas.retrain.network import RetrainNetwork
from prnas.retrain.trainer import Retrainer
from prnas.runtime.guards import TrainingDiverged
from prnas.runtime.prepare import RunSetup
from prnas.runtime.progress_log import ProgressLog
from prnas.space.genotype import Genotype

__all__ = ["DataParallelLoop", "DataParallelRetrainer", "GlobalBatchNorm2d", "SampleSeeded",
           "convert_batchnorm", "global_batches"]


# The differentiable all-reduce is deprecated in favour of a private module; it is the
# public autograd-aware one, so its once-per-layer warning only floods the logs.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce",
                        category=FutureWarning)


# ---------------------------------------------------------------- BatchNorm over all workers



def check_global_batch(b_max: int, workers: int) -> None:
    """ValueError unless the fixed global batch splits evenly over the workers (the driver
    asks before Ray starts; each worker asks again)."""
    if b_max % workers:
        raise ValueError(f"batch.b_max {b_max} (the global batch) must be divisible "
                         f"by the {workers} workers")

class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch.

    Two all-reduces per call (sum and count, then the centred sum of squares),
    both differentiable (``torch.distributed.nn``), so the backward pass is the
    global batch's as well. Outside training or without a process group of
    more than one worker it is exactly ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        local_n = torch.tensor([x.numel() // c], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), local_n]))
        count = sums[c].detach()
        mean = sums[:c] / count
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / count
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var.detach() * count / max(float(count) - 1.0, 1.0)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return out


def convert_batchnorm(model: nn.Module, cuda: bool) -> nn.Module:
    """Every BatchNorm2d of ``model`` synchronised over the process group, in place.

    The new layers share the old ones' parameters and buffers (an optimiser built
    before keeps working, state-dict keys are unchanged, so ``model.pt`` loads
    into the plain network).
    """
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum,
                                    child.affine, child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(model, name, new)
        else:
            convert_batchnorm(child, cuda)
    return model


# ---------------------------------------------------------------- data


class SampleSeeded(Dataset):
    """``base[i]`` drawn under a torch seed of ``(seed, epoch, i)``: an image's augmentation
    does not depend on the worker, DataLoader process or batch that loads it.

    Set :attr:`epoch` before creating each epoch's loader.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.inner = dataset
        self.seed = seed
        self.epoch = 0

    @property
    def base(self) -> Any:
        """The untransformed dataset (its ``classes`` name the labels in ``model.pt``)."""
        return getattr(self.inner, "base", self.inner)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        state = np.random.SeedSequence([self.seed, self.epoch, int(i), 11]).generate_state(1)[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(state))
            return self.inner[i]


def global_batches(n: int, batch: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch's shuffled global batches of exactly ``batch`` images (the rest dropped)."""
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]


# ---------------------------------------------------------------- the trainer


class DataParallelLoop(RetrainLoop):
    """The loop as worker ``rank`` of ``world_size``: its shard of each fixed global batch,
    sample-seeded augmentation, a strided share of the test set, sums over the workers."""

    def __init__(self, cfg: RetrainConfig, run: RunSetup, progress: bool, log: ProgressLog | None,
                 rank: int, world_size: int) -> None:
        super().__init__(cfg, run, progress, log)
        self.rank, self.world_size, self.global_batch = rank, world_size, cfg.batch.b_max
        self.train_set = SampleSeeded(self.train_set, cfg.seed)
        self.step_losses: list[list[float]] = []  # per finished epoch, over the global batch

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        if self.world_size > 1:
            if dist.get_backend() == "nccl":
                t = t.to(self.device)
            dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def train_pass(self, net: RetrainNetwork, epoch: int) -> tuple[float, float, list[int]]:
        net.model.train()
        batches = global_batches(len(self.train_set), self.global_batch, self.generator)
        if not batches:
            raise ValueError(f"{len(self.train_set)} training images do not fill one global "
                             f"batch of {self.global_batch} (batch.b_max)")
        per = self.global_batch // self.world_size
        mine = [b[self.rank * per:(self.rank + 1) * per] for b in batches]
        self.train_set.epoch = epoch
        loader = DataLoader(self.train_set, batch_sampler=mine, num_workers=self.run.num_workers,
                            pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        total_loss = correct = seen = 0.0
        steps: list[float] = []
        t0 = time.perf_counter()
        with global_batch_masks(self.rank, self.world_size):
            for x, y in loader:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                loss, hits, used = net.step(x, y)
                step_loss, step_hits, step_seen = self.all_sum([loss * used, hits, used])
                if not math.isfinite(step_loss):
                    raise TrainingDiverged.at(step_loss, f"epoch {epoch + 1} step "
                                              f"{len(steps) + 1}")
                steps.append(step_loss / step_seen)
                total_loss += step_loss
                correct += step_hits
                seen += step_seen
                self.speak_if_due(epoch, len(steps), seen, total_loss / seen, t0)
        self.step_losses.append(steps)
        return total_loss / seen, 100.0 * correct / seen, [self.global_batch] * len(batches)

    def loader(self, dataset: Dataset, batch_sampler: Any, batch_size: int = 1) -> Any:
        """Evaluation batches: every worker a strided share of the test set, summed in
        :meth:`reduce_eval`. Never given the batch-order generator (a DataLoader draws its
        worker seed from it), so evaluating does not move the next epoch's order."""
        mine = list(range(self.rank, len(dataset), self.world_size))  # type: ignore[arg-type]
        batches = batch_sampler or [mine[i:i + batch_size]
                                    for i in range(0, len(mine), batch_size)]
        return DataLoader(dataset, batch_sampler=batches, num_workers=self.run.num_workers,
                          pin_memory=self.device.type == "cuda")

    def reduce_eval(self, total_loss: float, correct: int, correct5: int,
                    seen: int) -> tuple[float, float, float]:
        total_loss, c1, c5, n = self.all_sum([total_loss, correct, correct5, seen])
        return super().reduce_eval(total_loss, int(c1), int(c5), int(n))


class DataParallelRetrainer(Retrainer):
    """:class:`Retrainer` as worker ``rank`` of ``world_size`` (defaults: the initialised
    process group, else a single process); same checkpoints, rows and ``model.pt``.

    With ``world_size == 1`` it is the single-process reference the workers match:
    the same fixed global batch, sample-seeded augmentation and dropped last batch.
    Only rank 0 should write files (:attr:`is_chief`).
    """

    def __init__(self, cfg: RetrainConfig, genotype: Genotype, *, rank: int | None = None,
                 world_size: int | None = None, progress: bool = False,
                 log: ProgressLog | None = None) -> None:
        group = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if group else 0)
        self.world_size = world_size if world_size is not None else (
            dist.get_world_size() if group else 1)
        check_global_batch(cfg.batch.b_max, self.world_size)
        if cfg.data.device_resident is True:
            raise ValueError("data.device_resident: true is not supported by data-parallel "
                             "retraining (its batch-wise augmentation is not per sample); "
                             "use false or auto")
        # Device-resident data augments whole batches from one stream: not per sample.
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(
            update={"device_resident": False})})
        super().__init__(cfg, genotype, progress=progress, log=log)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    step_losses = property(lambda self: self.loop.step_losses)

    def _loop(self, run: RunSetup) -> DataParallelLoop:
        return DataParallelLoop(self.cfg, run, self.progress, self.log, self.rank,
                                self.world_size)

    def setup(self, datasets: tuple[Dataset, Dataset, Any] | None = None) -> None:
        super().setup(datasets)
        if self.world_size > 1:
            cuda = self.device.type == "cuda"
            convert_batchnorm(self.model, cuda)
            self.net.forward = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if cuda else None,
                forward_sync_buffers=False)  # buffers are global already (BatchNorm above)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "step_losses": self.step_losses}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.loop.step_losses = [list(s) for s in state["step_losses"]]
