"""The network a retrain trains, with its optimiser, schedule and one SGD step.

The retrainer's model part, as the supernet is the search's: built after the run
set-up (:mod:`prnas.runtime.prepare`), driven by the loop (:mod:`prnas.retrain.loop`),
composed by :class:`prnas.retrain.trainer.Retrainer`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from prnas.cost import count_macs
from prnas.nn.eval_net import count_parameters
from prnas.nn.eval_networks import build_eval_network
from prnas.retrain.config import RetrainConfig
from prnas.runtime.performance import autocast, compiled, to_memory_format
from prnas.runtime.prepare import RunSetup
from prnas.space.genotype import Genotype


class RetrainNetwork:
    """``model`` (the evaluation network), ``forward`` (what calls it: compiled, or
    data-parallel), its SGD optimiser and per-epoch schedule, ``params`` and ``macs``."""

    def __init__(self, cfg: RetrainConfig, genotype: Genotype, run: RunSetup) -> None:
        self.cfg, self.device, self.perf = cfg, run.device, run.perf
        self.model = build_eval_network(
            cfg.network.kind, genotype, channels=cfg.network.channels,
            layers=cfg.network.layers, num_classes=run.info.num_classes,
            auxiliary=cfg.network.auxiliary, in_channels=run.info.in_channels,
            auxiliary_bn=cfg.auxiliary_bn,
        ).to(run.device, memory_format=run.perf.memory_format)
        # A compiled wrapper shares the model's parameters; state dicts stay the model's.
        self.forward = compiled(self.model, run.perf)
        self.params = count_parameters(self.model)
        self.macs = count_macs(self.model, run.info.input_shape)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.optim.lr,
                                         momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay)
        self.scheduler = lr_scheduler(self.optimizer, cfg)
        self.criterion = nn.CrossEntropyLoss()
        # Smoothing regularises training only; the reported test loss stays plain (as DARTS).
        self.train_criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
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

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits (float32) of a batch; the caller sets eval mode and no_grad."""
        with autocast(self.device, self.perf):
            logits, _ = self.forward(to_memory_format(x, self.perf))
        return logits.float()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def lr_scheduler(optimizer: torch.optim.Optimizer,
                 cfg: RetrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: cosine to ``lr_min`` (CIFAR) or ``lr * lr_gamma^epoch``
    (DARTS' ImageNet ``StepLR(1, gamma)``); under ``behaviour: reference`` the ImageNet
    network trains with the reference code's linear decay (:func:`reference_linear`)."""
    if cfg.behaviour == "reference" and cfg.network.kind == "imagenet":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, functools.partial(reference_linear, epochs=cfg.epochs))
    if cfg.optim.lr_schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.optim.lr_gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs,
                                                      eta_min=cfg.optim.lr_min)


def reference_linear(epoch: int, epochs: int) -> float:
    """The factor on ``lr`` in epoch ``epoch`` (0-based) of the reference's ImageNet
    script: linear towards 0 over ``epochs - 5`` epochs, then, from ``lr / (epochs - 5)``,
    a five times smaller slope over the last five."""
    if epochs <= 5:
        return (epochs - epoch) / epochs
    if epochs - epoch > 5:
        return (epochs - 5 - epoch) / (epochs - 5)
    return (epochs - epoch) / ((epochs - 5) * 5)
