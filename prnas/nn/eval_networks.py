"""Which evaluation network a retrain builds: one name per DARTS protocol.

One function so the retrainer, ``--params-only``, ``model.pt`` and the DDP
retrain build the same module for the same name.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from prnas.nn.eval_net import EvalNetwork
from prnas.nn.eval_net_imagenet import EvalNetworkImageNet
from prnas.space.genotype import Genotype

NetworkKind = Literal["cifar", "imagenet"]
KINDS: tuple[str, ...] = ("cifar", "imagenet")


def build_eval_network(kind: str, genotype: Genotype, *, channels: int, layers: int,
                       num_classes: int, auxiliary: bool, in_channels: int,
                       stem_multiplier: int = 3, auxiliary_bn: bool = False) -> nn.Module:
    """``cifar``: DARTS' NetworkCIFAR; ``imagenet``: its NetworkImageNet (mobile setting),
    with ``auxiliary_bn`` a BN after its auxiliary head's 2x2 conv (the PR-DARTS reference
    code's ImageNet head)."""
    if kind == "cifar":
        return EvalNetwork(genotype, channels=channels, layers=layers, num_classes=num_classes,
                           auxiliary=auxiliary, in_channels=in_channels,
                           stem_multiplier=stem_multiplier)
    if kind == "imagenet":
        return EvalNetworkImageNet(genotype, channels=channels, layers=layers,
                                   num_classes=num_classes, auxiliary=auxiliary,
                                   in_channels=in_channels, auxiliary_bn=auxiliary_bn)
    raise ValueError(f"unknown evaluation network {kind!r}; allowed: {', '.join(KINDS)}")
