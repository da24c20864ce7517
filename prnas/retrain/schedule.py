"""Per-epoch decisions of the retrain protocol, as pure functions of plain numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def drop_path_at(epoch: int, epochs: int, max_prob: float) -> float:
    """DARTS' linear ramp: ``max_prob * epoch / epochs`` for the 0-indexed ``epoch``.

    It starts at 0 (a fresh network is not regularised) and reaches
    ``max_prob * (epochs - 1) / epochs`` in the last epoch, exactly as DARTS.
    """
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch must lie in [0, {epochs}), got {epoch}")
    return max_prob * epoch / epochs


def final_error(history: Sequence[Mapping[str, float]], last: int = 5) -> float | None:
    """The reported result: mean ``test_error`` over the last ``last`` epochs (paper IV-C).

    Averaging damps the epoch-to-epoch noise of a single test evaluation; with
    fewer epochs than ``last`` it averages what there is, None before any epoch.
    """
    if not history:
        return None
    tail = history[-last:]
    return sum(float(row["test_error"]) for row in tail) / len(tail)
