"""Faults and interrupts that tests inject into Tune runs through what they pass in.

Nothing of this ships: a search experiment takes a trainable class and callbacks
(``SearchExperiment(trainable=..., callbacks=...)``, ``run_search.main(argv,
trainable=..., callbacks=...)``), the data-parallel retrain a training loop
(``ddp_trainable(loop)``). The module pickles by value, so Ray workers, which do not
have ``tests/`` on their path, get its classes and functions with the task.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import ray.cloudpickle
from ray import tune

from prnas.tune import ray_compat
from prnas.tune.search_trainable import SearchTrainable

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class InjectedFailure(RuntimeError):
    """Raised on purpose: a trial dying mid-cycle."""


def faulty(fault: dict[str, Any]) -> type[SearchTrainable]:
    """A SearchTrainable that dies once, after an epoch of cycle ``fault["cycle"]``.

    ``marker``: a file that makes it once (a retried trial finds it and trains on).
    ``hang_s``: first write the node id into the marker and wait up to that long for
    the node to be removed (the node-loss tests), then raise. ``armed_by``: nothing
    happens until that file exists (a test arms the fault for a resumed run only).
    """

    class FaultyTrainable(SearchTrainable):
        def _build(self, config: dict[str, Any]) -> None:
            super()._build(config)
            train_epoch = self.search.train_epoch

            def then_maybe_fail() -> dict:
                metrics = train_epoch()
                if int(fault["cycle"]) == self.search.cycle + 1:
                    _fail_once(fault, self.trial_id)
                return metrics

            self.search.train_epoch = then_maybe_fail

    return FaultyTrainable


def _fail_once(fault: dict[str, Any], trial_id: str) -> None:
    marker = Path(fault["marker"])
    armed_by = Path(fault["armed_by"]) if fault.get("armed_by") else None
    if marker.exists() or (armed_by is not None and not armed_by.exists()):
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:  # claimed by one trial only, even when two reach it at the same moment
        with open(marker, "x", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "node_id": ray_compat.node_id(),
                                "trial_id": trial_id}) + "\n")
    except FileExistsError:
        return
    deadline = time.monotonic() + float(fault.get("hang_s") or 0)
    while time.monotonic() < deadline:
        time.sleep(0.2)
    raise InjectedFailure(f"injected failure in cycle {fault['cycle']} (marker {marker})")


class InterruptAfterCycles(tune.Callback):
    """Stop the driver the way Ctrl+C does, once every trial has a checkpoint after N cycles.

    Tune saves the experiment and leaves the trials unfinished. Disarmed when
    unpickled, i.e. in the resumed run (Tune restores a run's callbacks from its
    ``tuner.pkl``). Sends Tune's own interrupt signal (SIGUSR1, which Tune handles
    like Ctrl+C).
    """

    def __init__(self, cycles: int, num_trials: int) -> None:
        self.cycles, self.num_trials = cycles, num_trials
        self.armed = True
        self._ready: set[str] = set()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, armed=False)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        if not self.armed or int((trial.last_result or {}).get("cycle", 0)) < self.cycles:
            return
        self._ready.add(trial.trial_id)
        if len(self._ready) >= self.num_trials:
            self.armed = False
            handler = signal.getsignal(signal.SIGUSR1)
            if handler in (signal.SIG_DFL, signal.SIG_IGN, None):
                raise RuntimeError("Tune's interrupt handler is not installed (not the main "
                                   "thread?); cannot interrupt the experiment")
            os.kill(os.getpid(), signal.SIGUSR1)


def crash_after_epoch(epoch: int, marker: str | os.PathLike):
    """A data-parallel training loop whose worker group fails once, right after it reported
    ``epoch`` (the checkpoint of that epoch is kept, so Ray Train resumes from it)."""
    marker = Path(marker)

    def loop(config: dict[str, Any]) -> None:
        from unittest import mock

        import ray.train

        from prnas.tune.retrain_ddp import train_loop_per_worker

        report = ray.train.report

        def report_then_crash(metrics: dict, checkpoint=None) -> None:
            report(metrics, checkpoint=checkpoint)
            if int(metrics["epoch"]) == epoch and not marker.exists():
                if ray.train.get_context().get_world_rank() == 0:
                    marker.touch()
                raise RuntimeError(f"injected failure after epoch {epoch}")

        with mock.patch.object(ray.train, "report", report_then_crash):
            train_loop_per_worker(config)

    return loop


def main() -> int:
    """``python tests/faults.py FAULT_JSON STOP_AFTER_CYCLES NUM_TRIALS -- RUN_SEARCH_ARGS``:
    ``tune_jobs/run_search.py`` as a driver process of its own, with a faulty trainable and,
    unless STOP_AFTER_CYCLES is 0, the interrupt."""
    fault, stop, trials = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("run_search",
                                                  root / "tune_jobs" / "run_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    callbacks = [InterruptAfterCycles(stop, trials)] if stop else []
    return module.main(sys.argv[5:], trainable=faulty(fault), callbacks=callbacks)


if __name__ == "__main__":
    sys.exit(main())
