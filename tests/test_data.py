"""Datasets for search and retrain, exercised through torchvision's real loaders."""

from __future__ import annotations

import ast
import graphlib
import pickle
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from data_folders import write_cifar_folder, write_image_folder
from PIL import Image
from pydantic import ValidationError
from torch.utils.data import DataLoader
from torchvision import transforms as T

from prnas.data import (
    CIFAR_STATS,
    Cutout,
    DataConfig,
    DatasetNotFoundError,
    resolve_data_dir,
    retrain_datasets,
    search_datasets,
    test_dataset,
)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_folder(root, num_classes=10, n_train=100, n_test=20, seed=0)
    write_cifar_folder(root, num_classes=100, n_train=200, n_test=30, seed=1)
    return root


def _stack(ds) -> tuple[torch.Tensor, list[int]]:
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), [y for _, y in items]


# ---------------------------------------------------------------- CIFAR


def test_cifar10_search_halves_are_a_seeded_disjoint_split(cifar_root: Path) -> None:
    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar_root))
    weights, alphas, info = search_datasets(cfg)
    assert (info.name, info.num_classes, info.in_channels, info.input_size) == (
        "cifar10",
        10,
        3,
        32,
    )
    assert (info.train_size, info.test_size) == (100, 20)
    assert (info.mean, info.std) == CIFAR_STATS["cifar10"]
    assert len(weights) == len(alphas) == 50
    w_idx, a_idx = set(weights.indices.tolist()), set(alphas.indices.tolist())
    assert not w_idx & a_idx
    assert w_idx | a_idx == set(range(100))
    x, y = weights[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert isinstance(y, int) and 0 <= y < 10

    again_w, again_a, _ = search_datasets(cfg)
    assert np.array_equal(again_w.indices, weights.indices)
    assert np.array_equal(again_a.indices, alphas.indices)
    other_w, _, _ = search_datasets(cfg.model_copy(update={"split_seed": 1}))
    assert set(other_w.indices.tolist()) != w_idx


def test_cifar10_test_part_is_the_raw_pickle_normalised(cifar_root: Path) -> None:
    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar_root))
    test = test_dataset(cfg)
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    raw = torch.as_tensor(batch["data"][3].reshape(3, 32, 32), dtype=torch.float32) / 255
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in CIFAR_STATS["cifar10"])
    x, y = test[3]
    assert y == batch["labels"][3]
    torch.testing.assert_close(x, (raw - mean) / std)
    assert torch.equal(test[3][0], x)  # no augmentation at test time


def test_cifar100_loads_with_fine_labels(cifar_root: Path) -> None:
    cfg = DataConfig(dataset="cifar100", data_dir=str(cifar_root), input_size=16)
    train, test, info = retrain_datasets(cfg, cutout=0)
    assert (info.num_classes, info.train_size, info.test_size) == (100, 200, 30)
    assert (len(train), len(test)) == (200, 30)
    xs, ys = _stack(test)
    assert xs.shape == (30, 3, 16, 16)
    assert all(0 <= y < 100 for y in ys) and len(set(ys)) > 10


def test_subset_applies_before_the_split(cifar_root: Path) -> None:
    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar_root), subset=30, test_subset=7)
    weights, alphas, info = search_datasets(cfg)
    assert (info.train_size, info.test_size) == (30, 7)
    assert len(weights) == len(alphas) == 15
    assert not set(weights.indices.tolist()) & set(alphas.indices.tolist())
    assert len(test_dataset(cfg)) == 7
    # More than exists means all of it.
    _, _, info = search_datasets(cfg.model_copy(update={"subset": 10_000}))
    assert info.train_size == 100


def test_retrain_cutout_zeroes_a_square_and_can_be_switched_off(cifar_root: Path) -> None:
    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar_root), augment=False)
    plain, test, _ = retrain_datasets(cfg, cutout=0)
    cut, _, _ = retrain_datasets(cfg, cutout=16)
    torch.manual_seed(0)
    x_plain, x_cut = plain[5][0], cut[5][0]
    assert torch.equal(plain[5][0], x_plain)  # augment=False, cutout=0: deterministic
    zeroed = (x_cut == 0).all(dim=0)
    assert zeroed.sum() >= 8 * 8  # at least a quarter of the 16x16 square lies inside
    torch.testing.assert_close(x_cut[:, ~zeroed], x_plain[:, ~zeroed])


def test_training_augmentation_is_random_and_batches_collate(cifar_root: Path) -> None:
    weights, _, _ = search_datasets(DataConfig(dataset="cifar10", data_dir=str(cifar_root)))
    torch.manual_seed(0)
    views = [weights[0][0] for _ in range(8)]
    assert any(not torch.equal(views[0], v) for v in views[1:])
    x, y = next(iter(DataLoader(weights, batch_size=16)))
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.int64
    clone = pickle.loads(pickle.dumps(weights))  # DataLoader workers and Ray pickle datasets
    assert np.array_equal(clone.indices, weights.indices)


