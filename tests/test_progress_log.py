"""The console of long jobs: no stretch of training silent for longer than the interval,
and no flood of epoch lines from trials (prnas.runtime.progress_log)."""

from __future__ import annotations

import pytest

from prnas.runtime.progress_log import ProgressLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_epoch_lines_throttled_unless_every_epoch_and_marks_restart_the_wait():
    clock, lines = Clock(), []
    log = ProgressLog(lines.append, every_s=30, clock=clock)
    clock.now = 10
    log.epoch("e1")  # 10 s of silence: too soon
    clock.now = 31
    log.epoch("e2")
    clock.now = 50
    log.mark()  # the driver printed a cycle line
    clock.now = 75
    assert not log.due()
    log.epoch("e3")
    clock.now = 80
    assert log.due()
    log.say("beat")
    assert lines == ["e2", "beat"]
    every = ProgressLog(lines.append, every_s=30, every_epoch=True, clock=clock)
    every.epoch("e4")
    assert lines[-1] == "e4"
    with pytest.raises(ValueError, match="every_s"):
        ProgressLog(lines.append, every_s=0)


def test_search_and_retrain_speak_within_a_long_epoch():
    """An epoch longer than the interval prints the loop's own line: steps, images, loss."""
    from prnas.presets import load_genotype
    from prnas.retrain.config import build_config as retrain_config
    from prnas.retrain.trainer import Retrainer
    from prnas.search.engine import Search
    from tests.test_search_engine import tiny

    lines: list[str] = []
    search = Search(tiny(), log=ProgressLog(lines.append, every_s=1e-9))
    search.train_epoch()
    steps = [ln for ln in lines if "into the epoch" in ln]
    assert steps and steps[0].startswith("cycle 1/") and " 1 steps, " in steps[0]
    assert lines[-1].startswith("cycle 1/") and "valid" in lines[-1]  # the epoch's line

    quiet: list[str] = []
    Search(tiny(), log=ProgressLog(quiet.append, every_s=1e9)).train_epoch()
    assert quiet == []

    lines.clear()
    cfg = retrain_config(overrides={"network.channels": 4, "network.layers": 3, "epochs": 1,
                                    "device": "cpu", "data.dataset": "demo",
                                    "data.subset": 32, "data.test_subset": 16,
                                    "batch.b_min": 16})
    trainer = Retrainer(cfg, load_genotype("darts-v2"), log=ProgressLog(lines.append,
                                                                         every_s=1e-9))
    trainer.setup()
    trainer.train_epoch()
    assert lines and lines[0].startswith("epoch 1/1: 1 steps, 16/32 images, loss ")
