"""Contract tests for the Ray internals prnas relies on (listed in prnas/tune/ray_compat.py).

They fail with a message naming the item when a Ray upgrade changes one. The behaviour
behind item 1 (a paused trial keeps its actor) is also checked end to end in
tests/test_tune_search.py::test_a_lone_trial_keeps_its_actor_from_cycle_to_cycle.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

from prnas.tune import ray_compat  # noqa: E402


def test_installed_ray_keeps_the_contract():
    ray_compat.check_contract()  # raises RayContractError naming the changed item


def test_version_check_refuses_an_older_ray_and_warns_on_a_newer_one():
    assert ray_compat.check_version("2.60.0") == (2, 60)
    with pytest.raises(ImportError, match=r"Ray >= 2\.60 \(found 2\.9\.3\).*ray_compat"):
        ray_compat.check_version("2.9.3")
    with pytest.warns(UserWarning, match=r"Ray 2\.61\.0rc1 is newer.*test_ray_compat"):
        assert ray_compat.check_version("2.61.0rc1") == (2, 61)


def test_a_changed_internal_fails_loudly(monkeypatch):
    from ray.tune.search import BasicVariantGenerator

    monkeypatch.setattr(BasicVariantGenerator, "next_trial", lambda self: None)
    with pytest.raises(ray_compat.RayContractError, match="item 2: .*set_finished"):
        ray_compat.check_contract()


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
