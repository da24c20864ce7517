"""``model.pt``: a trained evaluation network as data, loadable without Ray, configs or trainer.

A finished retrain writes one. It holds plain values only (tensors, strings,
numbers, lists, dicts), so ``torch.load(path, weights_only=True)`` reads it and
loading never unpickles a class, let alone runs code from the file:

* ``format``: ``prnas-model/1``;
* ``genotype``: the ``prnas-genotype/1`` JSON text of the cells;
* ``network``: what :class:`~prnas.nn.eval_net.EvalNetwork` needs (channels,
  layers, classes, input channels, stem multiplier, auxiliary head) and the
  input size it was trained at;
* ``normalisation``: per-channel ``mean``/``std`` of the training data, ``classes``
  (names by class index), ``data`` (the data config it was trained and tested
  on), ``evaluation`` (test batch size and speed switches, so a re-evaluation
  batches as the retrain did);
* ``metrics``: what the retrain logged at its last epoch;
* ``state_dict``: the final weights (auxiliary head included when trained with
  one); optionally ``best_test_epoch``: ``{epoch, test_acc, state_dict}``, the
  weights of the epoch with the highest test accuracy. Chosen *on the test
  set*, so their accuracy is an optimistic estimate: report the final weights;
* ``sha256``: a fingerprint of all of the above. An edit that keeps the weights'
  shapes (a max pool swapped for an average pool, a node's input moved) would
  otherwise load silently into the wrong network.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prnas.filenames import MODEL_FILE
from prnas.nn.eval_net import EvalNetwork
from prnas.nn.eval_networks import build_eval_network
from prnas.runtime import checkpoint
from prnas.space.genotype import Genotype

__all__ = ["FORMAT", "MODEL_FILE", "ModelFile", "ModelFileError", "NetworkSpec", "find",
           "load_model", "read", "save"]

FORMAT = "prnas-model/1"
Weights = Literal["final", "best-test-epoch"]


class ModelFileError(ValueError):
    """A model file that cannot be used; the message (one line) says which file and why."""


class NetworkSpec(BaseModel):
    """The evaluation network's shape, as built by the retrain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Which DARTS evaluation network (prnas.nn.eval_networks); files from before it was
    # recorded are CIFAR networks.
    kind: Literal["cifar", "imagenet"] = "cifar"
    channels: int = Field(ge=2, multiple_of=2)
    layers: int = Field(ge=3)
    num_classes: int = Field(ge=1)
    in_channels: int = Field(ge=1)
    input_size: int = Field(ge=1)
    auxiliary: bool
    stem_multiplier: int = Field(3, ge=1)
    auxiliary_bn: bool = False  # the reference's ImageNet head (behaviour: reference)


class _Header(BaseModel):
    """Everything but the weights, validated so a malformed file fails by field name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["prnas-model/1"]
    genotype: str
    network: NetworkSpec
    normalisation: dict[Literal["mean", "std"], list[float]]
    classes: list[str]
    data: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    best_test_epoch: dict[str, Any] | None = None
    sha256: str


@dataclass(frozen=True)
class ModelFile:
    """A read and checked ``model.pt``: its metadata, and weights that fit its genotype."""

    path: Path
    genotype: Genotype
    network: NetworkSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    data: dict[str, Any]
    evaluation: dict[str, Any]
    metrics: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    best_state_dict: dict[str, torch.Tensor] | None = None
    best_epoch: int | None = None
    best_test_acc: float | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """C x H x W of one input image."""
        n = self.network
        return (n.in_channels, n.input_size, n.input_size)

    def weights(self, which: Weights = "final") -> dict[str, torch.Tensor]:
        if which == "final":
            return self.state_dict
        if which == "best-test-epoch":
            if self.best_state_dict is None:
                raise ModelFileError(f"{self.path}: holds no best-test-epoch weights")
            return self.best_state_dict
        raise ValueError(f"weights must be 'final' or 'best-test-epoch', got {which!r}")

    def build(self, *, auxiliary: bool | None = None) -> EvalNetwork:
        """A freshly initialised network of this file's shape (weights not loaded)."""
        n = self.network
        return build_eval_network(n.kind, self.genotype, channels=n.channels, layers=n.layers,
                                  num_classes=n.num_classes,
                                  auxiliary=n.auxiliary if auxiliary is None else auxiliary,
                                  in_channels=n.in_channels, stem_multiplier=n.stem_multiplier,
                                  auxiliary_bn=n.auxiliary_bn)

    def network_for_inference(self, which: Weights = "final",
                              device: str | torch.device = "cpu") -> EvalNetwork:
        """The network in eval mode with the chosen weights (auxiliary head kept as trained)."""
        # Initialising the layers draws from torch's global RNG; a loaded model must not
        # change what the caller's next random draw is.
        with torch.random.fork_rng(devices=[]):
            net = self.build()
        _load_checked(net, self.weights(which), self.path)
        net.drop_path_prob = 0.0
        return net.to(device).eval()