def test_missing_cifar_names_path_subfolder_and_remedies(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="cifar10", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as err:
        search_datasets(cfg)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "download=True" in msg and "PRNAS_DATA_DIR" in msg
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        test_dataset(cfg.model_copy(update={"dataset": "cifar100"}))


def test_partial_cifar_folder_names_the_missing_files(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path, n_train=10, n_test=5)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing: data_batch_3"):
        search_datasets(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_data_dir_falls_back_to_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRNAS_DATA_DIR", raising=False)
    assert resolve_data_dir(DataConfig()) == tmp_path.resolve() / "data"
    monkeypatch.setenv("PRNAS_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(DataConfig()) == tmp_path.resolve() / "env"
    assert resolve_data_dir(DataConfig(data_dir="mine")) == tmp_path.resolve() / "mine"
    pinned = DataConfig(dataset="imagefolder", train_dir="imgs").with_absolute_paths()
    assert pinned.data_dir == str(tmp_path.resolve() / "env")
    assert pinned.train_dir == str(tmp_path.resolve() / "imgs")


# ---------------------------------------------------------------- demo digits


def test_demo_digits_shapes_holdout_and_train_normalisation() -> None:
    cfg = DataConfig(dataset="demo", augment=False)
    train, test, info = retrain_datasets(cfg, cutout=0)
    assert (info.num_classes, info.in_channels, info.input_size) == (10, 1, 16)
    assert info.train_size + info.test_size == 1797
    assert info.test_size == round(1797 * 0.2)
    assert not set(train.indices.tolist()) & set(test.indices.tolist())
    xs, ys = _stack(train)
    assert xs.shape == (info.train_size, 1, 16, 16)
    assert sorted(set(ys)) == list(range(10))
    assert abs(xs.mean().item()) < 1e-4
    assert abs(xs.std(unbiased=False).item() - 1.0) < 1e-4

    again = test_dataset(cfg)
    assert np.array_equal(again.indices, test.indices)
    other = test_dataset(cfg.model_copy(update={"split_seed": 3}))
    assert not np.array_equal(other.indices, test.indices)


def test_demo_crops_but_never_flips_digits() -> None:
    weights, alphas, info = search_datasets(DataConfig(dataset="demo", input_size=8))
    assert weights[0][0].shape == (1, 8, 8)
    assert len(weights) + len(alphas) == info.train_size
    steps = [type(t) for t in weights.transform.transforms]
    assert T.RandomCrop in steps and T.RandomHorizontalFlip not in steps


# ---------------------------------------------------------------- image folders


@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("L", 1)])
def test_imagefolder_holdout(tmp_path: Path, mode: str, channels: int) -> None:
    root = write_image_folder(tmp_path / "imgs", num_classes=3, per_class=10, size=20, mode=mode)
    cfg = DataConfig(dataset="imagefolder", train_dir=str(root), augment=False, input_size=24)
    train, test, info = retrain_datasets(cfg, cutout=0)
    assert (info.num_classes, info.in_channels, info.input_size) == (3, channels, 24)
    assert (info.train_size, info.test_size) == (24, 6)
    assert not set(train.indices.tolist()) & set(test.indices.tolist())
    xs, ys = _stack(train)
    assert xs.shape == (24, channels, 24, 24)
    assert set(ys) <= {0, 1, 2}
    torch.testing.assert_close(xs.mean(dim=(0, 2, 3)), torch.zeros(channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        xs.std(dim=(0, 2, 3), unbiased=False), torch.ones(channels), atol=1e-4, rtol=0
    )
    assert np.array_equal(test_dataset(cfg).indices, test.indices)
    moved = test_dataset(cfg.model_copy(update={"split_seed": 5}))
    assert not np.array_equal(moved.indices, test.indices)


def test_imagefolder_with_separate_test_tree(tmp_path: Path) -> None:
    train_root = write_image_folder(tmp_path / "train", per_class=6, mode="RGB", seed=0)
    test_root = write_image_folder(tmp_path / "test", per_class=2, mode="RGB", seed=1)
    cfg = DataConfig(dataset="imagefolder", train_dir=str(train_root), test_dir=str(test_root))
    weights, alphas, info = search_datasets(cfg)
    assert (info.train_size, info.test_size) == (18, 6)
    assert len(weights) == len(alphas) == 9
    xs, ys = _stack(test_dataset(cfg))
    assert xs.shape == (6, 3, 32, 32)
    assert sorted(ys) == [0, 0, 1, 1, 2, 2]


def test_imagefolder_converts_stray_images_to_the_majority_mode(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs", per_class=4, mode="L")
    Image.new("RGB", (30, 10), (200, 10, 10)).save(root / "class_1" / "9999.png")
    cfg = DataConfig(dataset="imagefolder", train_dir=str(root), holdout_fraction=0.5)
    train, test, info = retrain_datasets(cfg)
    assert info.in_channels == 1
    shapes = {x.shape for x, _ in (train[i] for i in range(len(train)))}
    shapes |= {x.shape for x, _ in (test[i] for i in range(len(test)))}
    assert shapes == {(1, 32, 32)}


def test_imagefolder_errors_name_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(DatasetNotFoundError, match=str(missing)):
        search_datasets(DataConfig(dataset="imagefolder", train_dir=str(missing)))
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetNotFoundError, match="class-folder tree"):
        search_datasets(DataConfig(dataset="imagefolder", train_dir=str(tmp_path / "flat")))
    train_root = write_image_folder(tmp_path / "train", num_classes=3, per_class=2)
    test_root = write_image_folder(tmp_path / "test", num_classes=2, per_class=2)
    cfg = DataConfig(dataset="imagefolder", train_dir=str(train_root), test_dir=str(test_root))
    with pytest.raises(ValueError, match="class_2"):
        test_dataset(cfg)


# ---------------------------------------------------------------- Cutout


def test_cutout_zeroes_one_clipped_square_reproducibly() -> None:
    img = torch.ones(3, 20, 20)
    inside = clipped = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out = Cutout(6)(img)
        torch.manual_seed(seed)
        assert torch.equal(Cutout(6)(img), out)
        zero = out == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
        rows = zero[0].any(dim=1).nonzero().flatten()
        cols = zero[0].any(dim=0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert rows.max() - rows.min() + 1 == h and cols.max() - cols.min() + 1 == w
        assert zero[0].sum() == h * w  # a filled rectangle
        touches = rows.min() == 0 or cols.min() == 0 or rows.max() == 19 or cols.max() == 19
        if (h, w) == (6, 6):
            inside += 1
        else:
            assert touches and h <= 6 and w <= 6
            clipped += 1
    assert inside and clipped
    assert torch.equal(img, torch.ones(3, 20, 20))  # input untouched


def test_cutout_odd_length_and_off() -> None:
    torch.manual_seed(0)
    img = torch.ones(1, 64, 64)
    sizes = set()
    for _ in range(20):
        sizes.add(int((Cutout(5)(img) == 0).sum()))
    assert 25 in sizes and max(sizes) == 25
    assert torch.equal(Cutout(0)(img), img)
    with pytest.raises(ValueError):
        Cutout(-1)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"datset": "cifar10"}, "datset"),
        ({"holdout_fraction": 1.5}, "holdout_fraction"),
        ({"holdout_fraction": 0.0}, "holdout_fraction"),
        ({"dataset": "mnist"}, "dataset"),
        ({"subset": 1}, "subset"),
        ({"input_size": 2}, "input_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"dataset": "imagefolder"}, "train_dir"),
        ({"dataset": "cifar10", "train_dir": "x"}, "train_dir"),
    ],
)
def test_config_rejects_bad_fields_by_name(fields: dict, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        DataConfig(**fields)


def test_config_lists_allowed_datasets_and_is_frozen() -> None:
    allowed = "'cifar10', 'cifar100', 'demo', 'imagefolder' or 'imagenet'"
    with pytest.raises(ValidationError, match=allowed):
        DataConfig(dataset="mnist")
    cfg = DataConfig()
    with pytest.raises(ValidationError):
        cfg.subset = 3  # type: ignore[misc]
    assert (cfg.resolved_input_size, DataConfig(dataset="demo").resolved_input_size) == (32, 16)


def test_every_allowed_dataset_has_a_registered_source() -> None:
    from prnas.data.source import REGISTRY

    assert set(REGISTRY) == set(get_args(DataConfig.model_fields["dataset"].annotation))



_ROOT = Path(__file__).resolve().parents[1]
_DATA = _ROOT / "prnas" / "data"
_SOURCES = sorted(p for d in ("prnas", "analysis", "tune_jobs") for p in (_ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", _SOURCES, ids=lambda p: str(p.relative_to(_ROOT)))
def test_no_module_imports_a_private_name_of_another(path: Path) -> None:
    """A name another module needs is public where it is defined (the data sources once
    shared six private names, and made the tree's only import loop)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("prnas", "analysis")):
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"{path.name} imports {private} from {node.module}"


def test_data_modules_import_no_loop() -> None:
    """The package imports every source module; none of them may import it back."""
    graph: dict[str, set[str]] = {}
    for path in _DATA.glob("*.py"):
        deps = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "prnas.data":
                modules = [f"prnas.data.{a.name}" if (_DATA / f"{a.name}.py").exists()
                           else "prnas.data.__init__" for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            deps.update(m.split(".")[2] for m in modules if m.startswith("prnas.data."))
    graphlib.TopologicalSorter(graph).prepare()  # raises graphlib.CycleError on a loop
