"""The fast search step computes what the reference step computes, only with less work."""

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from prnas.nn.search_net import SearchNetwork
from prnas.runtime.performance import PerformanceConfig, resolve
from prnas.search.config import ConfigError, build_config
from prnas.search.steps import SearchSteps
from prnas.space import Op

CPU = torch.device("cpu")
# Every module kind a pool can hold: identity / FactorizedReduce (on stride-2 edges),
# both pools, single- and multi-block convs, dilation, kernel 1.
MIXED = tuple(Op.parse(s) for s in (
    "skip", "max_pool_3x3", "avg_pool_3x3", "conv_k3_d1", "conv_k5_d1", "conv_k3_d2_e2",
    "conv_k1_d1_e1", "conv_k3_d1_e1-2"))
NODES = 2
EDGES = sum(j + 2 for j in range(NODES))


def _pools(edge_ops):
    """Every edge holds all of ``edge_ops``, in an order rotated per edge and cell type."""
    n = len(edge_ops)
    return {t: tuple(tuple(edge_ops[(i + j + k) % n] for j in range(n)) for i in range(EDGES))
            for k, t in enumerate(("normal", "reduce"))}


def _net(pools, seed=0):
    torch.manual_seed(seed)
    net = SearchNetwork(pools, channels=4, layers=3, nodes=NODES, num_classes=5)
    alphas = {t: nn.ParameterList(nn.Parameter(torch.randn(len(e))) for e in edges)
              for t, edges in pools.items()}
    return net, alphas


def _steps(net, alphas, alpha_grad_clip=None, **perf):
    w_opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam([a for t in alphas for a in alphas[t]], lr=0.01, betas=(0.5, 0.999),
                             weight_decay=1e-3)
    return SearchSteps(net, alphas, w_opt, a_opt, grad_clip=5.0,
                       perf=resolve(PerformanceConfig(**perf), CPU), device=CPU,
                       alpha_grad_clip=alpha_grad_clip)


def _pair(pools, alpha_grad_clip=None, **fast_perf):
    """The same weights and alphas driven by the reference step and by a fast one."""
    net, alphas = _net(pools)
    ref = _steps(net, alphas, alpha_grad_clip, fast_path=False, channels_last=False)
    net2, alphas2 = copy.deepcopy(net), copy.deepcopy(alphas)
    fast_perf = {"fast_path": True, "channels_last": True, **fast_perf}
    if resolve(PerformanceConfig(**fast_perf), CPU).channels_last:
        net2 = net2.to(memory_format=torch.channels_last)
    return ref, _steps(net2, alphas2, alpha_grad_clip, **fast_perf)


def _batch(seed, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def _alpha_grads(steps):
    return [a.grad.clone() for t in steps.alphas for a in steps.alphas[t]]


def _weight_grads(steps):
    return {n: p.grad.clone() for n, p in steps.net.named_parameters()}


def _assert_close(a, b, what):
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5,
                                   msg=lambda m, i=i: f"{what} {i}: {m}")


FUSE = pytest.mark.parametrize("fuse", [False, True], ids=["fast", "fused"])


@FUSE
@pytest.mark.parametrize("channels_last", [False, True])
def test_alpha_gradients_match_the_reference(channels_last, fuse):
    ref, fast = _pair(_pools(MIXED), channels_last=channels_last, fuse=fuse)
    x, y = _batch(1)
    loss_ref = ref.alpha_gradients(x, y)
    loss_fast = fast.alpha_gradients(x, y)
    torch.testing.assert_close(loss_fast, loss_ref, atol=1e-6, rtol=1e-6)
    _assert_close(_alpha_grads(fast), _alpha_grads(ref), "alpha grad")
    assert any(g.abs().sum() > 0 for g in _alpha_grads(fast))
    # The reference computed every weight gradient on the way; the fast step none.
    assert all(p.grad is not None for p in ref.net.parameters())
    assert all(p.grad is None for p in fast.net.parameters())
    assert all(p.requires_grad for p in fast.net.parameters())


