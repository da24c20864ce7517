"""The two training steps of first-order DARTS, in a fast and a reference variant.

The reference variant is the straightforward implementation: the alphas stay
in the autograd graph in every forward (grace epochs and weight steps too, their
gradients thrown away), and the alpha step runs a full backward that also
computes every weight gradient. The fast variant computes the same losses and
the same gradients for what each step updates, without the rest:

- weight step: the alphas enter as constants, so no alpha graph is built and
  no alpha gradient is reduced, in grace epochs and normal epochs alike;
- alpha step: the network's weights are frozen for the forward and the
  backward asks for the alphas' gradients only, so no conv computes a weight
  gradient and nothing before the first mixed edge is recorded at all;
- the network's fast forward (shared input ReLU per edge, one fused
  multiply-accumulate per candidate), NHWC layout and optional bf16 autocast
  as ``prnas.runtime.performance`` resolves them.

Both are plain objects over the engine's network, alphas and optimisers, so a
benchmark or a test can drive either on the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from prnas.nn.search_net import SearchNetwork
from prnas.runtime.performance import Resolved, autocast, to_memory_format

__all__ = ["SearchSteps"]

Alphas = Mapping[str, Sequence[torch.Tensor]]


class SearchSteps:
    def __init__(self, net: SearchNetwork, alphas: Alphas, w_opt: torch.optim.Optimizer,
                 a_opt: torch.optim.Optimizer, *, grad_clip: float, perf: Resolved,
                 device: torch.device, forward: nn.Module | None = None,
                 alpha_grad_clip: float | None = None) -> None:
        self.net, self.alphas = net, alphas
        self.w_opt, self.a_opt = w_opt, a_opt
        self.grad_clip = grad_clip
        # The reference clips the architecture gradients too (norm 5, its train_search.py):
        # the Adam step then sees the same gradient scale as in the paper's runs.
        self.alpha_grad_clip = alpha_grad_clip
        self.perf, self.device = perf, device
        self.fast = perf.fast_path
        # ``forward`` may be a torch.compile'd wrapper of ``net`` sharing its parameters.
        self._forward = forward if forward is not None else net
        self._alpha_list = [a for t in alphas for a in alphas[t]]
        self._weights = list(net.parameters())
        net.fast_path = self.fast
        net.fused = perf.fuse
        # Fused: the gradient norm as one multi-tensor kernel, not one per parameter.
        self.foreach = True if perf.fuse else None

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        return to_memory_format(x.to(self.device, non_blocking=True), self.perf)

    def _inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._images(x), y.to(self.device, non_blocking=True)

    def _loss(self, x: torch.Tensor, y: torch.Tensor, alphas: Alphas
              ) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.perf):
            logits = self._forward(x, alphas)
        return nn.functional.cross_entropy(logits.float(), y), logits

    def constant_alphas(self) -> dict[str, list[torch.Tensor]]:
        return {t: [a.detach() for a in self.alphas[t]] for t in self.alphas}

    # ----------------------------------------------------------------- alpha step
    def alpha_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Set each alpha's ``.grad`` to d loss(valid batch) / d alpha; return the loss."""
        x, y = self._inputs(x, y)
        for a in self._alpha_list:
            a.grad = None
        if not self.fast:
            loss, _ = self._loss(x, y, self.alphas)
            loss.backward()  # every weight gradient too, as a straightforward step does
            return loss.detach()
        for w in self._weights:
            w.requires_grad_(False)
        try:
            loss, _ = self._loss(x, y, self.alphas)
            # allow_unused: a net with one cell type (layers < 3) never uses the other's
            # alphas; their grad stays None, as after the reference's backward().
            grads = torch.autograd.grad(loss, self._alpha_list, allow_unused=True)
        finally:
            for w in self._weights:
                w.requires_grad_(True)
        for a, g in zip(self._alpha_list, grads):
            a.grad = g
        return loss.detach()

    def alpha_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.alpha_gradients(x, y)
        if self.alpha_grad_clip is not None:
            # One norm over both cell types' alphas, as the reference clips them together.
            nn.utils.clip_grad_norm_(self._alpha_list, self.alpha_grad_clip,
                                     foreach=self.foreach)
        self.a_opt.step()

    # ----------------------------------------------------------------- weight step
    def weight_gradients(self, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Set each weight's ``.grad`` from the training batch; return (loss, logits, y)."""
        x, y = self._inputs(x, y)
        self.w_opt.zero_grad(set_to_none=True)
        alphas = self.constant_alphas() if self.fast else self.alphas
        loss, logits = self._loss(x, y, alphas)
        loss.backward()
        # Alphas only move in their own step (first-order DARTS).
        for a in self._alpha_list:
            a.grad = None
        return loss.detach(), logits.detach(), y

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
        loss, logits, y = self.weight_gradients(x, y)
        nn.utils.clip_grad_norm_(self._weights, self.grad_clip, foreach=self.foreach)
        self.w_opt.step()
        return loss.item(), int((logits.argmax(1) == y).sum()), len(y)

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.perf):
            return self._forward(self._images(x), self.constant_alphas()).float()
