"""Contract tests for the Ray internals prnas relies on (listed in prnas/tune/ray_compat.py).

They fail with a message naming the item when a Ray upgrade changes one. The behaviour
behind item 1 (a paused trial keeps its actor) is also checked end to end in
tests/test_tune_search.py::test_a_lone_trial_keeps_its_actor_from_cycle_to_cycle.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from prnas.tune import ray_compat  # noqa: E402


class RayContractError(RuntimeError):
    """The installed Ray no longer behaves the way prnas relies on (see ray_compat)."""


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError) as err:
        raise RayContractError(f"cannot read the source of {obj!r}: {err}") from None


def check_contract() -> None:
    """Raise :class:`RayContractError`, naming the item of prnas/tune/ray_compat.py's list,
    if the installed Ray changed what prnas relies on."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.trainable import Trainable

    def need(ok: bool, item: str) -> None:
        if not ok:
            raise RayContractError(f"Ray {ray.__version__} changed {item}; prnas relies on it "
                                   "(see prnas/tune/ray_compat.py) and must be adapted")

    cache = _source(TuneController._maybe_cache_trial_actor)
    need("self._search_alg.is_finished()" in cache,
         "item 1: TuneController._maybe_cache_trial_actor no longer asks "
         "search_alg.is_finished() before caching a stopping actor")
    need("_search_alg.is_finished()" in _source(TuneController.is_finished),
         "item 2: TuneController.is_finished no longer consults search_alg.is_finished()")
    need("set_finished()" in _source(BasicVariantGenerator.next_trial),
         "item 2: BasicVariantGenerator.next_trial no longer calls set_finished() "
         "when its grid is exhausted")
    need(hasattr(TuneController, "search_alg") or "search_alg" in _source(TuneController),
         "item 1: TuneController no longer exposes search_alg to schedulers")
    init = _source(StorageContext.__init__)
    need(isinstance(getattr(StorageContext, "trial_fs_path", None), property) and
         "self.trial_dir_name" in init and "self.storage_filesystem" in init,
         "item 3: StorageContext lost trial_fs_path/trial_dir_name/storage_filesystem")
    need("self._storage = storage" in _source(Trainable.__init__),
         "item 3: Trainable no longer keeps its StorageContext in self._storage")
    process = _source(TuneController._process_trial_result)
    need("flat_result = flatten_dict(result)" in process and re.search(
        r"_scheduler_alg\.on_trial_result\(\s*self\._wrapped\(\), trial, flat_result", process),
         "item 6: TuneController no longer hands schedulers the flattened result")


def test_installed_ray_keeps_the_contract():
    check_contract()  # raises RayContractError naming the changed item


def test_version_check_refuses_an_older_ray_and_warns_on_a_newer_one():
    assert ray_compat.check_version("2.60.0") == (2, 60)
    with pytest.raises(ImportError, match=r"Ray >= 2\.60 \(found 2\.9\.3\).*ray_compat"):
        ray_compat.check_version("2.9.3")
    with pytest.warns(UserWarning, match=r"Ray 2\.61\.0rc1 is newer.*test_ray_compat"):
        assert ray_compat.check_version("2.61.0rc1") == (2, 61)


def test_a_changed_internal_fails_loudly(monkeypatch):
    from ray.tune.search import BasicVariantGenerator

    monkeypatch.setattr(BasicVariantGenerator, "next_trial", lambda self: None)
    with pytest.raises(RayContractError, match="item 2: .*set_finished"):
        check_contract()


def test_trial_storage_is_the_trial_folder_in_the_experiment_storage(tmp_path):
    from ray.train._internal.storage import StorageContext

    class Trainable:  # what ray_compat reads of a Tune Trainable
        logdir = str(tmp_path / "scratch")

    t = Trainable()
    assert ray_compat.trial_storage(t).path == t.logdir  # outside Tune
    t._storage = StorageContext(str(tmp_path), "exp", trial_dir_name="trial_0")
    folder = ray_compat.trial_storage(t)
    assert Path(folder) == tmp_path / "exp" / "trial_0" and folder.is_local


def test_quiet_logs_names_real_ray_loggers():
    import logging

    import ray.train._internal.storage  # noqa: F401 - registers its logger
    import ray.train.v2._internal.execution.controller.placement_group_cleaner  # noqa: F401
    import ray.tune.analysis.experiment_analysis  # noqa: F401
    import ray.tune.logger.logger  # noqa: F401
    import ray.tune.logger.tensorboardx  # noqa: F401
    import ray.tune.trainable.trainable  # noqa: F401

    known = logging.Logger.manager.loggerDict
    names = set(ray_compat.QUIET_LOGGERS) | set(ray_compat.QUIET_MESSAGES)
    assert names <= set(known), names - set(known)
    # The dropped messages are Tune's own text; the filter drops them and nothing else.
    for name, parts in ray_compat.QUIET_MESSAGES.items():
        source = Path(sys.modules[name].__file__).read_text()
        assert all(p in source for p in parts), name
    ray_compat.quiet_logs()
    log = logging.getLogger("ray.tune.tune")
    keep = log.makeRecord("ray.tune.tune", logging.WARNING, "f", 1, "Stop signal received",
                          None, None)
    drop = log.makeRecord("ray.tune.tune", logging.WARNING, "f", 1,
                          "Experiment has been interrupted, but the most recent state was "
                          "saved.\nResume experiment with: Tuner.restore(...)", None, None)
    assert log.filter(keep) and not log.filter(drop)


def test_architecture_lists_exactly_the_internals_the_module_relies_on():
    """docs/architecture.md's list of Ray internals is the module's own, item for item."""
    import re

    def titles(text: str) -> list[str]:
        return [t.replace("`", "").rstrip(".") for t in
                re.findall(r"^\s*\d+\. \*\*(.+?)\*\*", text, flags=re.M)]

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    section = doc[doc.index("## Ray internals used"):]
    assert titles(section) == titles(ray_compat.__doc__)
    assert len(titles(section)) == 6
