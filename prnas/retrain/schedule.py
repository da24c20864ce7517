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

    Averaging damps the epoch-to-epoch noise of a single test evaluation. A run
    of at most ``last`` epochs reports its last epoch alone: a mean over all of
    it would take in the first epochs, whose error is far above the network's
    (a 2-epoch demo run read 30-41 % against 15-25 % at its last epoch). None
    before any epoch.
    """
    if not history:
        return None
    tail = history[-last:] if len(history) > last else history[-1:]
    return sum(float(row["test_error"]) for row in tail) / len(tail)


def headline_rule(epochs: int, last: int) -> str:
    """How :func:`final_error` reads a run of ``epochs`` epochs, in words for the console."""
    if last == 1:
        return "the last epoch"
    if epochs > last:
        return f"mean of the last {last} epochs"
    return f"the last epoch (runs of at most report_last = {last} epochs are not averaged)"


def short_run_warning(epochs: int, last: int) -> str | None:
    """The console's warning when a run is too short for the averaged headline."""
    if epochs > last or last == 1:
        return None
    return (f"warning: {epochs} epoch(s) <= report_last {last}: the final test error is the "
            f"last epoch's, not a mean of {last}; the paper's protocol needs more epochs "
            f"than report_last (--epochs N)")
