"""Datasets for search (weights/alphas halves) and retrain (train/test), chosen by config.

CIFAR-10/100 through torchvision, scikit-learn's bundled digits as an offline
demo, and any class-folder tree of images; every one yields normalised CxHxW
float32 tensors and int labels, so nothing downstream special-cases a dataset.
"""

from prnas.data.config import DataConfig, resolve_data_dir
from prnas.data.datasets import (
    CIFAR_STATS,
    DataInfo,
    DatasetNotFoundError,
    TransformedSubset,
    retrain_datasets,
    search_datasets,
    test_dataset,
)
from prnas.data.testing import write_cifar_folder, write_image_folder
from prnas.data.transforms import Cutout

__all__ = [
    "CIFAR_STATS",
    "Cutout",
    "DataConfig",
    "DataInfo",
    "DatasetNotFoundError",
    "TransformedSubset",
    "resolve_data_dir",
    "retrain_datasets",
    "search_datasets",
    "test_dataset",
    "write_cifar_folder",
    "write_image_folder",
]
