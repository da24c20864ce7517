"""The DARTS proxy network over per-edge candidate pools (search flavour).

Candidate modules live in ``ModuleDict``s keyed by the op's canonical string,
so a state dict key such as ``cells.3.edges.7.ops.conv_k5_d1_e1...`` means the
same op in every cycle and survivors carry their weights by name alone.
Architecture weights are *not* parameters of this module: the engine owns them.

Two forward paths compute the same values. The reference path is DARTS as
written: every candidate on its own, ``sum(w * op(x))`` per edge. The fast
path (``fast_path = True``) rectifies an edge's input once for all candidates
that start with a ReLU, and folds every candidate of every edge into a node
with one multiply-accumulate each (``addcmul``), without the per-edge partial
sums. ``tests/test_fast_path.py`` holds them to the same losses and gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from prnas.nn.fused_cell import fused_cell_forward
from prnas.nn.ops import ConvOp, FactorizedReduce, ReLUConvBN, build_op
from prnas.space.ops import Op


class MixedEdge(nn.Module):
    def __init__(self, ops: Sequence[Op], channels: int, stride: int) -> None:
        super().__init__()
        self.op_values = tuple(ops)
        self.ops = nn.ModuleDict({str(op): build_op(op, channels, stride, search=True)
                                  for op in ops})
        # Plain lists for the hot loop: no op-string formatting or dict lookups per step.
        self._modules_in_order = [self.ops[str(op)] for op in self.op_values]
        self._starts_with_relu = [isinstance(m, (ConvOp, FactorizedReduce))
                                  for m in self._modules_in_order]
        self.needs_relu = any(self._starts_with_relu)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The reference path: ``sum(w * op(x))``, each candidate computed independently."""
        self._check(weights)
        return sum(w * self.ops[str(op)](x) for w, op in zip(weights, self.op_values))

    def candidate_outputs(self, x: torch.Tensor, x_relu: torch.Tensor | None
                          ) -> list[torch.Tensor]:
        """The fast path's per-candidate outputs; ``x_relu`` is ``relu(x)``, shared by the
        candidates that start with a ReLU (None when :attr:`needs_relu` is false)."""
        return [m(x_relu, relu_done=True, fast=True) if r else m(x)
                for m, r in zip(self._modules_in_order, self._starts_with_relu)]

    def _check(self, weights: torch.Tensor) -> None:
        if weights.shape[0] != len(self.op_values):
            raise ValueError(f"{len(self.op_values)} candidates but {weights.shape[0]} weights")


class SearchCell(nn.Module):
    def __init__(self, pool: Sequence[Sequence[Op]], nodes: int, c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool, cell_output: str) -> None:
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        self.cell_output = cell_output
        self.pre0 = (FactorizedReduce(c_pp, c, affine=False) if reduction_prev
                     else ReLUConvBN(c_pp, c, affine=False))
        self.pre1 = ReLUConvBN(c_p, c, affine=False)
        edges = []
        for j in range(nodes):
            for i in range(j + 2):
                stride = 2 if reduction and i < 2 else 1
                edges.append(MixedEdge(pool[len(edges)], c, stride))
        self.edges = nn.ModuleList(edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: Sequence[torch.Tensor],
                fast: bool = False, fused: bool = False) -> torch.Tensor:
        if fast and fused and self.training:
            return fused_cell_forward(self, s0, s1, weights)
        states = [self.pre0(s0), self.pre1(s1)]
        rectified: list[torch.Tensor | None] = [None, None]
        e = 0
        for _ in range(self.nodes):
            if fast:
                out = None
                for i, h in enumerate(list(states)):
                    edge, w = self.edges[e], weights[e]
                    edge._check(w)
                    if edge.needs_relu and rectified[i] is None:
                        rectified[i] = torch.relu(h)  # once per state, for all its edges
                    for k, y in enumerate(edge.candidate_outputs(h, rectified[i])):
                        out = y * w[k] if out is None else torch.addcmul(out, y, w[k])
                    e += 1
                rectified.append(None)
            else:
                out = 0
                for h in list(states):
                    out = out + self.edges[e](h, weights[e])
                    e += 1
            states.append(out)
        nodes = states[2:]
        if self.cell_output == "mean":
            return torch.stack(nodes).mean(0)
        return torch.cat(nodes, dim=1)


class SearchNetwork(nn.Module):
    """Stem, ``layers`` cells (reductions at 1/3 and 2/3), global pool, linear head."""

    def __init__(self, pools: Mapping[str, Sequence[Sequence[Op]]], *, channels: int,
                 layers: int, nodes: int, num_classes: int, in_channels: int = 3,
                 stem_multiplier: int = 3, cell_output: str = "concat") -> None:
        super().__init__()
        self.nodes = nodes
        self.fast_path = False
        self.fused = False  # with fast_path, in training: prnas.nn.fused_cell
        mult = nodes if cell_output == "concat" else 1
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_curr))
        c_pp, c_p, c = c_curr, c_curr, channels
        self.reduction_layers = {layers // 3, 2 * layers // 3} if layers >= 3 else set()
        cells, reduction_prev = [], False
        for i in range(layers):
            reduction = i in self.reduction_layers
            if reduction:
                c *= 2
            cell_type = "reduce" if reduction else "normal"
            cells.append(SearchCell(pools[cell_type], nodes, c_pp, c_p, c, reduction,
                                    reduction_prev, cell_output))
            reduction_prev = reduction
            c_pp, c_p = c_p, mult * c
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def cells_of(self, cell_type: str) -> list[SearchCell]:
        return [c for c in self.cells if (c.reduction == (cell_type == "reduce"))]

    def forward(self, x: torch.Tensor, alphas: Mapping[str, Sequence[torch.Tensor]]
                ) -> torch.Tensor:
        weights = {t: [torch.softmax(a, dim=-1) for a in alphas[t]] for t in alphas}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights["reduce" if cell.reduction else "normal"],
                              self.fast_path, self.fused)
        return self.classifier(torch.flatten(self.pool(s1), 1))
