"""Population prune-and-replace without Ray: share's proposal rule, the outcomes of exploit
and halve, and an engine taking over another seed's state."""

from __future__ import annotations

import math
import random

import pytest
import torch
from tiny import tiny_search

from prnas.cycle_record import CycleRecord
from prnas.runtime import rng
from prnas.search import policy
from prnas.search.config import ConfigError, PopulationConfig, build_config
from prnas.search.decision import decide_cycle
from prnas.search.engine import Search
from prnas.search.population import (
    HALVED,
    Member,
    decide_population,
    op_strengths,
    share_boost,
)
from prnas.space import Op
from prnas.space.constraints import preset
from prnas.space.pools import CELL_TYPES, initial_histories, initial_pools
from prnas.space.weights import softmax

SCHEDULE = [{"epochs": 1, "grace_epochs": 0, "morphs": 2, "candidates": 4}] * 4


def _cfg(seed: int, **population):
    return build_config(tiny_search(seed=seed, schedule=SCHEDULE, population=population))


def _record(seed: int, valid_acc: float, nodes: int = 2) -> CycleRecord:
    pools = initial_pools(nodes)
    rng = random.Random(seed)
    alphas = {t: [[rng.gauss(0, 1) for _ in edge] for edge in pools[t]] for t in CELL_TYPES}
    return CycleRecord(cycle=1, pools=pools, alphas=alphas, histories=initial_histories(pools),
                       epoch_metrics=[], columns={"valid_acc": valid_acc, "num_cycles": 4})


def test_share_at_temperature_zero_is_the_paper_rule():
    cfg = _cfg(0)
    mine, others = _record(0, 0.5), [_record(s, 0.5) for s in (1, 2)]
    paper = decide_cycle(cfg, 0, mine.pools, mine.alphas, mine.histories)
    shared = decide_cycle(cfg, 0, mine.pools, mine.alphas, mine.histories,
                          share_boost(others, 0.0))
    assert shared.pools == paper.pools and shared.histories == paper.histories
    new = [n for _, _, n in shared.new_ops()]
    assert new and all(n.p_shared == pytest.approx(n.p_paper) for n in new)
    assert all(n.p_shared is None for _, _, n in paper.new_ops())


def test_share_weighs_each_proposal_by_the_documented_factor():
    """p_shared(child) = p_paper(child) * exp(T * s(child)) / sum over the options, with s the
    child's mean softmax weight over the other seeds' edges of that cell type (0 if absent)."""
    others = [_record(s, 0.5) for s in (1, 2)]
    strengths = op_strengths(others)
    edges = sum(len(r.pools["normal"]) for r in others)
    conv = Op.parse("conv_k3_d1")
    expected = sum(softmax(a)[list(edge).index(conv)] for r in others
                   for edge, a in zip(r.pools["normal"], r.alphas["normal"])) / edges
    assert strengths["normal"][conv] == pytest.approx(expected)
    # A child nobody else holds gets a strength of its own: let one do so.
    child = Op.parse("conv_k5_d1")
    temperature = 3.0
    boost = {"normal": {child: math.exp(temperature * 0.6)}}
    survivors = [(Op.parse("skip"), 0.2), (conv, 0.8)]
    constraints = preset("DL")
    options = policy._proposals(survivors, constraints)
    weights = [p * boost["normal"].get(c, 1.0) for p, _, _, c in options]
    for seed in range(20):
        new = policy._propose(survivors, constraints, random.Random(seed),
                              {s for s, _ in survivors}, frozenset(), boost["normal"])
        i = next(k for k, o in enumerate(options) if o[3] == new.op)
        assert new.p_paper == pytest.approx(options[i][0] / sum(o[0] for o in options))
        assert new.p_shared == pytest.approx(weights[i] / sum(weights))
    # A large temperature all but forces the strong child.
    strong = {child: math.exp(50.0)}
    picks = {policy._propose(survivors, constraints, random.Random(s), {o for o, _ in survivors},
                             frozenset(), strong).op for s in range(20)}
    assert picks == {child}


