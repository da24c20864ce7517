"""The ImageNet (mobile setting) evaluation network of the DARTS protocol.

It mirrors DARTS' ``NetworkImageNet`` module for module, so parameter counts
are comparable with the published ones (DARTS V2 4.7M, P-DARTS 4.9M at C=48,
14 cells, 1000 classes): a stem of two stride-2 3x3 convolutions (``stem0``)
and a third stride-2 one (``stem1``) that feed a cell's two inputs at 1/4 and
1/8 of the resolution (so the first cell factorises its ``s0``), cells with
reductions at 1/3 and 2/3, an auxiliary head after the 2/3 cell and a global
average pool before the classifier.

Two deliberate, parameter-free generalisations make the same network run on
the small images of tests and trials: the global pool is adaptive (DARTS'
``AvgPool2d(7)`` on the 7x7 map of a 224x224 input computes the same thing),
and the auxiliary head pools adaptively to 2x2 when its map is not the 7x7 of
224 px inputs.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from prnas.nn.eval_net import AuxiliaryHead, DartsNetwork
from prnas.space.genotype import Genotype

__all__ = ["AuxiliaryHeadImageNet", "EvalNetworkImageNet"]


def AuxiliaryHeadImageNet(channels: int, num_classes: int,  # noqa: N802
                          bn: bool = False) -> AuxiliaryHead:
    """DARTS' ``AuxiliaryHeadImageNet`` (see :class:`~prnas.nn.eval_net.AuxiliaryHead`);
    ``bn``: with the BN after the 2x2 conv, as the PR-DARTS reference code has it."""
    return AuxiliaryHead(channels, num_classes, stride=2, exact=(7, 8), bn=bn)


class EvalNetworkImageNet(DartsNetwork):
    """DARTS' NetworkImageNet for a genotype; the same interface as
    :class:`~prnas.nn.eval_net.EvalNetwork` (``drop_path_prob``, ``(logits, aux)``)."""

    def __init__(self, genotype: Genotype, channels: int = 48, layers: int = 14,
                 num_classes: int = 1000, auxiliary: bool = True, in_channels: int = 3,
                 auxiliary_bn: bool = False) -> None:
        super().__init__(genotype, channels, layers, halved_by="the stem")
        c = channels
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )
        # stem0's output is at twice stem1's resolution: the first cell reduces its s0.
        self._add_cells(c, c, c, reduction_prev=True, num_classes=num_classes,
                        aux_head=(partial(AuxiliaryHeadImageNet, bn=auxiliary_bn)
                                  if auxiliary else None))

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)
