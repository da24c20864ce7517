"""Every Ray behaviour prnas relies on beyond Ray's documented API, in one place.

Written against Ray 2.60. Importing this module checks the version: an older Ray
lacks what is used here (ImportError); a newer one warns until
``tests/test_ray_compat.py`` (the contract tests, which check each item below
against the installed Ray) has passed on it and :data:`TESTED` is raised.

What is relied on, and why there is no public way:

1. **Actor reuse between cycles** (``FanOutSearch`` in ``prnas.tune.scheduler``).
   ``TuneController._maybe_cache_trial_actor`` keeps a stopping trial's actor only
   while ``search_alg.is_finished()`` is False (or a trial is staged). A search trial
   pauses after every cycle, so ``FanOutSearch`` reports "not finished" while one is
   between its pause and its next result; otherwise every cycle would start a new
   worker process (imports, datasets, network: seconds a cycle). Tune has no public
   knob for "keep this paused trial's actor".
2. **Experiment end via ``is_finished``**. ``TuneController.is_finished`` ends the
   experiment when all trials are finished *and* ``search_alg.is_finished()``; and
   ``BasicVariantGenerator.next_trial`` calls ``set_finished()`` once its grid is
   exhausted. ``FanOutSearch`` tells these two apart; if a Ray upgrade changed either,
   an experiment could end early or hang, hence the contract test.
3. **The trial's storage folder** from a class ``Trainable``: ``Trainable._storage``
   (a ``StorageContext``: ``trial_fs_path``, ``storage_filesystem``). The public
   ``ray.tune.get_context().get_trial_dir()`` only works in function trainables, and
   ``Trainable.logdir`` is a worker-local scratch folder since Ray 2.7, not synced.
4. **Logger names** (:data:`QUIET_LOGGERS`, :data:`QUIET_MESSAGES`) and one environment variable
   (:data:`DRIVER_ENV`) to keep the console to one line per cycle; applied by the
   entry points only (``tune_jobs/``), never by library code.
5. **Which trainable a stored experiment ran** (:func:`trainable_names`), from Tune's
   ``experiment_state-*.json``: ``trial_data`` holds, per trial, a JSON text whose
   ``trainable_name`` names the class. ``Tuner.restore`` of a search experiment with the
   retrain's trainable (or the other way round) fails deep inside Tune with a
   ValueError; reading the name first turns that into one line. Tune has no public
   query for it.
6. **Results reach the scheduler flattened** (:func:`nested`).
   ``TuneController._process_trial_result`` hands ``on_trial_result`` the result with
   nested dicts flattened to ``a/b`` keys; a search trial's result is its cycle record,
   whose pools, alphas and histories are nested objects, so the scheduler nests them
   again before it reads the record.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import ray

from prnas.storage import Location, location, on_filesystem

MINIMUM = (2, 60)
TESTED = (2, 60)


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def check_version(text: str) -> tuple[int, int]:
    """(major, minor) of a Ray version; ImportError below :data:`MINIMUM`, a warning above
    :data:`TESTED`. Run at import."""
    version = _version(text)
    if version < MINIMUM:
        raise ImportError(f"prnas needs Ray >= {MINIMUM[0]}.{MINIMUM[1]} (found {text}): "
                          "see prnas/tune/ray_compat.py for the Ray internals it relies on")
    if version > TESTED:
        warnings.warn(f"Ray {text} is newer than the {TESTED[0]}.{TESTED[1]} prnas was checked "
                      "against; run tests/test_ray_compat.py (see prnas/tune/ray_compat.py)",
                      stacklevel=3)
    return version


RAY_VERSION = check_version(ray.__version__)

#: Loggers that print a line per checkpoint, restore or resumed pause (i.e. per cycle)
#: and the level that silences them; the drivers print their own line per cycle.
QUIET_LOGGERS: dict[str, int] = {
    "ray.tune.trainable.trainable": logging.WARNING,  # "Checkpoint saved/restored" per cycle
    "ray.train._internal.storage": logging.WARNING,  # a sync line per checkpoint
    "ray.tune.logger.logger": logging.ERROR,  # "no result.json yet" on every resumed pause
    # After Ctrl+C: "Failed to fetch metrics" for every trial that had not started; the
    # jobs read their own files, never Tune's result.json.
    "ray.tune.analysis.experiment_analysis": logging.ERROR,
    # Data-parallel trials without the dashboard (whose State API it polls): a warning
    # every few seconds from Ray Train's placement-group cleaner.
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
}
#: Messages dropped from a logger whose other messages stay: after Ctrl+C Tune suggests
#: ``Tuner.restore(...)``, where the jobs print their own ``--resume`` line; TensorBoard's
#: logger cannot draw a histogram of a cycle record's op lists (its scalars it logs).
QUIET_MESSAGES: dict[str, tuple[str, ...]] = {
    "ray.tune.tune": ("Resume experiment with:", "Resume training with:"),
    "ray.tune.logger.tensorboardx": ("You are trying to log an invalid value",),
}


class _DropMessages(logging.Filter):
    def __init__(self, parts: tuple[str, ...]) -> None:
        super().__init__()
        self.parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(p in record.getMessage() for p in self.parts)
#: Driver environment: tiny cycles checkpoint faster than Tune likes to snapshot; fine here.
DRIVER_ENV: dict[str, str] = {"TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


def quiet_logs() -> None:
    """Silence :data:`QUIET_LOGGERS` in this process (an entry point's driver, or a worker
    through ``init_ray(worker_setup=quiet_logs)``)."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for name, parts in QUIET_MESSAGES.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in log.filters):
            log.addFilter(_DropMessages(parts))


# ----------------------------------------------------------------------------- storage
def trainable_names(experiment: Location) -> set[str]:
    """The trainable class names of the trials a stored experiment holds (item 5); empty
    when Tune's state cannot be read (then ``Tuner.restore`` decides)."""
    import json

    names: set[str] = set()
    try:
        states = [c for c in experiment.children()
                  if c.name.startswith("experiment_state-") and c.name.endswith(".json")]
        for state in states:
            for entry in json.loads(state.read_text()).get("trial_data", []):
                trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
                if trial.get("trainable_name"):
                    names.add(str(trial["trainable_name"]))
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return set()
    return names


def nested(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result as the Trainable returned it, from the flattened form Tune hands
    schedulers (item 6); a result that is nested already comes back equal."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def trial_storage(trainable: Any) -> Location:
    """The trial's folder in the experiment storage (a shared folder or a remote URI's
    filesystem), where prnas writes its own files beside Tune's.

    Outside Tune (a Trainable built by hand) there is no storage context: its logdir.
    """
    storage = getattr(trainable, "_storage", None)
    if storage is None or not storage.trial_dir_name:
        return location(trainable.logdir)
    return on_filesystem(storage.storage_filesystem, storage.trial_fs_path)