def test_halve_stops_the_worst_and_exploit_copies_a_better_seed():
    cfg = {s: _cfg(s, exploit={"after": [1], "fraction": 0.25},
                   halve={"after": [1], "fraction": 0.5}) for s in range(8)}
    accs = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4]
    members = [Member(f"t{s}", cfg[s], _record(s, accs[s])) for s in range(8)]
    out = decide_population(members, 0, cfg[0].population)
    halved = sorted(t for t, o in out.items() if o.event == HALVED)
    assert halved == ["t1", "t3", "t5", "t7"]  # the worst half by valid_acc
    assert all(out[t].decision is None for t in halved)
    # Of the four left (0.9, 0.8, 0.7, 0.6) the worst one copies the best one.
    copied = {t: o.source for t, o in out.items() if o.source}
    assert copied == {"t6": "t0"} and out["t6"].event == "exploit from t0"
    # It decides on the source's pools with its own decision RNG.
    src = members[0].record
    assert out["t6"].decision == decide_cycle(cfg[6], 0, src.pools, src.alphas, src.histories)
    assert out["t0"].decision == decide_cycle(cfg[0], 0, src.pools, src.alphas, src.histories)
    assert out["t0"].event is None
    # The same members in another order decide the same.
    assert decide_population(members[::-1], 0, cfg[0].population) == out


def test_a_cycle_without_a_mechanism_is_each_seeds_own_decision():
    cfg = {s: _cfg(s, halve={"after": [2]}) for s in range(3)}
    members = [Member(f"t{s}", cfg[s], _record(s, 0.5)) for s in range(3)]
    out = decide_population(members, 0, cfg[0].population)
    for m in members:
        r = m.record
        assert out[m.trial_id].decision == decide_cycle(m.cfg, 0, r.pools, r.alphas,
                                                        r.histories)
        assert out[m.trial_id].event is None and out[m.trial_id].source is None


def test_population_defaults_and_bad_cycles():
    assert not PopulationConfig().enabled
    pop = PopulationConfig(exploit={}, halve={})
    assert pop.exploit_after(8) == (2, 4, 6) and pop.halve_after(8) == (4,)
    with pytest.raises(ConfigError, match=r"population.halve.after: cycles \[4\] outside 1..3"):
        _cfg(0, halve={"after": [4]})


@pytest.mark.slow
def test_adopting_a_state_then_training_is_the_source_unless_the_stream_is_own():
    def trained(seed):
        s = Search(_cfg(seed))
        s.apply(s.decide(), s.run_cycle())
        s.run_cycle()
        return s

    a, b, c = trained(0), trained(1), trained(1)
    state = a.state_dict()
    decision = a.decide()
    own = c.state_dict()["rng"]
    # A full copy (its random streams and, through the seed, its data order too) trains
    # the very same next cycle as the source: nothing the cycle depends on was left out.
    b.adopt(state, own_rng=False)
    b.cfg = b.cfg.model_copy(update={"seed": 0})
    c.adopt(state)  # its own random streams and data order: it diverges
    assert torch.equal(c.state_dict()["rng"]["augment"], own["augment"])
    # One process holds all three, so each gets the global streams it would have alone.
    for s, stream in ((a, state["rng"]), (b, state["rng"]), (c, own)):
        rng.restore(stream, augment=s.setup.augment_rng)
        s.apply(decision)
        s.run_cycle()
    alphas = [torch.cat([x.detach().flatten() for t in CELL_TYPES for x in s.alphas[t]])
              for s in (a, b, c)]
    assert torch.equal(alphas[0], alphas[1])
    assert not torch.equal(alphas[0], alphas[2])
    assert [r.cycle for r in b.cycle_log] == [1, 2]  # its own log, with the copy's cycle 2
    with pytest.raises(ValueError, match="cannot adopt the state after cycle 1"):
        a.adopt({**b.state_dict(), "cycle": 0})


# ---------------------------------------------------------------- the scheduler's barrier


class _Trial:
    """What the scheduler reads of a Tune trial."""

    def __init__(self, trial_id: str, config: dict, status: str = "PENDING") -> None:
        self.trial_id, self.config, self.status, self.last_result = trial_id, config, status, {}

    def set_config(self, config: dict) -> None:
        self.config = config


class _Controller:
    def __init__(self, trials):
        self.trials = trials

    def get_trials(self):
        return self.trials


def _population_trials(n: int, **population):
    from prnas.tune.search_trainable import SEARCH_KEY

    raw = build_config(tiny_search(schedule=SCHEDULE, population=population)).model_dump(
        mode="json")
    return [_Trial(f"t{s}", {SEARCH_KEY: raw, "seed": s, "space": "DL"}) for s in range(n)]


