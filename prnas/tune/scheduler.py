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
and gets the very same decision. With a ``population`` (the seeds of a space
deciding together, :mod:`prnas.search.population`) the one runtime state is the
barrier of reports waiting for the last member; after a restart the members
without a decision report again and fill it anew.

A decision that raises does not crash the driver: the error is written into
the trial's config in place of the decision and the Trainable raises it, so
that one trial fails (with Tune's usual retries and error file) and the
others go on.

:class:`FanOutSearch` is the search algorithm that goes with it: Tune's grid of
trials, which does not count as finished while a trial is paused between
cycles. Tune keeps a stopping actor for reuse only while its search algorithm
may still produce trials (or another trial waits for it); with the plain grid,
exhausted from the first step of a fan-out that fits the cluster, every pause
ended the trial's actor and the next cycle started a new process: worker,
imports, datasets, network, some 4-5 s a cycle.
"""

from __future__ import annotations

import logging
import posixpath
import traceback
from typing import TYPE_CHECKING, Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator

from prnas.cli import progress
from prnas.cycle_record import CycleRecord
from prnas.search.decision import decide_cycle
from prnas.search.population import Member, decide_population, population_key
from prnas.space.fates import SHARE
from prnas.tune import ray_compat
from prnas.tune.search_trainable import DECISION_KEY, trial_search_config
from prnas.tune.trial_files import snapshot_name

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
        rec = CycleRecord.from_json(ray_compat.nested(result))
        res = decide_cycle(cfg, cycle, rec.pools, rec.alphas, rec.histories)
        return {"cycle": cycle, **res.to_plain()}
    except Exception as err:  # noqa: BLE001 - any failure fails this trial only
        log.error("prune-and-replace decision failed for cycle %d:\n%s", cycle + 1,
                  traceback.format_exc())
        return {"cycle": cycle, "error": f"{type(err).__name__}: {err}"}


class PruneAndReplaceScheduler(FIFOScheduler):
    """FIFO with a prune-and-replace step between cycles; least advanced trial runs first.

    With ``population`` in the search config the seeds of one space decide together
    (:mod:`prnas.search.population`): a trial's result joins its population's barrier
    for that cycle and the trial pauses without a decision; once every live member has
    reported, the decisions of all are set at once and the members waiting are resumed.
    Each member's decision carries the whole population's (``table``): Tune may persist
    one member's new config and not another's before a driver dies, and a member that
    then reports the cycle again takes its decision from a peer's table. A member that
    failed or ended leaves the population (checked again whenever Tune asks for a trial
    to run, when its status has settled). The barrier is runtime state only: after a
    driver restart the members without a decision report their cycle again.
    """

    def __init__(self) -> None:
        super().__init__()
        # (population, 0-based cycle) -> trial id -> its nested result: runtime only.
        self._barriers: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
        self._populations: dict[str, str | None] = {}  # trial id -> its population

    def _population(self, trial: Trial) -> str | None:
        if trial.trial_id not in self._populations:
            self._populations[trial.trial_id] = _population(trial.config)
        return self._populations[trial.trial_id]

    def on_trial_result(self, tune_controller: TuneController, trial: Trial,
                        result: dict[str, Any]) -> str:
        _fan_out(tune_controller, lambda s: s.resumed(trial))
        if result.get("done") or "cycle" not in result:
            return TrialScheduler.CONTINUE
        if int(result["cycle"]) >= int(result["num_cycles"]):
            # The Trainable closes the last cycle itself (see search_trainable).
            return TrialScheduler.CONTINUE
        cycle = int(result["cycle"]) - 1
        population = self._population(trial)
        if population is None:
            trial.set_config({**trial.config, DECISION_KEY: decision_for(trial.config, result)})
        elif (trial.config.get(DECISION_KEY) or {}).get("cycle") != cycle:
            # (A retry that trained the cycle again keeps the decision it has.)
            decided = decided_by_peer(tune_controller.get_trials(), trial.trial_id, cycle)
            if decided is not None:
                trial.set_config({**trial.config, DECISION_KEY: decided})
            else:
                self._barriers.setdefault((population, cycle), {})[trial.trial_id] = (
                    ray_compat.nested(result))
                self._decide_ready(tune_controller)
        _fan_out(tune_controller, lambda s: s.pausing(trial))
        return TrialScheduler.PAUSE

    def _left(self, tune_controller: TuneController, trial: Trial, *_: Any) -> None:
        """A trial finished, failed or went: no longer pausing, and no longer a member its
        population's barrier waits for."""
        _fan_out(tune_controller, lambda s: s.resumed(trial))
        self._decide_ready(tune_controller)

    on_trial_complete = on_trial_error = on_trial_remove = _left

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        """The waiting trial with the fewest cycles done, so seeds advance together; never
        one paused at its population's barrier."""
        self._decide_ready(tune_controller)  # members that left are settled by now
        at_barrier = {tid for reports in self._barriers.values() for tid in reports}
        waiting = [t for t in tune_controller.get_trials()
                   if t.status == Trial.PENDING
                   or (t.status == Trial.PAUSED and t.trial_id not in at_barrier)]
        if not waiting:
            return None
        return min(waiting, key=lambda t: int((t.last_result or {}).get("cycle", 0)))

    def _decide_ready(self, tune_controller: TuneController) -> None:
        """Decide every barrier that all live members of its population have reached."""
        trials = tune_controller.get_trials()
        for (population, cycle), reports in list(self._barriers.items()):
            live = [t for t in trials if _may_resume(t) and self._population(t) == population]
            if any(t.trial_id not in reports for t in live):
                continue
            del self._barriers[(population, cycle)]
            for trial, payload in population_payloads(live, reports, cycle).items():
                trial.set_config({**trial.config, DECISION_KEY: payload})

    def debug_string(self) -> str:
        return "Using PruneAndReplace scheduling (one cycle per step, decisions between)."


class FanOutSearch(BasicVariantGenerator):
    """The fan-out's grid of trials; not finished while a trial paused between cycles.

    Tune caches a stopping actor for reuse only if its search algorithm is not
    finished or another trial is staged (``TuneController._maybe_cache_trial_actor``).
    Reporting "not finished" while the :class:`PruneAndReplaceScheduler` has a
    trial between its PAUSE and its next result keeps that trial's actor, so the
    next cycle starts on it (``reset_config``, then the checkpoint restore) instead
    of in a new process. The scheduler tells it which trials those are.

    Both behaviours it builds on are Ray internals, listed (items 1 and 2) and checked
    by contract tests (``tests/test_ray_compat.py``); see :mod:`prnas.tune.ray_compat`.

    Nothing changes for Tune's end of the experiment: a trial counts only while
    it can still resume (waiting, running, paused, or being stopped for its
    pause), so with no such trial left this is exactly the grid's own
    ``is_finished``, and an experiment stopped from outside (``set_finished``
    from Tune) is finished at once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pausing: dict[str, Trial] = {}  # runtime only, never saved
        self._exhausting = False
        self._stopped = False

    # ----------------------------------------------------------- told by the scheduler
    def pausing(self, trial: Trial) -> None:
        self._pausing[trial.trial_id] = trial

    def resumed(self, trial: Trial) -> None:
        self._pausing.pop(trial.trial_id, None)

    # ----------------------------------------------------------- SearchAlgorithm
    def next_trial(self):
        self._exhausting = True  # set_finished() from inside: the grid ran out
        try:
            return super().next_trial()
        finally:
            self._exhausting = False

    def set_finished(self) -> None:
        super().set_finished()
        if not self._exhausting:
            self._stopped = True  # Tune stops the experiment

    def is_finished(self) -> bool:
        if not super().is_finished():
            return False
        if self._stopped:
            return True
        return not any(_may_resume(t) for t in self._pausing.values())

    def get_state(self) -> dict | bool:
        state = super().get_state()
        if isinstance(state, dict):
            state = {k: v for k, v in state.items()
                     if k not in ("_pausing", "_exhausting", "_stopped")}
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.__dict__.setdefault("_pausing", {})
        self.__dict__.setdefault("_exhausting", False)
        self.__dict__.setdefault("_stopped", False)


def _population(config: dict[str, Any]) -> str | None:
    """The population a trial's config puts it in, or None (independent seeds)."""
    try:
        cfg = trial_search_config(config)
    except Exception:  # noqa: BLE001 - a broken config fails in the trial, not here
        return None
    return population_key(cfg) if cfg.population.enabled else None


def population_payloads(live: list[Trial], reports: dict[str, dict[str, Any]],
                        cycle: int) -> dict[Trial, dict[str, Any]]:
    """The decision payload of every live member at a decided barrier (``{"cycle": c,
    "error": msg}`` for all when it cannot be computed), and its console line."""
    try:
        members = [Member(t.trial_id, trial_search_config(t.config),
                          CycleRecord.from_json(reports[t.trial_id])) for t in live]
        outcomes = decide_population(members, cycle, members[0].cfg.population)
    except Exception as err:  # noqa: BLE001 - fails this population's trials only
        log.error("population decision failed for cycle %d:\n%s", cycle + 1,
                  traceback.format_exc())
        return {t: {"cycle": cycle, "error": f"{type(err).__name__}: {err}"} for t in live}
    table = {}
    for t in live:
        o = outcomes[t.trial_id]
        # The source's snapshot as a path on the storage's filesystem, which the member
        # opens with its own (an object store's endpoint is not in a URI).
        source = None if o.source is None else posixpath.join(
            reports[o.source]["trial_path"], snapshot_name(cycle + 1))
        table[t.trial_id] = {"cycle": cycle, **(o.decision.to_plain() if o.decision else {}),
                             "population": {"event": o.event, "source": source}}
    out = {t: with_table(table[t.trial_id], table) for t in live}
    events = [f"{t.trial_id}: {o.event}" for t in live
              if (o := outcomes[t.trial_id]).event not in (None, SHARE)]
    progress(f"population {population_key(members[0].cfg)} after cycle {cycle + 1}: "
             f"{len(live)} seeds decided together"
             + (f"; {', '.join(events)}" if events else ""))
    return out


def with_table(payload: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "population": {**payload["population"], "table": table}}


def decided_by_peer(trials: list[Trial], trial_id: str, cycle: int) -> dict[str, Any] | None:
    """The decision of ``trial_id`` after ``cycle`` from a peer whose config holds the
    population's table of that cycle, if any does."""
    for t in trials:
        d = t.config.get(DECISION_KEY) or {}
        table = (d.get("population") or {}).get("table") or {}
        if d.get("cycle") == cycle and trial_id in table:
            return with_table(table[trial_id], table)
    return None


def _may_resume(trial: Trial) -> bool:
    """Waiting, running or paused; or TERMINATED but not done: Tune stops a pausing
    trial's actor (and asks whether to cache it) before it marks the trial PAUSED."""
    if trial.status in (Trial.PENDING, Trial.RUNNING, Trial.PAUSED):
        return True
    return trial.status == Trial.TERMINATED and not (trial.last_result or {}).get("done")


def _fan_out(tune_controller: Any, tell) -> None:
    search = getattr(tune_controller, "search_alg", None)
    if isinstance(search, FanOutSearch):
        tell(search)
