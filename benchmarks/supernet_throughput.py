"""Measure the search supernet: images/s and peak memory against batch size.

Prints one line per batch size and the fit of the linear memory model the
adaptive batch size relies on (paper III-C). On CUDA the memory is the
process's own ``max_memory_allocated``; on CPU only throughput is measured.

    python benchmarks/supernet_throughput.py [--candidates 6] [--batch 24,64,128] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from prnas.nn.search_net import SearchNetwork
from prnas.search.pools import initial_pools
from prnas.space import Op, preset, reachable


def pools_with(candidates: int, nodes: int = 4):
    """Paper-sized pools: the initial four ops plus DL convs up to ``candidates`` per edge."""
    extra = [Op.parse(s) for s in reachable(preset("DL"), 5) if s != "conv_k3_d1"]
    base = initial_pools(nodes)
    return {t: tuple((edge + tuple(extra))[:candidates] for edge in edges)
            for t, edges in base.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--batch", default="24,48,72,96,128")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    pools = pools_with(args.candidates)
    net = SearchNetwork(pools, channels=args.channels, layers=args.layers, nodes=4,
                        num_classes=10).to(dev)
    alphas = {t: [torch.zeros(len(e), device=dev, requires_grad=True) for e in edges]
              for t, edges in pools.items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    print(f"device {dev}, {args.candidates} candidates/edge, C={args.channels}, "
          f"{args.layers} cells, {sum(p.numel() for p in net.parameters()):,} weights")
    sizes, peaks = [], []
    for b in (int(x) for x in args.batch.split(",")):
        x = torch.randn(b, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (b,), device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for i in range(args.steps + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x, alphas), y).backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first step warms up allocators and kernels
                times.append(time.perf_counter() - t0)
        ips = b / float(np.median(times))
        line = f"batch {b:4d}: {ips:9.1f} img/s, {np.median(times) * 1000:8.1f} ms/step"
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated(dev) / 2**20
            sizes.append(b)
            peaks.append(peak)
            line += f", peak {peak:9.1f} MiB"
        print(line, flush=True)
    if len(sizes) >= 2:
        slope, intercept = np.polyfit(sizes, peaks, 1)
        pred = np.polyval([slope, intercept], sizes)
        worst = float(np.max(np.abs(pred - peaks) / np.array(peaks)))
        print(f"linear memory model: {slope:.2f} MiB/image + {intercept:.1f} MiB; "
              f"worst relative error {worst:.2%}")


if __name__ == "__main__":
    main()