# ----------------------------------------------------------------------------- writing


def save(path: str | os.PathLike, model: torch.nn.Module, genotype: Genotype,
         network: NetworkSpec, *, mean: tuple[float, ...], std: tuple[float, ...],
         classes: list[str] | tuple[str, ...], data: Mapping[str, Any] | None = None,
         evaluation: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
         best: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.pt`` atomically; ``best`` is ``{epoch, test_acc, state_dict}`` or None."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "genotype": genotype.to_json(),
        # auxiliary_bn only when set: files of the paper's protocol read as before.
        "network": network.model_dump(exclude=set() if network.auxiliary_bn
                                      else {"auxiliary_bn"}),
        "normalisation": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "classes": [str(c) for c in classes],
        "data": dict(data or {}),
        "evaluation": dict(evaluation or {}),
        "metrics": dict(metrics or {}),
        "state_dict": _plain(model.state_dict()),
        "best_test_epoch": None if best is None else {
            "epoch": int(best["epoch"]), "test_acc": float(best["test_acc"]),
            "state_dict": _plain(best["state_dict"])},
    }
    payload["sha256"] = _fingerprint(payload)
    checkpoint.save_atomic(payload, path)
    return Path(path)


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, detached: the same file whichever device or layout trained it."""
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


# ----------------------------------------------------------------------------- reading


def find(path_or_run_dir: str | os.PathLike) -> Path:
    """The ``model.pt`` a path names: the file itself, or the only one below a folder."""
    path = Path(path_or_run_dir).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelFileError(f"{path}: no such file or folder")
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    found = sorted(path.rglob(MODEL_FILE))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelFileError(f"{path}: no {MODEL_FILE} in it or below it (a retrain writes "
                             "one when its last epoch is done)")
    listed = ", ".join(str(p.relative_to(path)) for p in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    raise ModelFileError(f"{path}: holds {len(found)} {MODEL_FILE} files ({listed}{more}); "
                         "pass one of them")


def read(path_or_run_dir: str | os.PathLike) -> ModelFile:
    """Read and check a model file: plain data only, intact fingerprint, weights that fit.

    Raises :class:`ModelFileError` with a one-line message for anything else:
    not a torch file, pickled objects other than plain data, missing or
    malformed fields, contents edited after writing, weights of another network.
    """
    path = find(path_or_run_dir)
    raw = _load_plain(path)
    if not isinstance(raw, dict):
        raise ModelFileError(f"{path}: not a prnas model file (holds a "
                             f"{type(raw).__name__}, not a dict)")
    if raw.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a {FORMAT} file (format field is "
                             f"{raw.get('format')!r})")
    weights = {"state_dict": raw.get("state_dict")}
    best = raw.get("best_test_epoch")
    if best is not None:
        if not isinstance(best, dict):
            raise ModelFileError(f"{path}: best_test_epoch is not a mapping")
        weights["best_test_epoch.state_dict"] = best.get("state_dict")
    for name, state in weights.items():
        _check_tensors(state, name, path)
    header = {k: v for k, v in raw.items() if k != "state_dict"}
    if best is not None:
        header["best_test_epoch"] = {k: v for k, v in best.items() if k != "state_dict"}
    try:
        h = _Header.model_validate(header)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ModelFileError(f"{path}: field {field}: {first['msg']}") from None
    if _fingerprint(raw) != h.sha256:
        raise ModelFileError(f"{path}: contents do not match the file's sha256 fingerprint "
                             "(edited or corrupted after it was written); refusing to load it")
    try:
        genotype = Genotype.from_dict(json.loads(h.genotype))
    except (ValueError, TypeError) as err:
        raise ModelFileError(f"{path}: genotype: {err}") from None
    n_ch = h.network.in_channels
    for key in ("mean", "std"):
        values = h.normalisation.get(key)
        if values is None or len(values) != n_ch:
            raise ModelFileError(f"{path}: normalisation.{key} needs {n_ch} values "
                                 f"(one per input channel), got {values!r}")
    if len(h.classes) != h.network.num_classes:
        raise ModelFileError(f"{path}: {len(h.classes)} class names for "
                             f"{h.network.num_classes} classes")
    mf = ModelFile(
        path=path, genotype=genotype, network=h.network,
        mean=tuple(h.normalisation["mean"]), std=tuple(h.normalisation["std"]),
        classes=tuple(h.classes), data=h.data, evaluation=h.evaluation, metrics=h.metrics,
        state_dict=raw["state_dict"],
        best_state_dict=None if best is None else best["state_dict"],
        best_epoch=None if best is None else best.get("epoch"),
        best_test_acc=None if best is None else best.get("test_acc"))
    # Shapes against the genotype's network, once, without the cost of initialising it.
    with torch.device("meta"):
        reference = mf.build().state_dict()
    for name, state in weights.items():
        problem = _mismatch(reference, state)
        if problem:
            raise ModelFileError(f"{path}: {name} does not fit genotype {genotype.name!r} at "
                                 f"C={h.network.channels}, {h.network.layers} cells: {problem}")
    return mf


def load_model(path_or_run_dir: str | os.PathLike, device: str | torch.device = "cpu",
               weights: Weights = "final") -> EvalNetwork:
    """The trained evaluation network of a retrain, in eval mode, on ``device``.

    ``path_or_run_dir``: a ``model.pt``, a run folder of ``python -m prnas.retrain``
    or a Tune trial folder (or any folder with exactly one ``model.pt`` below it).
    ``weights``: ``final`` (the reported result) or ``best-test-epoch``.
    ``forward(x)`` returns ``(logits, None)`` in eval mode; the input must be
    normalised with the file's statistics (:func:`read` gives them, and
    ``prnas.evaluate.transform`` builds the whole preprocessing).
    """
    from prnas.runtime.device import pick_device

    return read(path_or_run_dir).network_for_inference(weights, pick_device(str(device)))


# ----------------------------------------------------------------------------- checks


def _load_plain(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any global it does not know before calling it.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling failed"
        raise ModelFileError(f"{path}: refused, the file holds more than plain data "
                             f"(tensors, numbers, strings, lists, dicts): {reason}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: not a readable torch file ({reason})") from None


def _check_tensors(state: Any, name: str, path: Path) -> None:
    if not isinstance(state, dict) or not state:
        raise ModelFileError(f"{path}: {name} missing or not a mapping of tensors")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ModelFileError(f"{path}: {name}[{k!r}] is a {type(v).__name__}, "
                                 "not a tensor")


def _mismatch(reference: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """'' when ``state`` has exactly the reference's keys, shapes and dtypes; else the first
    differences, in words."""
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    shapes = [f"{k} is {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the network"
              for k, v in reference.items() if k in state and state[k].shape != v.shape]
    dtypes = [f"{k} is {state[k].dtype}, expected {v.dtype}" for k, v in reference.items()
              if k in state and state[k].shape == v.shape and state[k].dtype != v.dtype]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        parts.append(f"{len(shapes)} of other shape (e.g. {shapes[0]})")
    if dtypes:
        parts.append(f"{len(dtypes)} of other dtype (e.g. {dtypes[0]})")
    return "; ".join(parts)


def _load_checked(net: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    problem = _mismatch(net.state_dict(), state)
    if problem:
        raise ModelFileError(f"{path}: weights do not fit the network: {problem}")
    net.load_state_dict(state, strict=True)


def _fingerprint(payload: Mapping[str, Any]) -> str:
    """sha256 over the metadata (canonical JSON) and every tensor's name, dtype, shape, bytes."""
    h = hashlib.sha256()
    header = {k: v for k, v in payload.items() if k not in ("sha256", "state_dict")}
    states = [("state_dict", payload.get("state_dict") or {})]
    best = header.get("best_test_epoch")
    if isinstance(best, dict):
        header["best_test_epoch"] = {k: v for k, v in best.items() if k != "state_dict"}
        states.append(("best_test_epoch.state_dict", best.get("state_dict") or {}))
    h.update(json.dumps(header, sort_keys=True, default=repr).encode())
    for name, state in states:
        for key in sorted(state):
            t = state[key]
            h.update(f"\n{name}.{key}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                     .tobytes())
    return h.hexdigest()