@FUSE
@pytest.mark.parametrize("channels_last", [False, True])
def test_weight_gradients_match_the_reference(channels_last, fuse):
    ref, fast = _pair(_pools(MIXED), channels_last=channels_last, fuse=fuse)
    x, y = _batch(2)
    loss_ref, logits_ref, _ = ref.weight_gradients(x, y)
    loss_fast, logits_fast, _ = fast.weight_gradients(x, y)
    torch.testing.assert_close(loss_fast, loss_ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits_fast, logits_ref, atol=1e-5, rtol=1e-5)
    g_ref, g_fast = _weight_grads(ref), _weight_grads(fast)
    assert g_ref.keys() == g_fast.keys()
    _assert_close([g_fast[k] for k in g_ref], list(g_ref.values()), "weight grad")
    assert all(a.grad is None for t in fast.alphas for a in fast.alphas[t])
    # BN running statistics moved the same way.
    _assert_close([b for _, b in sorted(fast.net.named_buffers())],
                  [b for _, b in sorted(ref.net.named_buffers())], "buffer")


def _alpha_values(steps):
    return [a.detach().clone() for t in steps.alphas for a in steps.alphas[t]]


def test_alpha_gradients_are_clipped_alike_in_both_steps():
    """Issue 12: the alpha gradients are clipped to ``alpha_grad_clip`` (one norm over all
    alphas, as the reference's train_search.py) before Adam, in the fast and reference step."""
    clip = 1e-3  # far below the raw norm, so the clip binds
    ref, fast = _pair(_pools(MIXED), alpha_grad_clip=clip)
    _, free = _pair(_pools(MIXED))  # the same start, unclipped
    xa, ya = _batch(3)
    raw = free.alpha_gradients(xa, ya)
    raw_norm = torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(g) for g in _alpha_grads(free)]))
    assert raw_norm > 100 * clip and torch.isfinite(raw)
    for _ in range(3):
        for s in (ref, fast, free):
            s.alpha_step(xa, ya)
    for s in (ref, fast):
        norm = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in _alpha_grads(s)]))
        assert float(norm) == pytest.approx(clip, rel=1e-4)
    _assert_close(_alpha_grads(fast), _alpha_grads(ref), "clipped alpha grad")
    _assert_close(_alpha_values(fast), _alpha_values(ref), "alpha")
    # Clipping changed the update (weight decay now outweighs the tiny gradient).
    assert max(float((a - b).abs().max())
               for a, b in zip(_alpha_values(fast), _alpha_values(free))) > 1e-4


def test_alpha_grad_clip_defaults_to_the_reference_and_null_disables():
    assert build_config({}).optim.alpha_grad_clip == 5.0
    assert build_config({"optim": {"alpha_grad_clip": None}}).optim.alpha_grad_clip is None
    with pytest.raises(ConfigError, match="optim.alpha_grad_clip"):
        build_config({"optim": {"alpha_grad_clip": 0}})


@pytest.mark.slow
@FUSE
def test_training_steps_and_evaluation_stay_together(fuse):
    ref, fast = _pair(_pools(MIXED), fuse=fuse)
    for i in range(4):
        x, y = _batch(10 + i)
        xa, ya = _batch(20 + i)
        ref.alpha_step(xa, ya)
        fast.alpha_step(xa, ya)
        r = ref.weight_step(x, y)
        f = fast.weight_step(x, y)
        assert f[1:] == r[1:]
        assert f[0] == pytest.approx(r[0], rel=1e-5)
    _assert_close([a for t in fast.alphas for a in fast.alphas[t]],
                  [a for t in ref.alphas for a in ref.alphas[t]], "alpha")
    sd_ref, sd_fast = ref.net.state_dict(), fast.net.state_dict()
    _assert_close([sd_fast[k] for k in sd_ref], list(sd_ref.values()), "state")
    ref.net.eval()
    fast.net.eval()
    x, _ = _batch(99)
    torch.testing.assert_close(fast.logits(x), ref.logits(x), atol=1e-5, rtol=1e-5)


