"""Datasets for search (weights/alphas halves) and retrain (train/test), chosen by config.

CIFAR-10/100 through torchvision, scikit-learn's bundled digits as an offline
demo, and any class-folder tree of images; every one yields normalised CxHxW
float32 tensors and int labels, so nothing downstream special-cases a dataset.
Each source is a module that registers itself in ``prnas.data.source.REGISTRY``;
importing it here is what registers it.
"""

from prnas.data import cifar, demo, imagefolder, imagenet  # noqa: F401  (registers them)
from prnas.data.cifar import CIFAR_STATS
from prnas.data.config import DataConfig, resolve_data_dir
from prnas.data.datasets import retrain_datasets, search_datasets, test_dataset
from prnas.data.images import CorruptImageError
from prnas.data.source import DataInfo, DatasetNotFoundError, TransformedSubset
from prnas.data.transforms import Cutout

__all__ = ["CIFAR_STATS", "CorruptImageError", "Cutout", "DataConfig", "DataInfo",
           "DatasetNotFoundError", "TransformedSubset", "resolve_data_dir", "retrain_datasets",
           "search_datasets", "test_dataset"]
