"""A population of three seeds as real Ray Tune trials (CPU): share, exploit and halve as
decided from every member's record, and a driver killed at the barrier that resumes to
the very same result."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from scripts import script_main
from tiny import tiny_search

from analysis import loaders
from prnas.cycle_record import CycleRecord
from prnas.search.config import build_config
from prnas.search.population import HALVED, Member, decide_population
from prnas.space.pools import pools_plain

ray = pytest.importorskip("ray")

from faults import InterruptAfterCycles  # noqa: E402

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
POPULATION = {"share": {"temperature": 4.0}, "exploit": {"after": [1], "fraction": 0.34},
              "halve": {"after": [2], "fraction": 0.5}}
TINY = tiny_search(data={"input_size": 16, "subset": 120, "test_subset": 40},
                   network={"nodes": 4})


def _args(storage: Path, name: str, config: Path) -> list[str]:
    # The flag turns the mechanisms on at their defaults; --set tunes them.
    sets = ["population.exploit={after: [1], fraction: 0.34}",
            "population.halve={after: [2], fraction: 0.5}", "population.share.temperature=4.0"]
    return ["--config", str(config), "--num-samples", "3", "--storage", str(storage),
            "--name", name, "--cpus-per-trial", "1", "--population", "share,exploit,halve",
            *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="module")
def population(ray_cpu, storage, tmp_path_factory):
    config = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert script_main("run_search")(_args(storage, "whole", config)) == 0
    return config, loaders.load_results(storage / "whole")


def _members(rows: pd.DataFrame) -> list[Member]:
    cfg = build_config({**TINY, "population": POPULATION})
    return [Member(r["trial_id"], cfg.model_copy(update={"seed": int(r["seed"])}),
                   CycleRecord.from_json(r)) for r in rows.to_dict("records")]


def test_every_decision_is_the_populations(population):
    _, results = population
    for cycle in (1, 2):
        rows = results[results["cycle"] == cycle]
        assert len(rows) == (3 if cycle == 1 else 3)
        members = _members(rows)
        out = decide_population(members, cycle - 1, members[0].cfg.population)
        for r in rows.to_dict("records"):
            o = out[r["trial_id"]]
            assert r["population_event"] == o.event
            if o.decision is not None:
                assert r["pools_next"] == pools_plain(o.decision.pools)
    # After cycle 1 the worst seed took over the best one's state; after cycle 2 the worst
    # of the three stopped, without a genotype; the others finished.
    first = results[results["cycle"] == 1].sort_values("valid_acc")
    assert first["population_event"].iloc[0] == (
        f"exploit from {first['trial_id'].iloc[-1]}; share")
    second = results[results["cycle"] == 2].sort_values(["valid_acc", "trial_id"],
                                                        ascending=[True, False])
    halved = second["trial_id"].iloc[0]
    assert second["population_event"].iloc[0] == HALVED
    last = results.groupby("trial_id")["cycle"].max()
    assert last[halved] == 2 and sorted(last.drop(halved)) == [3, 3]
    finished = results[results["cycle"] == 3]
    assert finished["genotype_path"].notna().all()
    assert results[results["trial_id"] == halved]["genotype_path"].isna().all()


def test_share_is_recorded_on_the_new_candidates(population, storage):
    cands = loaders.load_candidates(storage / "whole")
    new = cands[cands["new"]]
    assert len(new) and new["p_paper"].notna().all() and new["p_shared"].notna().all()
    assert cands[~cands["new"]]["p_shared"].isna().all()


def test_a_driver_killed_at_the_barrier_resumes_to_the_same_result(population, storage,
                                                                     capsys):
    config, whole = population
    main = script_main("run_search")
    args = _args(storage, "killed", config)
    # Stopped as Ctrl+C would once two of the three trials wait after cycle 1.
    assert main(args, callbacks=[InterruptAfterCycles(1, 2)]) == 130
    assert main(["--resume", "--storage", str(storage), "--name", "killed"]) == 0
    err = capsys.readouterr().err
    assert "population DL after cycle 1: 3 seeds decided together; " in err
    assert "halved" in err
    resumed = loaders.load_results(storage / "killed")
    cols = ["seed", "cycle", "pools", "pools_next", "alphas", "population_event", "valid_acc"]
    a = whole[cols].sort_values(["seed", "cycle"]).reset_index(drop=True)
    b = resumed[cols].sort_values(["seed", "cycle"]).reset_index(drop=True)
    # Trial ids differ between the two experiments; the events name them.
    ids = dict(zip(resumed["trial_id"], resumed["seed"]))
    ids_whole = dict(zip(whole["trial_id"], whole["seed"]))
    for frame, by in ((a, ids_whole), (b, ids)):
        events = []
        for e in frame["population_event"]:
            for tid, seed in by.items():
                e = e if pd.isna(e) else e.replace(tid, f"seed{seed}")
            events.append(None if pd.isna(e) else e)
        frame["population_event"] = events
    pd.testing.assert_frame_equal(a, b)


def test_the_report_shows_the_genealogy(population, storage, tmp_path):
    from analysis.__main__ import main

    out = tmp_path / "report"
    assert main(["report", str(storage / "whole"), "--out", str(out), "--cells",
                 "matplotlib"]) == 0
    page = (out / "index.html").read_text()
    assert "Population" in page and "population.png" in page
    events = pd.read_csv(out / "tables" / "population_events.csv")
    assert sorted(events["event"]) == ["exploit", "halved"]
    exploit = events[events["event"] == "exploit"].iloc[0]
    assert exploit["cycle"] == 1 and isinstance(exploit["source"], str)