# Any pools: each edge a set of one to four of MIXED's ops, the same in both cell types.
ANY_EDGE_SETS = st.lists(st.sets(st.sampled_from(MIXED), min_size=1, max_size=4),
                         min_size=EDGES, max_size=EDGES)


def _pools_of(edge_sets):
    return {t: tuple(tuple(sorted(s, key=str)) for s in edge_sets)
            for t in ("normal", "reduce")}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_EDGE_SETS)
def test_fast_forward_equals_reference_for_any_pools(edge_sets):
    net, alphas = _net(_pools_of(edge_sets))
    x, _ = _batch(3)
    net.eval()  # running statistics: both forwards see the same normalisation
    with torch.no_grad():
        net.fast_path = False
        ref = net(x, alphas)
        net.fast_path = True
        fast = net(x, alphas)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_a_failing_alpha_step_leaves_the_weights_trainable():
    _, fast = _pair(_pools(MIXED))

    def boom(*_):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    handle = fast.net.cells[1].register_forward_hook(boom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        fast.alpha_step(*_batch(4))
    handle.remove()
    assert all(p.requires_grad for p in fast.net.parameters())
    fast.weight_step(*_batch(5))
    assert all(p.grad is not None for p in fast.net.parameters())


def test_bf16_autocast_runs_and_stays_near_fp32():
    ref, amp = _pair(_pools(MIXED), amp="bf16")
    x, y = _batch(6)
    loss_ref = ref.alpha_gradients(x, y)
    loss_amp = amp.alpha_gradients(x, y)
    assert loss_amp.dtype == torch.float32
    assert float(loss_amp) == pytest.approx(float(loss_ref), rel=0.05)
    assert all(torch.isfinite(g).all() for g in _alpha_grads(amp))


def test_auto_channels_last_is_on_for_cpu_and_only_with_amp_on_cuda():
    auto = PerformanceConfig()
    assert resolve(auto, CPU).channels_last
    assert not resolve(auto, torch.device("cuda")).channels_last
    assert resolve(PerformanceConfig(amp="bf16"), torch.device("cuda")).channels_last
    assert not resolve(PerformanceConfig(channels_last=False), CPU).channels_last


def test_bad_performance_fields_fail_at_load_naming_field_and_values():
    with pytest.raises(ConfigError) as err:
        build_config({"performance": {"amp": "fp8"}})
    assert "performance.amp" in str(err.value) and "bf16" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({"performance": {"fast": True}})
    assert "performance.fast" in str(err.value) and "fast_path" in str(err.value)


def test_a_net_without_reduction_cells_leaves_their_alphas_alone():
    """layers < 3 has normal cells only: the reduce alphas are unused in both variants."""
    pools = _pools(MIXED[:4])
    torch.manual_seed(0)
    net = SearchNetwork(pools, channels=4, layers=2, nodes=NODES, num_classes=5)
    alphas = {t: nn.ParameterList(nn.Parameter(torch.randn(len(e))) for e in edges)
              for t, edges in pools.items()}
    ref = _steps(copy.deepcopy(net), copy.deepcopy(alphas), fast_path=False)
    fast = _steps(net, alphas)
    for s in (ref, fast):
        s.alpha_step(*_batch(7))
    for s in (ref, fast):
        assert all(a.grad is None for a in s.alphas["reduce"])
        assert all(a.grad is not None for a in s.alphas["normal"])
    _assert_close(_alpha_grads_of(fast, "normal"), _alpha_grads_of(ref, "normal"), "alpha grad")


def _alpha_grads_of(steps, cell_type):
    return [a.grad for a in steps.alphas[cell_type]]


def test_compile_wraps_the_network_for_dynamic_batch_sizes(monkeypatch):
    """The switch reaches torch.compile with a dynamic batch dimension (compiling for real
    takes minutes on a CPU, so torch.compile is recorded here, not run)."""
    from prnas.runtime import performance

    calls = []

    def fake_compile(module, **kwargs):
        calls.append((module, kwargs))
        return module

    monkeypatch.setattr(performance.torch, "compile", fake_compile)
    net, _ = _net(_pools(MIXED[:2]))
    assert performance.compiled(net, resolve(PerformanceConfig(), CPU)) is net and not calls
    performance.compiled(net, resolve(PerformanceConfig(compile=True), CPU))
    assert calls == [(net, {"dynamic": True})]


# Table I's pool sizes (6 candidates in cycles 1-5 after the first, then 4, 3, 2, 1) and
# the initial four, drawn from every module kind a pool can hold.
TABLE_I = {"cycle1": 4, "cycles2-5": 6, "cycle6": 4, "cycle7": 3, "cycle8": 2, "cycle9": 1}


@pytest.mark.parametrize("state", TABLE_I)
def test_the_fused_step_equals_the_reference_on_every_pool_size_of_table_i(state):
    """Both cell types (stride 1 and the reduction cell's stride-2 edges), the alpha and
    the weight step: losses, gradients and BN statistics to 1e-5 (issue 26)."""
    n = TABLE_I[state]
    ops = (Op.parse("max_pool_3x3"), Op.parse("avg_pool_3x3"), Op.parse("skip"),
           Op.parse("conv_k3_d1")) if state == "cycle1" else MIXED
    pools = {t: tuple(tuple(ops[(e * 3 + k + j) % len(ops)] for j in range(n))
                      for e in range(EDGES)) for k, t in enumerate(("normal", "reduce"))}
    ref, fused = _pair(pools, fuse=True)
    xa, ya = _batch(30)
    torch.testing.assert_close(fused.alpha_gradients(xa, ya), ref.alpha_gradients(xa, ya),
                               atol=1e-5, rtol=1e-5)
    _assert_close(_alpha_grads(fused), _alpha_grads(ref), "alpha grad")
    x, y = _batch(31)
    loss_ref, _, _ = ref.weight_gradients(x, y)
    loss_fused, _, _ = fused.weight_gradients(x, y)
    torch.testing.assert_close(loss_fused, loss_ref, atol=1e-5, rtol=1e-5)
    g_ref, g_fused = _weight_grads(ref), _weight_grads(fused)
    _assert_close([g_fused[k] for k in g_ref], list(g_ref.values()), "weight grad")
    _assert_close([b for _, b in sorted(fused.net.named_buffers())],
                  [b for _, b in sorted(ref.net.named_buffers())], "buffer")


def test_fused_statistics_are_the_modules_own_and_survive_a_move():
    """The fused BN statistics are views of one buffer per state: the update lands in each
    module's own buffer (state dict, checkpoint), and a network moved or converted after
    a fused step gets a new plan instead of writing into a stale buffer."""
    _, fused = _pair(_pools(MIXED), fuse=True)
    fused.weight_step(*_batch(40))
    bn = fused.net.cells[0].edges[0].ops["max_pool_3x3"][1]
    assert int(bn.num_batches_tracked) == 1 and bn.running_mean.abs().sum() > 0
    before = copy.deepcopy(fused.net.state_dict())
    fused.net.double()
    fused.net.float()  # new tensors: the old views are gone
    fused.weight_step(*_batch(41))
    assert int(bn.num_batches_tracked) == 2
    moved = fused.net.state_dict()
    assert any(not torch.equal(moved[k], before[k]) for k in before if "running_mean" in k)
    restored = copy.deepcopy(fused.net)
    restored.load_state_dict(moved)
    for k, v in restored.state_dict().items():
        assert torch.equal(v, moved[k]), k


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_EDGE_SETS)
def test_fused_training_forward_equals_reference_for_any_pools(edge_sets):
    net, alphas = _net(_pools_of(edge_sets))
    twin = copy.deepcopy(net)
    x, _ = _batch(3)
    net.train(), twin.train()
    twin.fast_path = twin.fused = True
    torch.testing.assert_close(twin(x, alphas), net(x, alphas), atol=1e-5, rtol=1e-5)
