"""The Tune scheduler that owns prune-and-replace between a search trial's cycles.

On every cycle result it computes the decision with the same pure function the
in-process engine uses (``decide_cycle``, its RNG seeded by the trial's seed and
the cycle), stores it in the trial's config and pauses the trial. Tune saves a
checkpoint on pause and later resumes the trial from it with the new config;
the Trainable applies the decision before training the next cycle.

Stateless by design: everything it needs is in the result and the trial
config, and everything it produces goes into the trial config, which Tune
persists with the experiment. A ``Tuner.restore`` therefore loses nothing,
and if its snapshot predates a decision, the trial reports the cycle again
and gets the very same decision.

A decision that raises does not crash the driver: the error is written into
the trial's config in place of the decision and the Trainable raises it, so
that one trial fails (with Tune's usual retries and error file) and the
others go on.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import TYPE_CHECKING, Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from prnas.search.decision import decide_cycle
from prnas.search.policy import result_to_dict
from prnas.search.pools import histories_from_json, pools_from_json
from prnas.tune.search_trainable import DECISION_KEY, trial_search_config

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

log = logging.getLogger(__name__)


def decision_for(config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The decision payload for the cycle a result reports: ``{"cycle": c, ...}``, c 0-based.

    ``{"cycle": c, "error": msg}`` when it cannot be computed, instead of raising.
    """
    cycle = int(result["cycle"]) - 1
    try:
        cfg = trial_search_config(config)
        res = decide_cycle(cfg, cycle, pools_from_json(result["pools"]),
                           json.loads(result["alphas"]), histories_from_json(result["histories"]))
        return {"cycle": cycle, **result_to_dict(res)}
    except Exception as err:  # noqa: BLE001 - any failure fails this trial only
        log.error("prune-and-replace decision failed for cycle %d:\n%s", cycle + 1,
                  traceback.format_exc())
        return {"cycle": cycle, "error": f"{type(err).__name__}: {err}"}


class PruneAndReplaceScheduler(FIFOScheduler):
    """FIFO with a prune-and-replace step between cycles; least advanced trial runs first."""

    def on_trial_result(self, tune_controller: TuneController, trial: Trial,
                        result: dict[str, Any]) -> str:
        if result.get("done") or "cycle" not in result:
            return TrialScheduler.CONTINUE
        if int(result["cycle"]) >= int(result["num_cycles"]):
            # The Trainable closes the last cycle itself (see search_trainable).
            return TrialScheduler.CONTINUE
        trial.set_config({**trial.config, DECISION_KEY: decision_for(trial.config, result)})
        return TrialScheduler.PAUSE

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        """The waiting trial with the fewest cycles done, so seeds advance together."""
        waiting = [t for t in tune_controller.get_trials()
                   if t.status in (Trial.PENDING, Trial.PAUSED)]
        if not waiting:
            return None
        return min(waiting, key=lambda t: int((t.last_result or {}).get("cycle", 0)))

    def debug_string(self) -> str:
        return "Using PruneAndReplace scheduling (one cycle per step, decisions between)."
