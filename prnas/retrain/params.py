"""Parameter counts and inference cost of evaluation networks without data or training
(``--params-only``).

Counting needs the class count and input channels of the dataset; for CIFAR
those are constants, so comparing cells against Table III needs no download.
"""

from __future__ import annotations

from typing import Any

import torch

from prnas.cost import count_macs, measure_timing
from prnas.data.config import DataConfig
from prnas.nn.eval_net import count_parameters
from prnas.nn.eval_networks import build_eval_network
from prnas.retrain.config import RetrainConfig
from prnas.space.genotype import Genotype

# imagenet: the 1000 classes of ILSVRC-2012, what published counts use, without a scan
# of the tree (which may not be on this machine).
_KNOWN_SHAPES = {"cifar10": (10, 3), "cifar100": (100, 3), "imagenet": (1000, 3)}


def dataset_shape(data: DataConfig) -> tuple[int, int]:
    """(classes, input channels); reads the data only for the demo and image folders."""
    if data.dataset in _KNOWN_SHAPES:
        return _KNOWN_SHAPES[data.dataset]
    from prnas.data.datasets import retrain_datasets

    _, _, info = retrain_datasets(data, cutout=0)
    return info.num_classes, info.in_channels


def network_cost(cfg: RetrainConfig, genotype: Genotype, shape: tuple[int, int] | None = None,
                 *, timing: bool = True) -> dict[str, Any]:
    """``params``, ``macs`` and (``timing``) the measured latency and throughput of the
    evaluation network ``cfg`` would train, untrained (timing does not depend on weights),
    at the data's input size, on ``cfg.device``; see :mod:`prnas.cost`."""
    from prnas.runtime.device import pick_device
    from prnas.runtime.performance import resolve

    classes, channels = shape or dataset_shape(cfg.data)
    size = cfg.data.resolved_input_size

    def build() -> torch.nn.Module:
        return build_eval_network(cfg.network.kind, genotype, channels=cfg.network.channels,
                                  layers=cfg.network.layers, num_classes=classes, auxiliary=False,
                                  in_channels=channels)

    with torch.device("meta"):  # shapes only: counting needs no memory and no arithmetic
        shapes = build()
    out: dict[str, Any] = {"params": count_parameters(shapes),
                           "macs": count_macs(shapes, (channels, size, size)),
                           "input_size": size}
    if timing:
        device = pick_device(cfg.device)
        perf = resolve(cfg.performance, device)
        with torch.random.fork_rng(devices=[]):
            net = build()
        out.update(measure_timing(net, (channels, size, size), device,
                                  channels_last=perf.channels_last).as_dict())
    return out
