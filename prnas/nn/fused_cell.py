"""The fused forward of a search cell: one computation per cell state for every candidate
of every edge that reads it, instead of one chain of small kernels per candidate.

Every edge leaving a state applies its candidates to the same tensor, so within a state:

- each pool runs once (its output is the same for every edge holding it);
- convs of the same structure (kernel, dilation, expansions) run as one depthwise conv
  over the input repeated once per candidate and one grouped pointwise conv over their
  stacked weights (``torch.cat`` of the modules' own parameters, so gradients, state-dict
  keys, weight transfer and checkpoints are the modules' as before);
- the skips of a reduction cell's stride-2 edges (``FactorizedReduce``) as two 1x1 convs
  over stacked weights;
- every BN after a candidate (all affine-free in the search) as one ``batch_norm`` over
  the concatenated outputs, whose running statistics are views into one buffer per state
  (the modules' buffers become those views, so the update lands in each module's own);
- and the weighted sum into the nodes as one matrix product with a (candidates x nodes)
  matrix of the softmax weights.

Used in training mode by the search's fast path (``performance.fuse``); evaluation keeps
the per-candidate path, whose BNs read each edge's own running statistics.
``tests/test_fast_path.py`` holds the fused step to the reference step's losses and
gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from prnas.nn.depthwise import depthwise
from prnas.nn.ops import ConvOp, FactorizedReduce

__all__ = ["fused_cell_forward"]


@dataclass
class _ConvGroup:
    """Convs of one structure on the edges of one state, in member order."""

    modules: list[ConvOp]
    blocks: int
    # Fused running statistics of every block's BN but the last (the last is the state's).
    inner_bns: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[nn.BatchNorm2d]]] = (
        field(default_factory=list))


@dataclass
class _StatePlan:
    needs_relu: bool
    pools: list[tuple[nn.Module, int]]  # (the pool, how many edges hold it)
    convs: list[_ConvGroup]
    reduces: list[FactorizedReduce]
    bns: list[nn.BatchNorm2d]  # the state's BNs in segment order
    running: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # fused mean, var, count
    index: torch.Tensor  # (nodes, segments) into the cell's flat weights (+ a zero)
    skip_index: torch.Tensor | None  # (nodes,), stride-1 skips


def _fuse_bns(bns: Sequence[nn.BatchNorm2d], interleave: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One buffer per statistic; each BN's buffers become views into it: member after
    member, or, with ``interleave``, channel-major (channel c of member m at c * M + m),
    the order of a state's stacked outputs (see :func:`fused_cell_forward`)."""
    m = len(bns)
    if interleave:
        mean = torch.stack([bn.running_mean for bn in bns], 1).flatten()
        var = torch.stack([bn.running_var for bn in bns], 1).flatten()
        views = [(mean[i::m], var[i::m]) for i in range(m)]
    else:
        mean = torch.cat([bn.running_mean for bn in bns])
        var = torch.cat([bn.running_var for bn in bns])
        edges = [sum(bn.num_features for bn in bns[:i]) for i in range(m + 1)]
        views = [(mean[a:b], var[a:b]) for a, b in zip(edges, edges[1:])]
    count = torch.stack([bn.num_batches_tracked for bn in bns])
    for i, bn in enumerate(bns):
        bn.running_mean, bn.running_var = views[i]
        bn.num_batches_tracked = count[i]
    return mean, var, count


def _is_view_of(bns: Sequence[nn.BatchNorm2d], fused: tuple[torch.Tensor, ...] | None) -> bool:
    if fused is None:
        return not bns
    bases = [t.untyped_storage().data_ptr() for t in fused]
    return all([bn.running_mean.untyped_storage().data_ptr(),
                bn.running_var.untyped_storage().data_ptr(),
                bn.num_batches_tracked.untyped_storage().data_ptr()] == bases for bn in bns)


