"""How far a cycle's alphas moved, against what the same number of steps gives on noise.

Every decision of a cycle (which candidates survive, which parent is morphed,
the final genotype) reads the softmax of the alphas. When a cycle gives them
too few steps, or too small a learning rate, for the architecture gradient to
show, those softmax weights are noise around uniform and every decision is a
coin toss. This module puts a number on that, so the console line, the result
tables and the report can say it.

- ``alpha_spread``: the mean over edges of (max - min) softmax weight: 0 when an
  edge is uniform, 1 when one candidate holds all the weight.
- ``alpha_spread_noise``: the same measure for alphas that received the
  cycle's Adam steps without any signal. Adam divides each step by the running
  gradient scale, so a gradient of zero mean moves an alpha by about ``lr`` a
  step in a random direction: after ``n`` steps a random walk of standard
  deviation ``lr * sqrt(n)`` (for first-moment betas <= 0.9 the
  autocorrelation of the moment cancels its smaller variance), added to the
  ``N(0, init_scale**2)`` initialisation. A consistent gradient moves an alpha
  up to ``lr * n`` instead, so a spread near the noise figure means the
  decisions could have come from the random walk alone.

Pure Python (no torch), so analysis code can recompute it from a results table.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from statistics import fmean

from prnas.space.weights import softmax

#: A cycle whose spread is below this multiple of the noise figure took its decisions on
#: alphas a random walk would have produced (see docs/search.md, "Do the alphas learn?").
NOISE_FACTOR = 2.0
#: Below this spread the softmax is practically uniform, whatever the noise figure says.
UNIFORM = 0.01
#: The fixes the console and the report name (one wording for both).
MORE_STEPS = "more alpha steps per cycle (epochs - grace_epochs, steps_per_epoch)"
LARGER_LR = "an alpha learning rate that lets the alphas move (optim.alpha_lr)"
_DRAWS = 4000  # Monte Carlo draws per edge size: the noise figure to about 1 %


def edge_spread(alphas: Sequence[float]) -> float:
    """(max - min) softmax weight of one edge; 0 for an edge with one candidate."""
    w = softmax(alphas)
    return max(w) - min(w) if len(w) > 1 else 0.0


def mean_spread(alphas: Mapping[str, Sequence[Sequence[float]]]) -> float:
    """``alpha_spread``: the mean of :func:`edge_spread` over the edges (with more than one
    candidate) of every cell type."""
    spreads = [edge_spread(a) for edges in alphas.values() for a in edges if len(a) > 1]
    return fmean(spreads) if spreads else 0.0


@lru_cache(maxsize=256)
def _noise_spread(k: int, sigma: float) -> float:
    """E[(max - min) softmax(sigma * z)] for z ~ N(0, I_k), by a fixed-seed Monte Carlo
    (deterministic: the same figure on every machine and run)."""
    if k < 2 or sigma == 0.0:
        return 0.0
    rng = random.Random(f"alpha-noise-{k}")
    total = 0.0
    for _ in range(_DRAWS):
        w = softmax([sigma * rng.gauss(0.0, 1.0) for _ in range(k)])
        total += max(w) - min(w)
    return total / _DRAWS


def noise_sigma(init_scale: float, alpha_lr: float, alpha_steps: int) -> float:
    """Standard deviation of an alpha after ``alpha_steps`` Adam steps without signal."""
    return math.sqrt(init_scale ** 2 + alpha_lr ** 2 * alpha_steps)


def noise_spread(edge_sizes: Iterable[int], *, init_scale: float, alpha_lr: float,
                 alpha_steps: int) -> float:
    """``alpha_spread_noise``: the mean spread expected over edges of these sizes when the
    alphas move as a random walk (see the module docstring)."""
    sigma = round(noise_sigma(init_scale, alpha_lr, alpha_steps), 12)
    sizes = [k for k in edge_sizes if k > 1]
    return fmean(_noise_spread(k, sigma) for k in sizes) if sizes else 0.0


def cycle_signal(alphas: Mapping[str, Sequence[Sequence[float]]], *, init_scale: float,
                 alpha_lr: float, alpha_steps: int) -> dict[str, float | int]:
    """The per-cycle columns: ``alpha_steps``, ``alpha_spread``, ``alpha_spread_noise``."""
    sizes = [len(a) for edges in alphas.values() for a in edges]
    return {
        "alpha_steps": int(alpha_steps),
        "alpha_spread": mean_spread(alphas),
        "alpha_spread_noise": noise_spread(sizes, init_scale=init_scale, alpha_lr=alpha_lr,
                                           alpha_steps=alpha_steps),
    }


def is_noise(spread: float, noise: float) -> bool:
    """True when a decision read alphas no further from uniform than noise would put them
    (false where there was nothing to decide: no edge with two candidates, noise 0)."""
    return spread < NOISE_FACTOR * noise


def softmax_curves(pools: Mapping[str, Sequence[Sequence[object]]],
                   alphas: Mapping[str, Sequence[Sequence[float]]]
                   ) -> dict[str, dict[str, dict[str, float]]]:
    """``{cell_type: {"edgeNN": {op: softmax weight}}}``: one scalar per candidate, the
    nested form that Tune's TensorBoard logger flattens into one curve per edge and op
    (tag ``ray/tune/softmax/normal/edge03/conv_k5_d1``), the search process of the
    paper's Fig. 2."""
    return {t: {f"edge{e:02d}": dict(zip((str(op) for op in edge), softmax(a)))
                for e, (edge, a) in enumerate(zip(pools[t], alphas[t]))}
            for t in pools}


def _measured(record: Mapping[str, object]) -> bool:
    """A record that carries the measure (a cycle checkpointed before it existed does not)."""
    return all(record.get(k) is not None for k in ("alpha_spread", "alpha_spread_noise"))


def signal_text(record: Mapping[str, object]) -> str:
    """The console fragment of a cycle record: its spread beside the noise figure."""
    if not _measured(record):
        return "alpha spread not recorded"
    return (f"alpha spread {record['alpha_spread']:.3g} "
            f"(noise {record['alpha_spread_noise']:.3g})")


def noise_warning(record: Mapping[str, object]) -> str | None:
    """The one-line warning for a cycle decided on noise, naming the fix; None otherwise."""
    if not _measured(record):
        return None
    spread, noise = float(record["alpha_spread"]), float(record["alpha_spread_noise"])
    if not is_noise(spread, noise):
        return None
    fix = MORE_STEPS if spread >= UNIFORM else f"{LARGER_LR} and {MORE_STEPS}"
    return (f"warning: cycle {record['cycle']} decided on noise: alpha spread {spread:.3g} "
            f"< {NOISE_FACTOR:g} x {noise:.3g}, what {record['alpha_steps']} alpha steps give "
            f"without signal; needs {fix}")