def _report(scheduler, controller, trial, valid_acc):
    trial.status = "RUNNING"
    rec = _record(int(trial.trial_id[1:]), valid_acc)
    result = {**rec.to_json(), "trial_path": f"/tmp/{trial.trial_id}"}
    trial.last_result = result
    decision = scheduler.on_trial_result(controller, trial, result)
    trial.status = "PAUSED"
    return decision


def test_no_member_decides_before_all_have_reported():
    from prnas.tune.scheduler import PruneAndReplaceScheduler
    from prnas.tune.search_trainable import DECISION_KEY

    trials = _population_trials(3, share={"temperature": 2.0})
    controller, scheduler = _Controller(trials), PruneAndReplaceScheduler()
    for t, acc in zip(trials[:2], (0.5, 0.6)):
        assert _report(scheduler, controller, t, acc) == "PAUSE"
        assert DECISION_KEY not in t.config
    # The two waiting at the barrier are not run again; the one that has not reported is.
    assert scheduler.choose_trial_to_run(controller) is trials[2]
    _report(scheduler, controller, trials[2], 0.7)
    assert all(t.config[DECISION_KEY]["cycle"] == 0 for t in trials)
    # Each decision is the population's, from all three records.
    members = [Member(t.trial_id, build_config(tiny_search(
        schedule=SCHEDULE, seed=int(t.trial_id[1:]), population={"share": {"temperature": 2.0}})),
        _record(int(t.trial_id[1:]), acc)) for t, acc in zip(trials, (0.5, 0.6, 0.7))]
    out = decide_population(members, 0, members[0].cfg.population)
    for t in trials:
        assert t.config[DECISION_KEY]["pools"] == out[t.trial_id].decision.to_plain()["pools"]
        pop = t.config[DECISION_KEY]["population"]
        assert (pop["event"], pop["source"], sorted(pop["table"])) == (
            "share", None, ["t0", "t1", "t2"])
    assert scheduler.choose_trial_to_run(controller) in trials  # decided: they run on


def test_a_failed_member_leaves_the_population_without_blocking_it():
    from prnas.tune.scheduler import PruneAndReplaceScheduler
    from prnas.tune.search_trainable import DECISION_KEY

    trials = _population_trials(3, exploit={"after": [1], "fraction": 0.34})
    controller, scheduler = _Controller(trials), PruneAndReplaceScheduler()
    _report(scheduler, controller, trials[0], 0.9)
    _report(scheduler, controller, trials[1], 0.1)
    trials[2].status = "ERROR"  # failed for good while the others waited
    scheduler.on_trial_error(controller, trials[2])
    assert DECISION_KEY not in trials[2].config
    # Two members decided: the worse one takes over the better one's state after cycle 1.
    pops = [t.config[DECISION_KEY]["population"] for t in trials[:2]]
    assert (pops[1]["event"], pops[1]["source"]) == ("exploit from t0",
                                                     "/tmp/t0/population-cycle-1.pt")
    assert (pops[0]["event"], pops[0]["source"]) == (None, None)


def test_a_member_that_ends_while_its_status_is_still_running_does_not_block():
    """Tune tells the scheduler of a trial's end before the trial's status changes; the
    barrier is checked again when Tune next asks for a trial to run."""
    from prnas.tune.scheduler import PruneAndReplaceScheduler
    from prnas.tune.search_trainable import DECISION_KEY

    trials = _population_trials(3, share={"temperature": 1.0})
    controller, scheduler = _Controller(trials), PruneAndReplaceScheduler()
    _report(scheduler, controller, trials[0], 0.9)
    _report(scheduler, controller, trials[1], 0.1)
    trials[2].status = "RUNNING"  # e.g. halved: it closes itself, reported done
    scheduler.on_trial_complete(controller, trials[2], {"done": True})
    assert DECISION_KEY not in trials[0].config  # still counted: its status is RUNNING
    trials[2].status, trials[2].last_result = "TERMINATED", {"done": True}
    assert scheduler.choose_trial_to_run(controller) in trials[:2]
    assert trials[0].config[DECISION_KEY]["cycle"] == 0


