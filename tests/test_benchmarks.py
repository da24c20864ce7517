"""The benchmark scripts run end to end on tiny sizes and print what they promise.

No timing is asserted here (the figures live in benchmarks/README.md); this only
keeps the scripts from rotting as the code they measure changes.
"""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def _records(capsys) -> list[dict]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_search_step_compares_both_variants_and_fits_memory(capsys):
    import search_step

    search_step.main(["--states", "cycle8", "--batch", "4", "--repeat", "1",
                      "--memory-batches", "4,8", "--channels", "4", "--layers", "3"])
    recs = _records(capsys)
    steps = [r for r in recs if r["bench"] == "search_step"]
    assert {(r["state"], r["phase"], r["variant"]) for r in steps} == {
        ("cycle8", p, v) for p in ("normal", "grace") for v in ("reference", "fast", "fused")}
    assert all(r["images_per_s"] > 0 and r["peak_mib"] > 0 and r["op_calls"] > 0 for r in steps)
    assert all(r["speedup"] == 1.0 for r in steps if r["variant"] == "reference")
    models = [r for r in recs if r["bench"] == "memory_model"]
    assert [m["state"] for m in models] == ["cycle8"]
    assert all(m["sizes"] == [4, 8] and len(m["peak_mib"]) == 2 for m in models)


@pytest.mark.slow
def test_cycle_overhead_measures_the_steps_it_asks_for(capsys):
    """The paper-scale rate comes from epochs of ``--steps`` steps (the benchmark once
    changed a config copy the epoch loop did not read, and measured one step)."""
    import cycle_overhead

    cycle_overhead.main(["--skip-demo", "--steps", "2", "--channels", "4", "--layers", "3"])
    rows = [r for r in _records(capsys) if r["bench"] == "cycle_overhead"]
    assert [r["cycle"] for r in rows] == [1, 2, 3]
    assert all(r["steps_grace"] == 2 and r["steps_normal"] == 2 for r in rows)
    assert all(r["images_per_s_normal"] > 0 and r["overhead_s"] > 0 for r in rows)


def test_search_step_rejects_unknown_states():
    import search_step

    with pytest.raises(SystemExit, match="cycles2-5"):
        search_step.main(["--states", "cycle3"])


@pytest.mark.slow
def test_retrain_step_measures_both_layouts(capsys):
    import retrain_step

    retrain_step.main(["--genotypes", "darts-v2", "--batch", "4", "--repeat", "1",
                       "--channels", "4", "--layers", "3"])
    rows = [r for r in _records(capsys) if r["bench"] == "retrain_step"]
    assert [r["variant"] for r in rows] == ["nchw", "channels_last"]
    assert all(r["images_per_s"] > 0 and r["params"] > 0 for r in rows)


@pytest.mark.slow
def test_adaptive_batch_reports_the_share_of_the_threshold(capsys):
    import adaptive_batch

    adaptive_batch.main(["--channels", "4", "--layers", "2", "--budget-mib", "64",
                         "--grow-every", "1", "--settle", "2", "--max-steps", "12",
                         "--b-max", "48"])
    row = next(r for r in _records(capsys) if r["bench"] == "adaptive_batch")
    assert row["out_of_memory_backoffs"] == 0
    assert row["reached_pct"] > 0 and row["final_batch"] >= 24
    # Process-wide RSS is no exact memory model (first use of a size allocates for good), so
    # only the report is checked here; no overshoot is a test on the fake and budget probes.
    assert row["trace"][0] == 24 and row["trace"][-1] == row["final_batch"]
    assert set(row["sizes_over_threshold"]) <= set(row["trace"])
    assert row["decisions_one_b_mult_each"] == (row["final_batch"] - 24) // 8


@pytest.mark.slow
def test_retrain_ddp_prints_pipeline_and_both_worker_counts(capsys):
    import retrain_ddp

    retrain_ddp.main(["--images", "8", "--jpeg-size", "48", "--input-size", "32",
                      "--channels", "8", "--layers", "3", "--batch", "8",
                      "--loader-workers", "0", "--workers", "2"])
    recs = _records(capsys)
    assert [r["loader_workers"] for r in recs if r["bench"] == "data_pipeline"] == [0]
    train = [r for r in recs if r["bench"] == "ddp_training"]
    assert [r["workers"] for r in train] == [1, 2]
    assert all(r["images_per_s"] > 0 for r in recs if "images_per_s" in r)


