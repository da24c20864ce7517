"""Exporting a ``model.pt`` for inference runtimes: ONNX and TorchScript, verified on export.

The exported graph is the evaluation network in eval mode with the auxiliary
head and drop-path removed: one input ``input`` (``N x C x H x W`` float32,
normalised with the statistics the model file records; N is dynamic), one
output ``logits`` (``N x classes``). Each file is checked before it is put in
place: the exported model, read back from disk, must reproduce PyTorch's
logits on random inputs of batch 1 and 3 (the graph was exported at batch 2)
to within an absolute 1e-4; onnxruntime on the CPU runs the ONNX model.
Both files carry the preprocessing and class names as metadata (``prnas.json``):
ONNX in ``metadata_props``, TorchScript as an extra file.

ONNX export needs the optional packages ``onnx``, ``onnxscript`` (torch's ONNX
exporter) and ``onnxruntime`` (the check): ``pip install -e ".[export]"``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from prnas._io import plain_permissions
from prnas.model_file import ModelFile, Weights

__all__ = ["CHECK_BATCHES", "EXPORT_BATCH", "ExportError", "Logits", "Verification",
           "export", "inference_module", "metadata", "require_onnx"]

Format = Literal["onnx", "torchscript"]
EXPORT_BATCH = 2
#: The oldest opset torch's ONNX exporter accepts. It builds opset 18 or newer and converts
#: down to an older one asked for; where that fails it keeps 18, which is refused below
#: (it used to be written without a word).
MIN_OPSET = 7
CHECK_BATCHES = (1, 3)
INSTALL_HINT = ('pip install -e ".[export]"  (from a clone; or: pip install onnx onnxscript '
                'onnxruntime)')


class ExportError(RuntimeError):
    """An export that could not be done or did not verify; one line saying why."""


class Logits(nn.Module):
    """The evaluation network as an inference graph: logits only, no auxiliary head."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        net.auxiliary_head = None  # its weights are not part of the exported model
        net.drop_path_prob = 0.0
        self.net = net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


@dataclass(frozen=True)
class Verification:
    out: str
    format: str
    batches: tuple[int, ...]
    max_abs_diff: float
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def inference_module(mf: ModelFile, weights: Weights = "final") -> Logits:
    """The network of ``mf`` on the CPU in fp32, ready to trace or export."""
    return Logits(mf.network_for_inference(weights, "cpu")).float().eval()


def metadata(mf: ModelFile, weights: Weights) -> dict[str, Any]:
    """What a runtime needs beside the graph: preprocessing, classes, provenance."""
    n = mf.network
    return {"format": "prnas-export/1", "genotype": mf.genotype.name, "weights": weights,
            "input": {"name": "input", "layout": "NCHW", "channels": n.in_channels,
                      "size": n.input_size, "mean": list(mf.mean), "std": list(mf.std),
                      "scale": "pixels / 255 (0..1), then (x - mean) / std"},
            "output": {"name": "logits"}, "classes": list(mf.classes)}


def require_onnx() -> None:
    """Fail early, saying how to install, when the optional ONNX packages are missing."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}, not installed here; "
                          f"install with: {INSTALL_HINT}")


def _inputs(shape: tuple[int, int, int], batches: Sequence[int]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn((b, *shape), generator=gen) for b in batches]


def _compare(run: Callable[[torch.Tensor], np.ndarray], module: nn.Module,
             inputs: Sequence[torch.Tensor]) -> float:
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            expected = module(x).numpy()
            got = np.asarray(run(x))
            if got.shape != expected.shape:
                raise ExportError(f"exported model returned shape {got.shape} for a batch of "
                                  f"{len(x)}, PyTorch {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _torchscript(module: nn.Module, example: torch.Tensor, tmp: Path,
                 meta: dict[str, Any]) -> Callable[[torch.Tensor], np.ndarray]:
    # torch 2.10+ marks TorchScript deprecated (FutureWarning) but still runs it everywhere.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module, example)
        torch.jit.save(traced, str(tmp), _extra_files={"prnas.json": json.dumps(meta)})
        loaded = torch.jit.load(str(tmp), map_location="cpu")

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()

    return run


def _onnx(module: nn.Module, example: torch.Tensor, tmp: Path, meta: dict[str, Any],
          opset: int | None) -> Callable[[torch.Tensor], np.ndarray]:
    require_onnx()
    import onnx
    import onnxruntime as ort

    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    batch = torch.export.Dim("batch", min=1)
    # The exporter reports progress on stdout and warns about internals; neither is ours.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(tmp), dynamo=True, external_data=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_shapes={"x": {0: batch}}, verbose=False, **kwargs)
    proto = onnx.load(str(tmp))
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:
        raise ExportError(f"--opset {opset}: the exporter could only produce opset {written}; "
                          "not written (leave --opset out, or ask for that one)")
    entry = proto.metadata_props.add()
    entry.key, entry.value = "prnas.json", json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> np.ndarray:
        return session.run(["logits"], {"input": x.numpy()})[0]

    return run


def export(mf: ModelFile, fmt: Format, out: str | os.PathLike, *,
           weights: Weights = "final", opset: int | None = None, tolerance: float = 1e-4,
           overwrite: bool = False) -> Verification:
    """Export ``mf`` to ``out`` and verify it; ``out`` appears only once verified."""
    out = Path(out)
    if not math.isfinite(tolerance):  # nan would fail the check only after the export
        raise ExportError(f"--tolerance must be a finite number, got {tolerance}")
    if opset is not None and fmt != "onnx":
        raise ExportError(f"--opset applies to --format onnx only, not {fmt}")
    if opset is not None and opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: torch's ONNX exporter supports opsets from "
                          f"{MIN_OPSET}; leave --opset out for its default")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; choose another --out or pass --force")
    if fmt not in ("onnx", "torchscript"):
        raise ExportError(f"format must be onnx or torchscript, got {fmt!r}")
    if fmt == "onnx":
        require_onnx()
    module = inference_module(mf, weights)
    shape = mf.input_shape
    example = _inputs(shape, [EXPORT_BATCH])[0]
    meta = metadata(mf, weights)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as err:
        raise ExportError(f"--out {out}: cannot write in {out.parent} "
                          f"({err.strerror or err})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        run = (_onnx(module, example, tmp, meta, opset) if fmt == "onnx"
               else _torchscript(module, example, tmp, meta))
        diff = _compare(run, module, _inputs(shape, CHECK_BATCHES))
        if not diff <= tolerance:
            raise ExportError(f"the exported {fmt} model differs from PyTorch by up to "
                              f"{diff:.3g} (> {tolerance:g}) on random inputs; not written")
        plain_permissions(tmp)
        os.replace(tmp, out)
    except ExportError:
        raise
    except Exception as err:  # the exporters raise many kinds; say which step failed
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"{fmt} export failed: {type(err).__name__}: {first}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return Verification(out=str(out), format=fmt, batches=CHECK_BATCHES, max_abs_diff=diff,
                        tolerance=tolerance)