class _CellPlan:
    """What the fused forward of one cell runs, built once (a cell's pools never change)."""

    def __init__(self, cell: nn.Module) -> None:
        nodes, states = cell.nodes, cell.nodes + 2
        # Each edge's softmax weights sit at offsets[e] in the cell's flat weight vector;
        # the last entry of that vector is a zero, for the nodes a state does not feed.
        sizes = [len(edge.op_values) for edge in cell.edges]
        offsets = [sum(sizes[:e]) for e in range(len(sizes))]
        self.zero = sum(sizes)
        out_edges: list[list[tuple[int, int]]] = [[] for _ in range(states)]
        e = 0
        for j in range(nodes):
            for i in range(j + 2):
                out_edges[i].append((e, j))
                e += 1
        self.states: list[_StatePlan] = []
        for edges in out_edges:
            if not edges:
                continue
            pools: dict[str, list[tuple[int, int, int, nn.Module]]] = {}
            convs: dict[tuple, list[tuple[int, int, int, ConvOp]]] = {}
            reduces: list[tuple[int, int, int, FactorizedReduce]] = []
            skips: list[tuple[int, int, int]] = []
            for e, j in edges:
                edge = cell.edges[e]
                for k, op in enumerate(edge.op_values):
                    m = edge.ops[str(op)]
                    if op.is_pool:
                        pools.setdefault(op.kind, []).append((e, j, k, m))
                    elif isinstance(m, ConvOp):
                        convs.setdefault((op.kernel, op.dilation, op.expansions), []).append(
                            (e, j, k, m))
                    elif isinstance(m, FactorizedReduce):
                        reduces.append((e, j, k, m))
                    else:
                        skips.append((e, j, k))
            members: list[tuple[int, int, int]] = []  # (edge, node, candidate) per segment
            bns: list[nn.BatchNorm2d] = []
            pool_plan = []
            for kind in sorted(pools):
                held = pools[kind]
                pool_plan.append((held[0][3][0], len(held)))
                members += [(e, j, k) for e, j, k, _ in held]
                bns += [m[1] for *_, m in held]
            groups = []
            for key in sorted(convs, key=str):
                held = convs[key]
                mods = [m for *_, m in held]
                group = _ConvGroup(mods, len(mods[0].blocks))
                for b in range(group.blocks - 1):
                    inner = [m.blocks[b].bn for m in mods]
                    group.inner_bns.append((*_fuse_bns(inner), inner))
                groups.append(group)
                members += [(e, j, k) for e, j, k, _ in held]
                bns += [m.blocks[-1].bn for m in mods]
            members += [(e, j, k) for e, j, k, _ in reduces]
            bns += [m.bn for *_, m in reduces]
            if any(bn.momentum is None or (bn.momentum, bn.eps) != (bns[0].momentum, bns[0].eps)
                   for bn in bns):
                raise ValueError("fusing BNs needs one momentum (not None) and eps for all")
            index = torch.full((nodes, len(members)), self.zero, dtype=torch.long)
            for s, (e, j, k) in enumerate(members):
                index[j, s] = offsets[e] + k
            skip_index = None
            if skips:
                skip_index = torch.full((nodes,), self.zero, dtype=torch.long)
                for e, j, k in skips:
                    skip_index[j] = offsets[e] + k
            self.states.append(_StatePlan(
                needs_relu=bool(groups or reduces), pools=pool_plan,
                convs=groups, reduces=[m for *_, m in reduces], bns=bns,
                running=_fuse_bns(bns, interleave=True) if bns else None, index=index,
                skip_index=skip_index))
        self.state_of = [i for i, edges in enumerate(out_edges) if edges]
        self._indices: dict[torch.device, list[tuple[torch.Tensor, torch.Tensor | None]]] = {}

    def indices(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each state's weight indices on ``device`` (moved once, not every step)."""
        if device not in self._indices:
            self._indices[device] = [
                (s.index.to(device), None if s.skip_index is None else s.skip_index.to(device))
                for s in self.states]
        return self._indices[device]

    def valid(self) -> bool:
        """False once a module's buffers stopped being views of the fused ones (moved to
        another device, or replaced): the plan is then built again from them."""
        for s in self.states:
            if not _is_view_of(s.bns, s.running):
                return False
            for g in s.convs:
                for mean, var, count, inner in g.inner_bns:
                    if not _is_view_of(inner, (mean, var, count)):
                        return False
        return True


def _plan(cell: nn.Module) -> _CellPlan:
    plan = cell.__dict__.get("_fused_plan")
    if plan is None or not plan.valid():
        plan = _CellPlan(cell)
        cell.__dict__["_fused_plan"] = plan
    return plan


def _batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor,
                count: torch.Tensor) -> torch.Tensor:
    count.add_(1)
    return F.batch_norm(x, mean, var, None, None, True, bn.momentum, bn.eps)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) as its (B, H, W, C) view: free for a channels-last tensor."""
    return x.permute(0, 2, 3, 1)


def _conv_group(x: torch.Tensor, g: _ConvGroup) -> list[torch.Tensor]:
    """The group's outputs, one (B, H, W, C) view per member."""
    n = len(g.modules)
    for b in range(g.blocks):
        blocks = [m.blocks[b] for m in g.modules]
        dw = blocks[0].depthwise
        if b == 0 and n > 1:
            x = torch.cat([x] * n, 1)
        w = torch.cat([blk.depthwise.weight for blk in blocks])
        x = depthwise(x, w, dw.stride[0], dw.dilation[0])
        x = F.conv2d(x, torch.cat([blk.pointwise.weight for blk in blocks]), None, 1, 0, 1, n)
        if b < g.blocks - 1:
            mean, var, count, bns = g.inner_bns[b]
            x = torch.relu_(_batch_norm(x, bns[0], mean, var, count))
    return list(_nhwc(x).unflatten(3, (n, -1)).unbind(3))


