"""The evaluation network of the DARTS protocol, built from a genotype.

It mirrors DARTS' ``NetworkCIFAR`` module for module (stem, 20 cells with
reductions at 1/3 and 2/3, auxiliary head after the 2/3 cell, global pooling
and a linear classifier) so that parameter counts are comparable with the
published ones: the DARTS V2 cell at C=36, 20 cells gives exactly 3,349,342.
"""

from __future__ import annotations

import torch
from torch import nn

from prnas.nn.drop_path import drop_path
from prnas.nn.ops import FactorizedReduce, ReLUConvBN, build_op
from prnas.space.genotype import CellSpec, Genotype

AUX_PREFIX = "auxiliary_head"


class EvalCell(nn.Module):
    """One cell of a fixed genotype; nodes sum their two op outputs, the output concatenates."""

    def __init__(self, spec: CellSpec, concat: tuple[int, ...], c_prev_prev: int, c_prev: int,
                 channels: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        # After a reduction, s0 is at twice the resolution of s1 and must be halved too.
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels, affine=True) if reduction_prev
                            else ReLUConvBN(c_prev_prev, channels, affine=True))
        self.preprocess1 = ReLUConvBN(c_prev, channels, affine=True)
        self.indices = tuple(src for _, src in spec)
        self.concat = tuple(concat)
        self.ops = nn.ModuleList(
            build_op(op, channels, 2 if reduction and src < 2 else 1, search=False)
            for op, src in spec
        )
        # Identity outputs are never dropped: dropping a skip would only remove the
        # gradient highway that drop-path is meant to leave intact (DARTS does the same).
        self.droppable = tuple(not isinstance(m, nn.Identity) for m in self.ops)
        self.out_channels = len(self.concat) * channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = None
            for j in (2 * node, 2 * node + 1):
                h = self.ops[j](states[self.indices[j]])
                if self.training and drop_prob > 0.0 and self.droppable[j]:
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' ``AuxiliaryHeadCIFAR`` (built for 8x8 maps), usable at other resolutions;
    with ``stride=2, exact=(7, 8), bn=False`` its ``AuxiliaryHeadImageNet`` (built for
    the 7x7 map of 224 px inputs), including the BatchNorm after the 2x2 conv that DARTS
    omitted (its published runs trained without it, and its count never included the head).

    On a map of ``exact`` (min, max) side the 5x5 average pool yields 2x2 exactly as in
    DARTS; at any other size an adaptive pool to 2x2 takes its place. Pools have no
    parameters, so the layer shapes never change.
    """

    def __init__(self, channels: int, num_classes: int, *, stride: int = 3,
                 exact: tuple[int, int] = (8, 10), bn: bool = True) -> None:
        super().__init__()
        self.exact = exact
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.AvgPool2d(5, stride=stride, padding=0, count_include_pad=False)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), *([nn.BatchNorm2d(768)] if bn else []),
            nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        lo, hi = self.exact
        if all(lo <= side <= hi for side in x.shape[-2:]):
            x = self.pool(x)
        else:
            x = nn.functional.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


def build_cells(genotype: Genotype, layers: int, c_prev_prev: int, c_prev: int, c: int, *,
                reduction_prev: bool, aux_index: int) -> tuple[nn.ModuleList, int, int]:
    """DARTS' cell stack, shared by the CIFAR and the ImageNet network (they differ only in
    the stem): reductions at 1/3 and 2/3, where the channels double.

    Returns the cells, the last cell's output channels and those after cell ``aux_index``
    (where the auxiliary head reads).
    """
    cells = nn.ModuleList()
    c_aux = c_prev
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            c *= 2
        spec, concat = ((genotype.reduce, genotype.reduce_concat) if reduction
                        else (genotype.normal, genotype.normal_concat))
        cell = EvalCell(spec, concat, c_prev_prev, c_prev, c, reduction, reduction_prev)
        cells.append(cell)
        reduction_prev = reduction
        c_prev_prev, c_prev = c_prev, cell.out_channels
        if i == aux_index:
            c_aux = c_prev
    return cells, c_prev, c_aux


class DartsNetwork(nn.Module):
    """What DARTS' evaluation networks share after their stems: the cells, the auxiliary
    head after the 2/3 cell, global pooling and the classifier. A subclass builds its
    stems, then calls :meth:`_add_cells`, and says in :meth:`stems` what feeds the first
    cell; set ``drop_path_prob`` before each epoch.

    ``forward`` returns ``(logits, aux_logits)``; ``aux_logits`` is ``None`` unless
    the network is training and was built with the auxiliary head.
    """

    def __init__(self, genotype: Genotype, channels: int, layers: int, halved_by: str) -> None:
        super().__init__()
        if layers < 3:
            raise ValueError(f"layers must be >= 3 (two reduction cells and a normal one), "
                             f"got {layers}")
        if channels < 1 or channels % 2:
            raise ValueError(f"channels must be a positive even number ({halved_by} "
                             f"halves it), got {channels}")
        self.genotype = genotype
        self.layers = layers
        self.aux_index = 2 * layers // 3
        self.drop_path_prob = 0.0

    def _add_cells(self, c_prev_prev: int, c_prev: int, channels: int, reduction_prev: bool,
                   num_classes: int, aux_head: type[nn.Module] | None) -> None:
        self.cells, c_prev, c_aux = build_cells(self.genotype, self.layers, c_prev_prev, c_prev,
                                                channels, reduction_prev=reduction_prev,
                                                aux_index=self.aux_index)
        self.auxiliary_head = aux_head(c_aux, num_classes) if aux_head is not None else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first cell's two inputs."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        aux = None
        s0, s1 = self.stems(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, aux


class EvalNetwork(DartsNetwork):
    """DARTS' NetworkCIFAR for a genotype: one stem feeds both inputs of the first cell."""

    def __init__(self, genotype: Genotype, channels: int = 36, layers: int = 20,
                 num_classes: int = 10, auxiliary: bool = True, in_channels: int = 3,
                 stem_multiplier: int = 3) -> None:
        super().__init__(genotype, channels, layers, halved_by="FactorizedReduce")
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_stem),
        )
        self._add_cells(c_stem, c_stem, channels, reduction_prev=False,
                        num_classes=num_classes, aux_head=AuxiliaryHead if auxiliary else None)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters without the auxiliary head, as DARTS and the paper count them."""
    # By name component, so wrappers (DataParallel's "module.") do not change the count.
    return sum(p.numel() for name, p in model.named_parameters()
               if AUX_PREFIX not in name.split("."))