def test_a_halved_seed_frees_its_slot_and_the_population_never_waits_on_it():
    """Issue 25 item 3: after halve, the stopped seed's slot goes to whatever waits (here
    the next space's trial, which has done fewer cycles than the survivor), and the
    survivor's next barrier is decided by itself alone."""
    from prnas.tune.scheduler import PruneAndReplaceScheduler
    from prnas.tune.search_trainable import DECISION_KEY

    dl = _population_trials(2, halve={"after": [1], "fraction": 0.5})
    dd = _Trial("u0", {**dl[0].config, "space": "DD"})
    controller, scheduler = _Controller([*dl, dd]), PruneAndReplaceScheduler()
    _report(scheduler, controller, dl[0], 0.2)
    # DL's barrier holds t0; the other space's trial is not held by it.
    assert scheduler.choose_trial_to_run(controller) in (dl[1], dd)
    _report(scheduler, controller, dl[1], 0.8)
    assert dl[0].config[DECISION_KEY]["population"]["event"] == HALVED
    assert dl[1].config[DECISION_KEY]["population"]["event"] is None
    # The halved seed closes itself (done) and leaves: its slot goes to the waiting trial
    # with the fewest cycles, the next space's, before the survivor's next cycle.
    dl[0].status = "RUNNING"
    scheduler.on_trial_complete(controller, dl[0], {"done": True})
    dl[0].status, dl[0].last_result = "TERMINATED", {"done": True}
    assert scheduler.choose_trial_to_run(controller) is dd
    # The survivor's cycle-2 barrier needs no one else: decided on its report.
    rec = _record(1, 0.8)
    result = {**rec.to_json(), "cycle": 2, "trial_path": "/tmp/t1"}
    dl[1].status, dl[1].last_result = "RUNNING", result
    assert scheduler.on_trial_result(controller, dl[1], result) == "PAUSE"
    assert dl[1].config[DECISION_KEY]["cycle"] == 1
    assert sorted(dl[1].config[DECISION_KEY]["population"]["table"]) == ["t1"]


def test_a_member_whose_decision_was_not_persisted_takes_it_from_a_peer():
    """A driver killed after the barrier decided, with one member's new config saved and
    another's not: the other reports the cycle again and gets the very same decision."""
    from prnas.tune.scheduler import PruneAndReplaceScheduler
    from prnas.tune.search_trainable import DECISION_KEY

    trials = _population_trials(2, exploit={"after": [1], "fraction": 0.5})
    controller, scheduler = _Controller(trials), PruneAndReplaceScheduler()
    _report(scheduler, controller, trials[0], 0.9)
    _report(scheduler, controller, trials[1], 0.1)
    decided = trials[1].config[DECISION_KEY]
    restored = [_Trial(t.trial_id, dict(t.config), "PENDING") for t in trials]
    del restored[1].config[DECISION_KEY]  # not in the experiment snapshot
    controller, scheduler = _Controller(restored), PruneAndReplaceScheduler()
    _report(scheduler, controller, restored[1], 0.1)
    assert restored[1].config[DECISION_KEY] == decided


def test_without_a_population_each_trial_decides_alone():
    from prnas.tune.scheduler import PruneAndReplaceScheduler
    from prnas.tune.search_trainable import DECISION_KEY

    trials = _population_trials(2)  # no mechanism configured
    controller, scheduler = _Controller(trials), PruneAndReplaceScheduler()
    _report(scheduler, controller, trials[0], 0.5)
    rec = _record(0, 0.5)
    assert trials[0].config[DECISION_KEY] == {"cycle": 0, **decide_cycle(
        _cfg(0), 0, rec.pools, rec.alphas, rec.histories).to_plain()}
    assert DECISION_KEY not in trials[1].config


def test_without_share_the_proposal_draws_as_the_paper_rule_always_did():
    """The draw without a boost is the one the policy made before population existed:
    ``rng.choices`` over the options with the paper's weights (same RNG use, same child)."""
    survivors = [(Op.parse("skip"), 0.1), (Op.parse("conv_k3_d1"), 0.6),
                 (Op.parse("conv_k5_d1"), 0.3)]
    constraints = preset("DL")
    taken = {o for o, _ in survivors}
    options = [p for p in policy._proposals(survivors, constraints) if p[3] not in taken]
    for seed in range(50):
        ref = random.Random(seed)
        (_, parent, morphism, child), = ref.choices(options, weights=[o[0] for o in options],
                                                    k=1)
        rng = random.Random(seed)
        new = policy._propose(survivors, constraints, rng, taken, frozenset())
        assert (new.op, new.parent, new.morphism) == (child, parent, morphism)
        assert rng.getstate() == ref.getstate() and new.p_shared is None
