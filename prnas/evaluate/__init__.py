"""Evaluating a ``model.pt``: its own test set, a CIFAR folder, any ImageFolder tree, or images.

Images are preprocessed as the retrain's test images were: converted to the
model's channel count, resized to its input size (CIFAR at 32x32 is not
resized), and normalised with the statistics stored in the file, never with
those of the data being evaluated. Batches run like the retrain's test pass
(same batch size, memory layout and autocast setting by default, no
shuffling), and accuracy is computed the same way, so the retrain's own test
set gives back the accuracy it logged, to the last digit on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets as tv_datasets

from prnas.data.cifar import LenientCIFAR10, LenientCIFAR100
from prnas.data.config import DataConfig
from prnas.data.datasets import test_dataset
from prnas.data.images import PathImages, check_images
from prnas.data.source import TransformedSubset
from prnas.data.transforms import build_transform
from prnas.model_file import ModelFile
from prnas.runtime.performance import PerformanceConfig, Resolved, autocast, resolve
from prnas.runtime.performance import to_memory_format as _to_format

__all__ = ["EvalResult", "EvaluationError", "dataset_for", "evaluate", "image_mode",
           "performance_for", "predict_images", "transform"]

_CIFAR_FOLDERS = {"cifar-10-batches-py": LenientCIFAR10, "cifar-100-python": LenientCIFAR100}


class EvaluationError(ValueError):
    """Data that cannot be evaluated with this model; the message says why, in one line."""


@dataclass(frozen=True)
class EvalResult:
    images: int
    correct: int
    top1: float  # %
    top5: float | None  # %, None with 5 classes or fewer
    loss: float  # mean cross-entropy

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_mode(mf: ModelFile) -> str:
    return "L" if mf.network.in_channels == 1 else "RGB"


def transform(mf: ModelFile, *, resize: bool = True) -> Callable[[Any], torch.Tensor]:
    """PIL image (or [0, 1] tensor) -> the normalised ``C x H x W`` tensor the model expects."""
    if mf.network.kind == "imagenet":  # resize 256 + centre crop 224, as it was tested
        from prnas.data.imagenet import eval_transform

        return eval_transform(mf.network.input_size, mf.mean, mf.std)
    return build_transform(mf.network.input_size, mf.mean, mf.std, resize=resize)


def _open(path: str, mode: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert(mode)


def _cifar_root(path: Path) -> tuple[Path, type] | None:
    for folder, cls in _CIFAR_FOLDERS.items():
        if (path / folder).is_dir():
            return path, cls
        if path.name == folder:
            return path.parent, cls
    return None


def dataset_for(mf: ModelFile, data: str | None) -> tuple[Dataset, str]:
    """(dataset, description): ``None`` is the retrain's own test part (as stored in the
    file); otherwise a CIFAR root (its test batch) or an ImageFolder tree (all images)."""
    if data is None:
        if not mf.data:
            raise EvaluationError(f"{mf.path} records no test data; pass --data-dir")
        cfg = DataConfig.model_validate({**_known(mf.data, DataConfig), "download": False})
        try:
            ds = test_dataset(cfg)
        except (FileNotFoundError, ValueError) as err:
            raise EvaluationError(f"the retrain's test data is not here ({err}); "
                                  "pass --data-dir DIR") from None
        return ds, f"the retrain's test part ({cfg.dataset}, {len(ds)} images)"
    path = Path(data).expanduser()
    if not path.is_dir():
        raise EvaluationError(f"--data-dir {path}: not a folder (expected a CIFAR root or an "
                              "ImageFolder tree with one subfolder of images per class)")
    cifar = _cifar_root(path)
    if cifar is not None:
        root, cls = cifar
        try:
            base = cls(str(root), train=False, download=False)
        except (OSError, RuntimeError) as err:
            raise EvaluationError(f"--data-dir {path}: unreadable CIFAR folder ({err})") from None
        _check_classes(mf, list(base.classes), path)
        size = mf.network.input_size
        ds = TransformedSubset(base, np.arange(len(base)), transform(mf, resize=size != 32))
        return ds, f"{cls.__name__.removeprefix('Lenient')} test set in {root} ({len(ds)} images)"
    try:
        folder = tv_datasets.ImageFolder(str(path), loader=lambda p: p)
    except FileNotFoundError as err:
        raise EvaluationError(f"--data-dir {path}: not a CIFAR root nor an ImageFolder tree "
                              f"({err})") from None
    index = _check_classes(mf, folder.classes, path)
    samples = [(p, index[folder.classes[t]]) for p, t in folder.samples]
    # Decoded once up front, so a broken file is one line naming it, not a traceback from
    # the middle of the evaluation.
    check_images([p for p, _ in samples], full=True, role=f"--data-dir {path}")
    files = PathImages(samples, image_mode(mf))  # (file, model class index) pairs
    return (TransformedSubset(files, np.arange(len(samples)), transform(mf)),
            f"image folder {path} ({len(samples)} images, {len(folder.classes)} classes)")


def _check_classes(mf: ModelFile, names: Sequence[str], path: Path) -> dict[str, int]:
    """Data class name -> the model's class index; every data class must be a model class."""
    index = {name: i for i, name in enumerate(mf.classes)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise EvaluationError(
            f"--data-dir {path}: classes {unknown[:5]} are not among the model's "
            f"{len(mf.classes)} classes ({', '.join(mf.classes[:10])}"
            f"{', ...' if len(mf.classes) > 10 else ''})")
    return index


def performance_for(mf: ModelFile, device: torch.device) -> Resolved:
    """The retrain's speed switches on ``device`` (layout and autocast change the numbers
    at float precision), without compilation."""
    stored = _known(mf.evaluation.get("performance") or {}, PerformanceConfig)
    stored["compile"] = False
    return resolve(PerformanceConfig.model_validate(stored), device)


def _known(stored: dict[str, Any], model: type) -> dict[str, Any]:
    """The stored fields this version of a config still has (files outlive config changes)."""
    return {k: v for k, v in stored.items() if k in model.model_fields}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, device: torch.device, perf: Resolved,
             batch_size: int, num_workers: int = 0) -> EvalResult:
    """Top-1 (and top-5) accuracy and mean loss, batched and computed as the retrain's test
    pass (``Retrainer.evaluate_topk``) does."""
    model.eval()
    model.to(device, memory_format=perf.memory_format)
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    total_loss, correct, correct5, seen = 0.0, 0, 0, 0
    k = 5 if _num_classes(model) > 5 else 0
    for x, y in loader:
        x = x.to(device)
        y = y.to(device)
        with autocast(device, perf):
            logits, _ = model(_to_format(x, perf))
        logits = logits.float()
        total_loss += float(criterion(logits, y)) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        if k:
            correct5 += int((logits.topk(k, dim=1).indices == y[:, None]).any(1).sum())
        seen += len(y)
    if seen == 0:
        raise EvaluationError("no images to evaluate")
    return EvalResult(images=seen, correct=correct, top1=100.0 * correct / seen,
                      top5=100.0 * correct5 / seen if k else None, loss=total_loss / seen)


def _num_classes(model: nn.Module) -> int:
    return int(model.classifier.out_features)


@torch.no_grad()
def predict_images(model: nn.Module, mf: ModelFile, files: Sequence[str | Path],
                   device: torch.device, perf: Resolved) -> list[tuple[str, str, float]]:
    """(file, predicted class name, its softmax probability) for each image file."""
    model.eval()
    model.to(device, memory_format=perf.memory_format)
    tf, mode = transform(mf), image_mode(mf)
    out = []
    for path in files:
        try:
            x = tf(_open(str(path), mode))
        except (OSError, ValueError) as err:
            raise EvaluationError(f"--images {path}: not a readable image ({err})") from None
        with autocast(device, perf):
            logits, _ = model(_to_format(x[None].to(device), perf))
        probs = torch.softmax(logits.float(), dim=1)[0]
        i = int(probs.argmax())
        out.append((str(path), mf.classes[i], float(probs[i])))
    return out
