"""The in-process search engine on tiny configs: cycles, weight carrying, resume equality."""

import json

import pytest
import torch
from tiny import tiny_search

from prnas.nn.search_net import SearchNetwork
from prnas.runtime import checkpoint
from prnas.search import __main__ as cli
from prnas.search.config import ConfigError, build_config, load_config
from prnas.search.engine import STATE_VERSION, Search
from prnas.space import Op, apply_morphism
from prnas.space.pools import initial_pools, pools_plain

TINY = tiny_search(
    seed=3,
    num_threads=1,
    name="prdarts",
    schedule=[
        {"epochs": 2, "grace_epochs": 1, "morphs": 2, "candidates": 4},
        {"epochs": 1, "grace_epochs": 0, "morphs": 1, "candidates": 3},
        {"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 1},
    ],
)


def tiny(**over):
    return build_config(TINY, over)


def _search(**over):
    return Search(tiny(**over), log=None)


def test_pools_follow_schedule_and_new_ops_carry_parent_weights():
    s = _search()
    assert all(len(edge) == 4 for edges in s.pools.values() for edge in edges)
    s.run_cycle()
    old_net = s.net
    old_sd = {k: v.clone() for k, v in old_net.state_dict().items()}
    result = s.decide()
    s.apply(result)
    assert s.cycle == 1
    for edges in s.pools.values():
        assert len(edges) == 5  # 2 nodes -> 2 + 3 edges
        assert all(len(edge) == 4 for edge in edges)
    new_sd = s.net.state_dict()
    # Survivors keep their trained tensors under the same name.
    survivors = [(t, d.edge, op) for d in result.decisions for op, _ in d.survived
                 for t in [d.cell_type]]
    checked = 0
    for key, value in new_sd.items():
        if ".ops." not in key:
            if key in old_sd and "num_batches" not in key:
                assert torch.equal(value, old_sd[key]), key
            continue
        for t, e, op in survivors:
            for i, cell in enumerate(s.net.cells):
                if cell.reduction == (t == "reduce") and key.startswith(
                        f"cells.{i}.edges.{e}.ops.{op}."):
                    assert torch.equal(value, old_sd[key]), key
                    checked += 1
    assert checked > 0
    # New ops inherit through the morphism, e.g. a kernel +2 keeps the parent's taps in the centre.
    new_ops = result.new_ops()
    assert new_ops
    for t, e, new in new_ops:
        assert apply_morphism(new.parent, new.morphism) == new.op
        cell_i = next(i for i, c in enumerate(s.net.cells) if c.reduction == (t == "reduce"))
        child = s.net.cells[cell_i].edges[e].ops[str(new.op)]
        parent = old_net.cells[cell_i].edges[e].ops[str(new.parent)]
        if new.morphism.value in ("dilation_up", "dilation_down"):
            for (k1, v1), (_k2, v2) in zip(parent.state_dict().items(),
                                           child.state_dict().items()):
                assert torch.equal(v1, v2), k1
        if new.morphism.value == "kernel_up":
            pw = parent.blocks[0].depthwise.weight
            cw = child.blocks[0].depthwise.weight
            assert torch.equal(cw[:, :, 1:-1, 1:-1], pw)
            assert cw[:, :, 0, :].abs().sum() == 0


def test_alphas_reset_each_cycle_and_match_pool_sizes():
    s = _search()
    s.run_cycle()
    trained = s.alpha_values()
    s.apply(s.decide())
    fresh = s.alpha_values()
    for t in fresh:
        for edge, a in zip(s.pools[t], fresh[t]):
            assert len(edge) == len(a)
            assert max(abs(x) for x in a) < 0.01
    assert trained != fresh


def test_full_search_yields_genotype_and_metrics(tmp_path):
    s = _search(evaluate_test=True)
    g = s.run()
    assert s.finished and g is not None
    assert len(s.cycle_log) == 3
    assert [m["cycle"] for m in s.cycle_log] == [1, 2, 3]
    assert g.nodes == 2 and len(g.normal) == 4
    for m in s.cycle_log:
        for key in ("train_loss", "valid_acc", "images_per_s", "batch_size_mean",
                    "peak_memory_mb", "ratio_normal_conv", "similarity_reduce", "test_acc"):
            assert key in m.columns
        assert len(m.epoch_metrics) == TINY["schedule"][m["cycle"] - 1]["epochs"]
        assert abs(m["ratio_normal_skip"] + m["ratio_normal_pool"] + m["ratio_normal_conv"]
                   - 1) < 1e-9
    # Each genotype op was in the final cycle's pool of its edge.
    last_pools = pools_plain(s.cycle_log[-1].pools)
    all_normal = {op for edge in last_pools["normal"] for op in edge}
    assert {str(op) for op, _ in g.normal} <= all_normal
    path = tmp_path / "g.json"
    g.save(path)
    assert json.loads(path.read_text())["format"] == "prnas-genotype/1"


def _summary(search):
    return ([(m.pools, json.dumps(m.to_json()["decisions"]), m.alphas)
             for m in search.cycle_log],
            search.genotype.to_dict())


@pytest.mark.slow
def test_resume_after_a_cycle_and_mid_cycle_equals_uninterrupted(tmp_path):
    ref = _search()
    ref.run()

    # Killed after the first cycle: restore from the cycle checkpoint.
    a = _search()
    a.run(stop_after_cycles=1)
    checkpoint.save_atomic(a.state_dict(), tmp_path / "a.pt")
    del a
    a2 = _search()
    a2.load_state_dict(checkpoint.load(tmp_path / "a.pt"))
    a2.run()
    assert _summary(a2) == _summary(ref)

    # Killed in the middle of the first cycle, right after its first epoch was saved.
    class Killed(Exception):
        pass

    def save_then_die(search, _m):
        checkpoint.save_atomic(search.state_dict(), tmp_path / "b.pt")
        raise Killed

    b = _search()
    with pytest.raises(Killed):
        b.run(on_epoch=save_then_die)
    b2 = _search()
    b2.load_state_dict(checkpoint.load(tmp_path / "b.pt"))
    assert (b2.cycle, b2.epoch) == (0, 1)
    b2.run()
    assert _summary(b2) == _summary(ref)
    # A different seed gives a different search: the comparison above can fail.
    other = _search(seed=4)
    other.run()
    assert _summary(other) != _summary(ref)


@pytest.mark.slow
def test_cli_refuses_existing_dir_and_resumes_to_same_genotype(tmp_path, capsys):
    import yaml

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli.main(["--config", str(cfg_path), "--out", str(full), "--quiet"]) == 0
    assert cli.main(["--config", str(cfg_path), "--out", str(full)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli.main(["--config", str(cfg_path), "--out", str(part), "--quiet",
                     "--stop-after-cycles", "1"]) == 0
    assert not (part / "genotype.json").exists()
    assert len((part / "cycles.jsonl").read_text().splitlines()) == 1
    assert cli.main(["--out", str(part), "--resume", "--quiet"]) == 0
    assert (part / "genotype.json").read_text() == (full / "genotype.json").read_text()
    lines = (part / "cycles.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert [json.loads(x)["pools"] for x in lines] == [
        json.loads(x)["pools"] for x in (full / "cycles.jsonl").read_text().splitlines()]
    assert cli.main(["--out", str(tmp_path / "none"), "--resume"]) == 2


@pytest.mark.parametrize(
    "over, field",
    [
        ({"schedule": [{"epochs": 1, "grace_epochs": 2, "morphs": 0, "candidates": 1}]},
         "grace_epochs"),
        ({"schedule": [{"epochs": 1, "grace_epochs": 0, "morphs": 3, "candidates": 3}]}, "morphs"),
        ({"space": "XX"}, "space"),
        ({"network": {"channels": 5}}, "network.channels"),
        ({"optim": {"lr_min": 1.0}}, "lr_min"),
        ({"bogus": 1}, "bogus"),
        ({"device": "gpu"}, "device"),
        ({"batch": {"b_min": 64, "b_max": 32}}, "b_max"),
        ({"initial_pool": ["skip", "sep_conv_3x3"]}, "initial_pool"),
        ({"initial_pool": ["skip", "skip"]}, "initial_pool"),
        ({"initial_pool": ["conv_k1_d1"]}, "initial_pool"),  # DL has no 1x1 kernels
        ({"initial_pool": []}, "initial_pool"),
    ],
)
def test_bad_configs_rejected_with_field_name(over, field):
    with pytest.raises(ConfigError) as err:
        build_config(TINY, over)
    assert field in str(err.value)


def test_default_config_is_the_papers_search(tmp_path):
    cfg = load_config(None)
    assert [c.epochs for c in cfg.schedule] == [15, 15, 10, 10, 10, 10, 10, 10, 10]
    assert [c.candidates for c in cfg.schedule] == [6, 6, 6, 6, 6, 4, 3, 2, 1]
    assert cfg.space == "DL" and cfg.data.dataset == "cifar10"
    assert (cfg.network.channels, cfg.network.layers, cfg.network.nodes) == (16, 8, 4)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == cfg
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_initial_pool_from_the_config_is_what_every_edge_starts_with():
    """Issue 12: e.g. DARTS' ops (no zero op here) instead of the paper's four."""
    darts = ["max_pool_3x3", "avg_pool_3x3", "skip", "conv_k3_d1_e1", "conv_k5_d1_e1",
             "conv_k3_d2", "conv_k5_d2"]
    assert load_config(None).initial_pool == ("max_pool_3x3", "avg_pool_3x3", "skip",
                                              "conv_k3_d1")
    s = _search(initial_pool=darts)
    ops = tuple(Op.parse(x) for x in darts)
    assert all(edge == ops for edges in s.pools.values() for edge in edges)
    assert all(h == frozenset(ops) for hs in s.histories.values() for h in hs)
    assert all(len(a) == len(darts) for t in s.alphas for a in s.alphas[t])
    assert set(s.net.cells[0].edges[0].ops) == set(darts)
    with pytest.raises(ConfigError, match="initial_pool: conv_k1_d1 outside the DL"):
        build_config(TINY, {"initial_pool": ["skip", "conv_k1_d1"]})
    assert build_config(TINY, {"space": "DR", "initial_pool": ["conv_k1_d1"]}).initial_ops() == (
        Op.conv(1, 1),)


def _module_state(s, cell_type, edge, op):
    return [{k: v.clone() for k, v in cell.edges[edge].ops[str(op)].state_dict().items()}
            for cell in s.net.cells_of(cell_type)]


def _favour(s, cell_type, edge, op):
    """Make ``op`` the edge's most probable candidate, so the next decision keeps it."""
    i = s.pools[cell_type][edge].index(op)
    with torch.no_grad():
        a = s.alphas[cell_type][edge]
        a.fill_(0.0)
        a[i] = 10.0


@pytest.mark.slow
def test_a_child_keeps_its_own_training_across_later_cycles():
    """Issue 12 (the reference's bug): a child added after cycle 1 inherits from its parent
    once; surviving cycles 2 and 3 it carries its own trained weights, never its parent's."""
    s = _search(schedule=[{"epochs": 1, "grace_epochs": 0, "morphs": 2, "candidates": 4},
                          {"epochs": 1, "grace_epochs": 0, "morphs": 1, "candidates": 4},
                          {"epochs": 1, "grace_epochs": 0, "morphs": 1, "candidates": 4},
                          {"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 1}])
    assert s.steps.alpha_grad_clip == 5.0  # the config's default reaches the steps
    s.run_cycle()
    r1 = s.decide()
    s.apply(r1)
    t, e, new = r1.new_ops()[0]
    inherited = _module_state(s, t, e, new.op)
    for cycle in (2, 3):
        s.run_cycle()
        trained = _module_state(s, t, e, new.op)
        assert any(not torch.equal(trained[0][k], inherited[0][k]) for k in trained[0]), (
            f"cycle {cycle} did not train the child")
        _favour(s, t, e, new.op)
        result = s.decide()
        assert new.op in {op for d in result.decisions if (d.cell_type, d.edge) == (t, e)
                          for op, _ in d.survived}
        s.apply(result)
        assert s.cycle == cycle
        after = _module_state(s, t, e, new.op)
        for mine, before in zip(after, trained, strict=True):
            for k in mine:
                assert torch.equal(mine[k], before[k]), (cycle, k)
        inherited = after


def test_ragged_pools_build_and_run():
    pools = initial_pools(4)
    ragged = {t: tuple(edge[: 1 + i % 4] + (Op.conv(5, 1, (2,)),) * (i % 2)
                       for i, edge in enumerate(edges)) for t, edges in pools.items()}
    net = SearchNetwork(ragged, channels=4, layers=3, nodes=4, num_classes=3, in_channels=1)
    alphas = {t: [torch.zeros(len(e), requires_grad=True) for e in edges]
              for t, edges in ragged.items()}
    out = net(torch.randn(2, 1, 8, 8), alphas)
    assert out.shape == (2, 3)
    out.sum().backward()
    bad = {t: [a[:-1] if len(a) > 1 else a for a in v] for t, v in alphas.items()}
    with pytest.raises(ValueError, match="weights"):
        net(torch.randn(2, 1, 8, 8), bad)


def test_cifar_folder_search_and_missing_data_error(tmp_path, capsys):
    from data_folders import write_cifar_folder

    root = write_cifar_folder(tmp_path / "cifar", num_classes=10, n_train=64, n_test=16)
    one_cycle = [{"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 1}]
    s = Search(build_config(TINY, {"data": {"dataset": "cifar10", "data_dir": str(root),
                                            "input_size": None, "subset": None},
                                   "schedule": one_cycle}), log=None)
    assert s.info.in_channels == 3 and s.info.num_classes == 10
    assert s.run() is not None
    missing = tmp_path / "nothing"
    code = cli.main(["--out", str(tmp_path / "out"), "--data-dir", str(missing), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(missing) in err and "download" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_finished_search_state_loads_again(tmp_path, capsys):
    s = _search()
    s.run()
    s2 = _search()
    s2.load_state_dict(s.state_dict())
    assert s2.finished and s2.genotype == s.genotype
    assert s2.run() == s.genotype  # nothing left to train
    # And through the CLI: --resume on a finished folder reports it and rewrites nothing new.
    import yaml

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "done"
    assert cli.main(["--config", str(cfg_path), "--out", str(out), "--quiet"]) == 0
    before = (out / "genotype.json").read_text()
    assert cli.main(["--out", str(out), "--resume", "--quiet"]) == 0
    assert "already finished" in capsys.readouterr().err  # progress goes to stderr
    assert (out / "genotype.json").read_text() == before


def test_out_of_memory_retry_does_not_repeat_the_alpha_step(monkeypatch):
    no_grace = [{"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 1}]
    s = _search(schedule=no_grace, batch={"b_min": 8, "b_mult": 8, "b_max": 16})
    s.controller.batch_size = 16
    real = s.steps.weight_step
    calls = []

    def flaky(x, y):
        calls.append(len(x))
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x, y)

    monkeypatch.setattr(s.steps, "weight_step", flaky)
    m = s.train_epoch()
    assert calls[:2] == [16, 8]  # backed off and retried smaller
    steps = m["steps"]
    for p in (p for t in s.alphas for p in s.alphas[t]):
        assert int(s.a_opt.state[p]["step"]) == steps  # one Adam step per training step


def test_restore_refuses_another_config_naming_the_fields_like_the_retrain():
    """A search restore checks its config against the checkpoint's (shared with the
    retrain, prnas.runtime.state); where the data lives may differ, what is computed not."""
    s = _search()
    s.train_epoch()
    state = s.state_dict()
    other = _search(**{"optim.lr": 0.05, "network.channels": 6})
    with pytest.raises(ValueError) as err:
        other.load_state_dict(state)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("checkpoint was written under another config")
    assert "network.channels: 4 -> 6" in msg and "optim.lr: 0.025 -> 0.05" in msg
    moved = _search(**{"data.num_workers": 0, "device": "cpu"})
    moved.load_state_dict(state)
    assert (moved.cycle, moved.epoch) == (0, 1)
    with pytest.raises(ValueError, match=f"search checkpoint format 0 is not {STATE_VERSION}"):
        moved.load_state_dict({**state, "version": 0})


def test_the_config_is_held_once_for_engine_supernet_and_loop():
    """A changed ``Search.cfg`` is what the epoch loop and the supernet read next."""
    s = _search()
    assert s.cfg.steps_per_epoch == 2 and s.cfg is s.loop.cfg is s.model.cfg is s.setup.cfg
    s.cfg = s.cfg.model_copy(update={"steps_per_epoch": 1})
    assert s.loop.cfg.steps_per_epoch == 1 and s.train_epoch()["steps"] == 1
