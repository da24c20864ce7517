"""CIFAR-10/100 through torchvision, from the extracted python version (or downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torchvision import datasets as tv_datasets

from prnas.data.config import DATA_DIR_ENV, DataConfig, resolve_data_dir
from prnas.data.source import SUBSET, TEST_SUBSET, DatasetNotFoundError, Source, choose, register

CIFAR_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# The constants of the authors' code (``data.statistics: reference``): CIFAR-10's to more
# digits, CIFAR-100's different in the fourth decimal.
REFERENCE_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


class _LenientCifar:
    """Without download, accept CIFAR files that exist instead of checking md5 sums.

    torchvision checks every batch against the md5 of the official archive, which
    rejects a re-pickled copy and the generated folders tests use. Without
    download there is nothing torchvision could do about a mismatch anyway; a
    file that is really corrupt still fails when unpickled. With download the md5
    check stays, because it decides whether to fetch the archive.
    Module-level classes (not made in a function) so datasets pickle for workers.
    """

    def __init__(self, *args: Any, download: bool = False, **kwargs: Any) -> None:
        self._verify_md5 = download
        if not download:
            self.meta = {**self.meta, "md5": None}  # check_integrity(md5=None): file exists
        super().__init__(*args, download=download, **kwargs)

    def _check_integrity(self) -> bool:
        if self._verify_md5:
            return super()._check_integrity()
        return all(p.is_file() for p in _cifar_files(type(self), Path(self.root)))


class LenientCIFAR10(_LenientCifar, tv_datasets.CIFAR10):
    pass


class LenientCIFAR100(_LenientCifar, tv_datasets.CIFAR100):
    pass


_CIFAR_CLASSES = {"cifar10": LenientCIFAR10, "cifar100": LenientCIFAR100}
_CIFAR_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def _cifar_files(cls: type[tv_datasets.CIFAR10], root: Path) -> list[Path]:
    names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [root / cls.base_folder / n for n in names]


def _missing_cifar_message(name: str, root: Path, missing: list[Path]) -> str:
    cls = _CIFAR_CLASSES[name]
    folder = root / cls.base_folder
    lacking = f" (missing: {', '.join(p.name for p in missing)})" if missing else ""
    return (
        f"{_CIFAR_LABELS[name]} not found: expected the extracted python version in {folder}"
        f"{lacking}. To get it: set download=True "
        f"(`--download`) where internet is available; or download {cls.url}, extract it "
        f"into {root} so that {cls.base_folder}/ lies there; or point data_dir or "
        f"${DATA_DIR_ENV} at a folder that contains {cls.base_folder}/."
    )


def _cifar_part(cfg: DataConfig, root: Path, *, train: bool) -> tv_datasets.CIFAR10:
    name = cfg.dataset
    if not cfg.download:
        missing = [p for p in _cifar_files(_CIFAR_CLASSES[name], root) if not p.is_file()]
        if missing:
            raise DatasetNotFoundError(_missing_cifar_message(name, root, missing))
    try:
        return _CIFAR_CLASSES[name](str(root), train=train, download=cfg.download)
    except OSError as err:  # download failed: offline, unwritable root, ...
        raise DatasetNotFoundError(
            f"{_missing_cifar_message(name, root, [])} (download failed: {err})"
        ) from err


@register("cifar10", "cifar100")
def cifar_source(cfg: DataConfig) -> Source:
    root = resolve_data_dir(cfg)
    train_base = _cifar_part(cfg, root, train=True)
    test_base = _cifar_part(cfg, root, train=False)
    train_idx = choose(np.arange(len(train_base)), cfg.subset, cfg.split_seed, SUBSET)
    test_idx = choose(np.arange(len(test_base)), cfg.test_subset, cfg.split_seed, TEST_SUBSET)
    mean, std = (REFERENCE_STATS if cfg.statistics == "reference" else CIFAR_STATS)[cfg.dataset]
    size = cfg.resolved_input_size
    return Source(
        name=cfg.dataset, train_base=train_base, train_indices=train_idx, test_base=test_base,
        test_indices=test_idx, num_classes=len(train_base.classes), in_channels=3,
        input_size=size, mean=mean, std=std, resize=size != 32, flip=True)
