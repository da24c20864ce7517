"""How close the adaptive batch size gets to its memory threshold on real steps.

The search's fast normal step (cycles 2-5 pools, paper network) runs under the
engine's own controller and memory probe until the batch size has not changed
for ``--settle`` decisions. On CUDA the probe reads this process's allocated
peak against the free memory (or ``--budget-mib``); on a CPU it reads the
resident-set peak against a budget of ``--budget-mib`` above the current RSS.
Reported: the final batch size, its measured peak, the threshold (``threshold``
x usable memory), the share of it reached, any out-of-memory back-offs, the
growth decisions it took to reach the final size against the decisions one
b_mult at a time would need, and the sizes whose measured peak went over the
threshold (overshoot).
The same property over a wide range of fake linear memory models is a test:
``tests/test_batch_size.py::test_reaches_90_percent_of_the_threshold_without_running_out``.

    python benchmarks/adaptive_batch.py [--budget-mib 1024] [--grow-every 2] [--b-max 1024]
"""

from __future__ import annotations

import argparse

import torch
from common import emit, machine, table
from search_step import batch, build, steps_for

from prnas.runtime.batch_size import BatchSizeConfig, BatchSizeController, run_step_with_backoff
from prnas.runtime.memory import probe_for, rss_peak_bytes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-mib", type=int, default=None,
                   help="CUDA: optional cap on usable memory; CPU: MiB above the current RSS "
                        "(default 1024)")
    p.add_argument("--state", default="cycles2-5")
    p.add_argument("--grow-every", type=int, default=2)
    p.add_argument("--b-max", type=int, default=1024)
    p.add_argument("--settle", type=int, default=4, help="decisions without change to stop")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    emit({"bench": "machine", "device": str(device), **machine()})
    net, alphas = build(args.state, args, device)
    steps = steps_for("fast", net, alphas, device)
    xa, ya = batch(args.b_max, device, 2)
    x, y = batch(args.b_max, device, 1)
    steps.alpha_step(xa[:24], ya[:24])  # warm-up: kernels, allocator, optimiser state
    steps.weight_step(x[:24], y[:24])
    budget = args.budget_mib * 2**20 if args.budget_mib else None
    if device.type == "cpu":
        budget = rss_peak_bytes() + (budget or 2**30)
    cfg = BatchSizeConfig(b_min=24, b_mult=8, b_max=args.b_max, grow_every=args.grow_every,
                          memory_budget_bytes=budget)
    probe = probe_for(device, cfg.memory_budget_bytes)
    ctl = BatchSizeController(cfg, probe)
    ooms, unchanged, n = 0, 0, 0

    def on_retry(_size: int) -> None:
        nonlocal ooms
        ooms += 1

    sizes: list[int] = []
    while unchanged < args.settle * args.grow_every and n < args.max_steps:
        before = ctl.batch_size
        sizes.append(before)
        # As the engine: the two halves back off separately; the weight half records.
        run_step_with_backoff(lambda b: steps.alpha_step(xa[:b], ya[:b]), ctl, record=False,
                              on_retry=on_retry)
        run_step_with_backoff(lambda b: steps.weight_step(x[:b], y[:b]), ctl, on_retry=on_retry)
        n += 1
        unchanged = unchanged + 1 if ctl.batch_size == before else 0
        if n % args.grow_every == 0:
            emit({"bench": "adaptive_batch_trace", "step": n, "batch": ctl.batch_size,
                  "peak_mib": probe.peak_bytes() / 2**20 if probe else None})
    state = ctl.state_dict()
    points = dict(state["points"])
    final = ctl.batch_size
    usable = probe.total_bytes() if probe else None
    # A size is first used one step after the decision that chose it.
    reached_at = sizes.index(final) if final in sizes else len(sizes)
    row = {"bench": "adaptive_batch", "device": str(device), "steps": n, "final_batch": final,
           "peak_mib_at_final": points.get(final, 0) / 2**20,
           "threshold_mib": cfg.threshold * usable / 2**20 if usable else None,
           "out_of_memory_backoffs": ooms, "hit_b_max": final == cfg.largest_size(),
           "decisions_to_final": reached_at // args.grow_every,
           "decisions_one_b_mult_each": (final - cfg.b_min) // cfg.b_mult,
           "sizes_over_threshold": sorted(b for b, peak in points.items()
                                          if usable and peak > cfg.threshold * usable),
           "trace": sizes}
    if usable:
        row["reached_pct"] = 100 * points.get(final, 0) / (cfg.threshold * usable)
    emit(row)
    print()
    print(table([row], [("device", "device", "s"), ("steps", "steps", "d"),
                        ("final_batch", "batch", "d"), ("peak_mib_at_final", "peak MiB", ".0f"),
                        ("threshold_mib", "threshold MiB", ".0f"),
                        ("reached_pct", "reached %", ".1f"),
                        ("out_of_memory_backoffs", "OOM back-offs", "d"),
                        ("decisions_to_final", "decisions", "d"),
                        ("decisions_one_b_mult_each", "one b_mult each", "d")]))


if __name__ == "__main__":
    main()
