"""Did the alphas learn? Per trial and cycle, how far the softmax weights moved against
what the same number of alpha steps gives without signal (``prnas.search.alpha_signal``).

A cycle whose decisions read alphas a random walk could have produced is flagged; the
report lists such cycles in one line, with the fix, before anyone reads a found cell.
"""

from __future__ import annotations

import pandas as pd

from prnas.search.alpha_signal import LARGER_LR, MORE_STEPS, NOISE_FACTOR, is_noise

COLUMNS = ("alpha_steps", "alpha_spread", "alpha_spread_noise")


def signal_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial and cycle: steps, spread, noise figure, their ratio, the verdict."""
    keep = ["experiment", "trial_id", "space", "seed", "cycle", *COLUMNS]
    df = results[[c for c in keep if c in results.columns]].copy()
    measured = df["alpha_spread"].notna() & (df["alpha_spread_noise"] > 0)
    df["signal"] = (df["alpha_spread"] / df["alpha_spread_noise"]).where(measured)
    # NA where there is no measure: a cycle from before it existed, or one whose edges
    # had a single candidate each (nothing to decide)
    df["decided_on_noise"] = pd.array(
        [is_noise(s, n) if m else None
         for s, n, m in zip(df["alpha_spread"], df["alpha_spread_noise"], measured)],
        dtype="boolean")
    return df.reset_index(drop=True)


def noise_statement(table: pd.DataFrame) -> str:
    """One line: how many cycles were decided on noise, and what to change."""
    verdicts = table["decided_on_noise"].dropna()
    n, bad = len(verdicts), int(verdicts.sum())
    unmeasured = len(table) - n
    note = (f" ({unmeasured} cycle(s) carry no measure: recorded before it existed, or "
            "nothing to decide)" if unmeasured else "")
    if n == 0:
        return ("No cycle carries the measure (recorded before it existed, or nothing to "
                "decide).")
    if bad == 0:
        return (f"Every one of the {n} measured cycles moved its alphas at least "
                f"{NOISE_FACTOR:g} x as far as noise would: the decisions read a learned "
                f"signal.{note}")
    return (f"Warning: {bad} of {n} cycles were decided on noise (alpha spread under "
            f"{NOISE_FACTOR:g} x what their alpha steps give without signal): the pools they "
            f"pruned and the cells they found are close to random draws. They need "
            f"{MORE_STEPS} and, where the spread is near 0, {LARGER_LR}.{note}")