def test_population_ablation_budgets_and_compares_arms():
    """The ablation's own arithmetic (its end-to-end ``--smoke`` runs eight Ray
    experiments, about 2 minutes, and is left out of the suite): halve arms get the
    seeds the independent arm's steps pay for, and a comparison reports the difference,
    its interval and the study size."""
    import population

    from prnas.search.config import load_config

    cfg = load_config(population.DEMO)
    assert population.seeds_for("share", 4, cfg) == 4
    k = population.seeds_for("halve", 4, cfg)
    steps = [c.epochs * (cfg.steps_per_epoch or 1) for c in cfg.schedule]
    pop = load_config(population.DEMO, {"population.halve": {}}).population
    after = pop.halve_after(len(steps))[0]

    def cost(n):
        return n * sum(steps[:after]) + (n - min(int(n * pop.halve.fraction), n - 1)) * sum(
            steps[after:])
    assert cost(k) <= 4 * sum(steps) < cost(k + 1) and k > 4
    ref = {"arm": "independent", "errors": [0.10, 0.12, 0.11, 0.13], "search_steps": 100}
    arm = {"arm": "share", "errors": [0.20, 0.22, 0.21, 0.23], "search_steps": 100}
    c = population.compare(arm, ref)
    assert c["diff"] == pytest.approx(0.1) and c["ci95"][0] > 0
    assert c["compute_ratio"] == 1.0 and c["mann_whitney_p"] < 0.05
    # A difference of a tenth of the spread needs hundreds of cells per arm; a clear one,
    # one (2 x (1.96 + 0.84)^2 / 0.1^2 = 1568 at a tenth).
    near = {**arm, "errors": [e + 0.1 * 0.0129 for e in ref["errors"]]}
    assert c["cells_needed_per_arm"] == 1
    assert 1400 < population.compare(near, ref)["cells_needed_per_arm"] < 1700


STAND_IN = '''
"""A stand-in for the authors' model_search.py: their interface over prnas' network."""
import torch
from torch import nn

from prnas.nn.search_net import SearchNetwork
from prnas.space import Op


def _op(name, kwargs):
    if name == "skip":
        return Op.parse("skip")
    if name == "pool":
        return Op.parse(kwargs["type_"] + "_pool_3x3")
    e = "-".join(map(str, kwargs["c_mul"]))
    return Op.parse(f"conv_k{kwargs['k']}_d{kwargs['dil']}" + (f"_e{e}" if e else ""))


def _pools(switches):
    return tuple(tuple(_op(*switches.current_ops[i]) for i, on in enumerate(switches[e]) if on)
                 for e in range(len(switches)))


class Network(nn.Module):
    def __init__(self, c, num_classes, layers, criterion, switches_normal, switches_reduce,
                 steps=4, multiplier=4, stem_multiplier=3, p=0.0):
        super().__init__()
        pools = {"normal": _pools(switches_normal), "reduce": _pools(switches_reduce)}
        self.net = SearchNetwork(pools, channels=c, layers=layers, nodes=steps,
                                 num_classes=num_classes)
        self.alphas = {t: [torch.zeros(len(e)).cuda().requires_grad_() for e in pools[t]]
                       for t in pools}
        self.arch_parameters = [a for t in self.alphas for a in self.alphas[t]]
        self.net_parameters = list(self.net.parameters())

    def forward(self, x):
        return self.net(x, self.alphas)
'''


def test_anchor_step_times_both_codes_on_the_same_supernet(tmp_path, capsys):
    """On a stand-in of the authors' interface (their code is not in the repository):
    the same pools and weight count, every variant timed, the ratio to theirs printed."""
    import anchor_step

    assert anchor_step.main([]) == 0
    assert "skipped, no --reference-code" in capsys.readouterr().out
    (tmp_path / "model_search.py").write_text(STAND_IN)
    (tmp_path / "operations.py").write_text("")
    assert anchor_step.main(["--reference-code", str(tmp_path), "--states", "cycle1",
                             "--batch", "4", "--repeat", "1", "--channels", "4",
                             "--layers", "3", "--size", "8"]) == 0
    rows = [r for r in _records(capsys) if r["bench"] == "anchor_step"]
    assert [r["variant"] for r in rows] == ["authors", "fast", "fused"]
    assert len({r["params"] for r in rows}) == 1 and rows[0]["x_authors"] == 1.0
    with pytest.raises(SystemExit, match="no model_search.py"):
        anchor_step.main(["--reference-code", str(tmp_path / "missing")])