def _reduce_group(xr: torch.Tensor, mods: list[FactorizedReduce]) -> list[torch.Tensor]:
    """Each member's FactorizedReduce before its BN, one (B, H, W, C) tensor per member."""
    n, half = len(mods), mods[0].conv_1.out_channels
    shifted = F.pad(xr, (0, 1, 0, 1))[:, :, 1:, 1:]
    a = F.conv2d(xr, torch.cat([m.conv_1.weight for m in mods]), None, 2)
    b = F.conv2d(shifted, torch.cat([m.conv_2.weight for m in mods]), None, 2)
    # Per member: its conv_1 channels, then its conv_2 channels, as FactorizedReduce cats.
    pairs = torch.stack((_nhwc(a).unflatten(3, (n, half)), _nhwc(b).unflatten(3, (n, half))), 4)
    return list(pairs.flatten(4).unbind(3))


def fused_cell_forward(cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor,
                       weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """The cell's output for its two inputs and its edges' softmax weights (training mode).

    Layout: a state's M BN'ed candidate outputs are stacked channel-major, (B, H, W, C, M)
    in memory, so that one ``batch_norm`` (over C x M channels) normalises them all and
    one matrix product with the (M, nodes) weights sums them into every node it feeds,
    (B, H, W, C, nodes). On a channels-last network (the CPU default) every step between
    is a view.
    """
    plan = _plan(cell)
    for edge, w in zip(cell.edges, weights, strict=True):
        edge._check(w)
    flat = torch.cat([*weights, weights[0].new_zeros(1)])
    fmt = (torch.channels_last if s1.is_contiguous(memory_format=torch.channels_last)
           and not s1.is_contiguous() else torch.contiguous_format)
    states = [cell.pre0(s0), cell.pre1(s1)]
    acc: torch.Tensor | None = None  # (B, H, W, C, nodes)
    for i, sp, (index, skip_index) in zip(plan.state_of, plan.states,
                                         plan.indices(flat.device)):
        while len(states) <= i:  # node i - 2 has had every contribution
            states.append(acc[..., len(states) - 2].permute(0, 3, 1, 2)
                          .contiguous(memory_format=fmt))
        h = states[i]
        xr = torch.relu(h) if sp.needs_relu else None
        outs: list[torch.Tensor] = []
        for pool, holders in sp.pools:
            outs += [_nhwc(pool(h))] * holders
        for g in sp.convs:
            outs += _conv_group(xr, g)
        if sp.reduces:
            outs += _reduce_group(xr, sp.reduces)
        contrib = None
        if outs:
            stacked = torch.stack(outs, 4)  # (B, H, W, C, M)
            b_, h_, w_, c_, m_ = stacked.shape
            y = _batch_norm(stacked.flatten(3).permute(0, 3, 1, 2), sp.bns[0], *sp.running)
            y = y.permute(0, 2, 3, 1).unflatten(3, (c_, m_))
            contrib = torch.matmul(y, flat[index].t())  # (B, H, W, C, nodes)
        if skip_index is not None:
            skip = _nhwc(h)[..., None] * flat[skip_index]
            contrib = skip if contrib is None else contrib + skip
        acc = contrib if acc is None else acc + contrib
    nodes = acc.permute(0, 3, 4, 1, 2)  # (B, C, nodes, H, W)
    if cell.cell_output == "mean":
        return nodes.mean(2).contiguous(memory_format=fmt)
    # The concatenation of the nodes: node-major channels.
    return nodes.transpose(1, 2).flatten(1, 2).contiguous(memory_format=fmt)
