"""Did the alphas learn? Per trial and cycle, how far the softmax weights moved against
what the same number of alpha steps gives without signal (``prnas.search.alpha_signal``).

A cycle whose decisions read alphas a random walk could have produced is flagged; the
report lists such cycles in one line, with the fix, before anyone reads a found cell.
"""

from __future__ import annotations

import pandas as pd

from prnas.search.alpha_signal import NOISE_FACTOR, is_noise

COLUMNS = ("alpha_steps", "alpha_spread", "alpha_spread_noise")


def signal_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial and cycle: steps, spread, noise figure, their ratio, the verdict."""
    keep = ["experiment", "trial_id", "space", "seed", "cycle", *COLUMNS]
    df = results[[c for c in keep if c in results.columns]].copy()
    df["signal"] = df["alpha_spread"] / df["alpha_spread_noise"]
    df["decided_on_noise"] = [is_noise(s, n) for s, n in
                              zip(df["alpha_spread"], df["alpha_spread_noise"])]
    return df.reset_index(drop=True)


def noise_statement(table: pd.DataFrame) -> str:
    """One line: how many cycles were decided on noise, and what to change."""
    n, bad = len(table), int(table["decided_on_noise"].sum())
    if bad == 0:
        return (f"Every one of the {n} cycles moved its alphas at least {NOISE_FACTOR:g} x as "
                "far as noise would: the decisions read a learned signal.")
    return (f"Warning: {bad} of {n} cycles were decided on noise (alpha spread under "
            f"{NOISE_FACTOR:g} x what their alpha steps give without signal): the pools they "
            "pruned and the cells they found are close to random draws. Give the alphas more "
            "steps per cycle (epochs - grace_epochs, steps_per_epoch; more data per epoch) "
            "and, if the spread is near 0, a larger optim.alpha_lr.")
