"""The model half of a search: the supernet on its pools, its alphas and both optimisers.

What changes between cycles lives here (a new network on the new pools, the
survivors' weights carried over, each new op's inherited once through its
morphism, fresh alphas and optimisers); what an epoch does with it lives in
:mod:`prnas.search.loop`, and where the data and device come from in
:mod:`prnas.search.setup`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prnas.nn.search_net import SearchNetwork
from prnas.nn.transfer import transfer_weights
from prnas.runtime.performance import compiled
from prnas.search.config import SearchConfig
from prnas.search.setup import SearchSetup
from prnas.search.steps import SearchSteps
from prnas.space.fates import NewOp, PolicyResult
from prnas.space.ops import Op
from prnas.space.pools import (
    CELL_TYPES,
    Pools,
    histories_from_plain,
    histories_plain,
    initial_histories,
    initial_pools,
    pools_from_plain,
    pools_plain,
)


def _parents_first(edge: tuple[Op, ...], made: Mapping[Op, NewOp]) -> list[Op]:
    """The ops of ``edge`` to make from a parent in the pool, each after its parent is made
    (the reference's order, in which ops were first seen, puts a parent before its child;
    pool order does not once a parent was rediscovered), otherwise in pool order; a cycle
    of rediscoveries is broken in pool order."""
    todo = [op for op in edge if op in made and made[op].parent in edge]
    order: list[Op] = []
    while todo:
        ready = [op for op in todo if made[op].parent not in todo] or todo[:1]
        order.append(ready[0])
        todo.remove(ready[0])
    return order


class Supernet:
    """The supernet of the current cycle with its alphas, optimisers and step functions."""

    def __init__(self, setup: SearchSetup) -> None:
        self.setup = setup
        self.device, self.perf, self.controller = setup.device, setup.perf, setup.controller
        self.num_classes, self.in_channels = setup.info.num_classes, setup.info.in_channels
        cfg = setup.cfg
        self.pools: Pools = initial_pools(cfg.network.nodes, cfg.initial_ops())
        self.histories = initial_histories(self.pools)
        self.net = self.build_net(self.pools)
        self.fresh_cycle()

    @property
    def cfg(self) -> SearchConfig:
        return self.setup.cfg

    def build_net(self, pools: Pools) -> SearchNetwork:
        n = self.cfg.network
        net = SearchNetwork(pools, channels=n.channels, layers=n.layers, nodes=n.nodes,
                            num_classes=self.num_classes, in_channels=self.in_channels,
                            stem_multiplier=n.stem_multiplier, cell_output=n.cell_output)
        return net.to(self.device, memory_format=self.perf.memory_format)

    def fresh_cycle(self) -> None:
        """New alphas (1e-3 N(0,1)), fresh optimisers and batch size: every cycle restarts."""
        o = self.cfg.optim
        self.alphas = {
            t: nn.ParameterList(
                nn.Parameter(o.alpha_init_scale * torch.randn(len(edge), device=self.device))
                for edge in self.pools[t])
            for t in CELL_TYPES
        }
        # Fused: each optimiser step as multi-tensor kernels, not a few ops per parameter.
        foreach = True if self.perf.fuse else None
        self.w_opt = torch.optim.SGD(self.net.parameters(), lr=o.lr, momentum=o.momentum,
                                     weight_decay=o.weight_decay, foreach=foreach)
        self.a_opt = torch.optim.Adam([p for t in CELL_TYPES for p in self.alphas[t]],
                                      lr=o.alpha_lr, betas=o.alpha_betas,
                                      weight_decay=o.alpha_weight_decay, foreach=foreach)
        # A compiled forward is traced again for every cycle's network (new pools).
        self.steps = SearchSteps(self.net, self.alphas, self.w_opt, self.a_opt,
                                 grad_clip=o.grad_clip, perf=self.perf, device=self.device,
                                 forward=compiled(self.net, self.perf),
                                 alpha_grad_clip=o.alpha_grad_clip)
        self.controller.reset()

    def alpha_values(self) -> dict[str, list[list[float]]]:
        return {t: [a.detach().cpu().tolist() for a in self.alphas[t]] for t in CELL_TYPES}

    def carry_weights(self, old: SearchNetwork, result: PolicyResult,
                      children: Mapping[tuple[str, int], Mapping[Op, NewOp]] | None = None
                      ) -> None:
        """Survivors keep their weights by module name; each new op inherits its
        parent's weights once, through the morphism's transfer.

        ``children`` (``behaviour: reference``, :func:`prnas.space.fates.lineage`): instead,
        every op ever added whose parent is in the new pool, new or surviving, is
        initialised from that parent's current weights, in pool order, as the reference
        code does at the start of every cycle: a surviving child loses its own training.
        """
        old_sd = old.state_dict()
        with torch.no_grad():
            for k, v in self.net.state_dict().items():
                if k in old_sd and old_sd[k].shape == v.shape:
                    v.copy_(old_sd[k])
        if children is not None:
            self._reinit_children(result.pools, children)
            return
        for t, e, new in result.new_ops():
            for oc, nc in zip(old.cells_of(t), self.net.cells_of(t)):
                transfer_weights(new.parent, oc.edges[e].ops[str(new.parent)],
                                 new.op, nc.edges[e].ops[str(new.op)], new.morphism)

    def _reinit_children(self, pools: Pools,
                         children: Mapping[tuple[str, int], Mapping[Op, NewOp]]) -> None:
        for t in CELL_TYPES:
            for e, edge in enumerate(pools[t]):
                made = children.get((t, e), {})
                for op in _parents_first(edge, made):
                    new = made[op]
                    for cell in self.net.cells_of(t):
                        ops = cell.edges[e].ops
                        transfer_weights(new.parent, ops[str(new.parent)], op, ops[str(op)],
                                         new.morphism, reference=True)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "pools": pools_plain(self.pools), "histories": histories_plain(self.histories),
            "net": self.net.state_dict(),
            "alphas": {t: [a.detach().cpu() for a in self.alphas[t]] for t in CELL_TYPES},
            "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild on the saved pools, then load weights, alphas and optimisers (the
        batch-size controller is restored by the caller, after: ``fresh_cycle`` resets it)."""
        self.pools = pools_from_plain(state["pools"])
        self.histories = histories_from_plain(state["histories"])
        self.net = self.build_net(self.pools)
        self.net.load_state_dict(state["net"])
        self.fresh_cycle()
        with torch.no_grad():
            for t in CELL_TYPES:
                for a, saved in zip(self.alphas[t], state["alphas"][t], strict=True):
                    a.copy_(saved.to(self.device))
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
