"""One readable console line per unit of work of a trial, for both Tune jobs.

The search prints one line per cycle (``prnas.tune.experiment.ProgressPrinter``), the
retrain one per epoch (``prnas.tune.retrain.EpochPrinter``); Ray's own status table
(JSON columns, a full table per update) stays off unless asked for. Lines go where every
prnas command sends progress (``prnas.cli.progress``: stderr, flushed); no stream is
kept on the callback, since Tune pickles callbacks with the experiment.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from prnas.cli import progress
from prnas.runtime.progress_log import ProgressLog

_STATES = ("RUNNING", "PAUSED", "PENDING", "TERMINATED", "ERROR")


class TrialProgress(tune.Callback):
    """A line per result that :meth:`line` formats, per finished trial and per error."""

    def out(self, line: str) -> None:
        progress(line)

    def label(self, trial: Any) -> str:
        return str(trial.trial_id)

    def line(self, result: dict[str, Any]) -> str | None:
        """The result's line (without label and trial counts); None: print nothing."""
        raise NotImplementedError

    def finished(self, trial: Any) -> str | None:
        """What a finished trial left behind, if worth a line."""
        return None

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        text = self.line(result)
        if text is None:
            return
        counts = {s: sum(_state(t) == s for t in trials) for s in _STATES}
        self.out(f"[{self.label(trial)}] {text}  | trials: "
                 + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        text = self.finished(trial)
        if text:
            self.out(f"[{self.label(trial)}] finished: {text}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.out(f"[{self.label(trial)}] FAILED: see {_error_file(trial)}")


def trial_log(label: str, verbosity: int) -> ProgressLog | None:
    """A trial's own console lines while it trains (the driver prints one per result):
    a line after 30 s of silence at verbosity 1, every epoch at 2, none at 0. Printed on
    the trial's stderr, which Ray forwards to the driver's stderr with its own prefix."""
    if verbosity <= 0:
        return None

    def emit(text: str) -> None:
        progress(f"[{label}] {text}")

    return ProgressLog(emit, every_epoch=verbosity >= 2)


def _state(trial: Any) -> str:
    """Tune's status, except that a trial waiting to continue after a result of its own
    (a search between cycles: Tune turns PAUSED into PENDING to queue it) is PAUSED; only
    trials that never ran are pending."""
    # training_iteration: only results a trial reported carry it (Tune fills a not yet
    # started trial's last_result with other keys)
    if trial.status == "PENDING" and (getattr(trial, "last_result", None) or {}).get(
            "training_iteration"):
        return "PAUSED"
    return trial.status


def _error_file(trial: Any) -> str:
    """The trial's error.txt as a path or, on remote storage, a URI naming the store."""
    from prnas.storage import on_filesystem

    storage = getattr(trial, "storage", None)
    fs = getattr(storage, "storage_filesystem", None)
    if fs is None:
        return f"{trial.path}/error.txt"
    return (on_filesystem(fs, trial.path) / "error.txt").uri
