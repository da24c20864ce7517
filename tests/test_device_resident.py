"""Device-resident data: the batch augmentation against torchvision's per-image one, exact
resume with the path forced on (on CPU), and the two loading decisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_folders import write_cifar_folder, write_image_folder
from PIL import Image
from scipy.stats import chi2_contingency
from tiny import tiny_search
from torchvision.transforms import functional as F

from prnas.data import (
    DataConfig,
    retrain_datasets,
    search_datasets,
)
from prnas.data.device_resident import (
    Augmentation,
    augment_batch,
    device_dataset,
    read_augmentation,
)
from prnas.data.loading import resolve_num_workers, use_device_resident
from prnas.data.transforms import build_transform
from prnas.presets import load_genotype
from prnas.retrain import Retrainer
from prnas.retrain import build_config as retrain_config
from prnas.runtime import checkpoint
from prnas.search.config import build_config as search_config
from prnas.search.engine import Search

N = 2000
CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def _coordinate_image() -> np.ndarray:
    """32x32 RGB: R = row + 1, G = column + 1, so any crop shows where it came from."""
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[:, :, 0] = np.arange(1, 33)[:, None]
    img[:, :, 1] = np.arange(1, 33)[None, :]
    return img


def _offsets(out: torch.Tensor) -> tuple[int, int, int]:
    """(dy, dx, flipped) of one cropped/flipped coordinate image (values in 0..1)."""
    v = (out * 255).round().long()
    flipped = int(v[1, 16, 17] - v[1, 16, 16] < 0)
    dy = int(v[0, 16, 16]) - 13
    dx = int(v[1, 16, 16]) - (12 if flipped else 13)
    return dy, dx, flipped


def _same_distribution(a: list[int], b: list[int]) -> float:
    cats = sorted(set(a) | set(b))
    table = [[a.count(c) for c in cats], [b.count(c) for c in cats]]
    return chi2_contingency(table).pvalue


def test_crop_and_flip_match_torchvision_in_distribution_and_pixels():
    img = _coordinate_image()
    torch.manual_seed(0)
    tv = build_transform(32, (0, 0, 0), (1, 1, 1), resize=False, crop=True, flip=True)
    ref = [_offsets(tv(Image.fromarray(img))) for _ in range(N)]
    parsed = read_augmentation(tv)
    assert parsed is not None
    _, aug = parsed
    assert aug == Augmentation(padding=4, flip=True, mean=(0.0,) * 3, std=(1.0,) * 3, cutout=0)
    batch = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).repeat(N, 1, 1, 1)
    out = augment_batch(batch, aug, torch.Generator().manual_seed(1))
    dev = [_offsets(o) for o in out]
    for k in range(3):
        a, b = [r[k] for r in ref], [d[k] for d in dev]
        assert set(a) == set(b) == (set(range(9)) if k < 2 else {0, 1})
        assert _same_distribution(a, b) > 1e-3, f"component {k} differs"
    assert abs(np.mean([d[2] for d in dev]) - 0.5) < 0.03
    # Every pixel, not only the probe: the crop of the zero-padded image, then the flip.
    padded = F.pad(torch.from_numpy(img).permute(2, 0, 1).float() / 255, [4])
    for o, (dy, dx, flipped) in zip(out[:50], dev[:50]):
        want = F.crop(padded, dy, dx, 32, 32)
        assert torch.equal(o, F.hflip(want) if flipped else want)


def _box(out: torch.Tensor) -> tuple[int, int, int]:
    """(centre row, centre column, area) of the zeroed square in an all-ones image."""
    zero = out[0] == 0
    rows, cols = torch.where(zero.any(1))[0], torch.where(zero.any(0))[0]
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    cy = y1 - 8 if y1 < 32 else y0 + 8
    cx = x1 - 8 if x1 < 32 else x0 + 8
    return cy, cx, int(zero.sum())


@pytest.mark.slow
def test_cutout_matches_the_per_image_cutout_in_distribution():
    ones = np.full((32, 32, 3), 255, dtype=np.uint8)
    torch.manual_seed(0)
    tv = build_transform(32, (0, 0, 0), (1, 1, 1), resize=False, cutout=16)
    ref = [_box(tv(Image.fromarray(ones))) for _ in range(N)]
    _, aug = read_augmentation(tv)
    assert aug.cutout == 16 and aug.padding == 0 and not aug.flip
    batch = torch.from_numpy(ones).permute(2, 0, 1).unsqueeze(0).repeat(N, 1, 1, 1)
    out = augment_batch(batch, aug, torch.Generator().manual_seed(1))
    assert set(out.unique().tolist()) == {0.0, 1.0}
    dev = [_box(o) for o in out]
    for k in range(2):  # centre uniform over 0..31 in both axes
        a, b = [r[k] for r in ref], [d[k] for d in dev]
        assert set(a) == set(b) == set(range(32))
        assert _same_distribution(a, b) > 1e-3
    ref_area, dev_area = np.mean([r[2] for r in ref]), np.mean([d[2] for d in dev])
    assert abs(ref_area - dev_area) < 0.03 * ref_area
    assert max(d[2] for d in dev) == 256 and min(d[2] for d in dev) == 64  # 8x8 in a corner


def test_device_dataset_copies_cifar_as_uint8_and_normalises_like_torchvision(tmp_path):
    root = write_cifar_folder(tmp_path, n_train=40, n_test=12)
    cfg = DataConfig(dataset="cifar10", data_dir=str(root))
    train, test, _ = retrain_datasets(cfg, cutout=16)
    dev_test = device_dataset(test, CPU)
    assert dev_test.images.dtype == torch.uint8 and not dev_test.train
    x, y = dev_test.batch(list(range(len(test))), None)
    want = torch.stack([test[i][0] for i in range(len(test))])
    assert torch.allclose(x, want, atol=1e-6)
    assert y.tolist() == [test[i][1] for i in range(len(test))]
    dev_train = device_dataset(train, CPU)
    assert dev_train.train and dev_train.aug.cutout == 16 and dev_train.aug.flip
    g = torch.Generator().manual_seed(0)
    a, _ = dev_train.batch([0, 1, 2], g)
    b, _ = dev_train.batch([0, 1, 2], g)
    assert not torch.equal(a, b)  # fresh draws per batch
    # The demo digits (float, never flipped) take the same path.
    w, _a, _ = search_datasets(DataConfig(dataset="demo", subset=40))
    dw = device_dataset(w, CPU)
    assert dw.images.dtype == torch.float32 and dw.aug.padding == 2 and not dw.aug.flip


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_resized_image_folder_is_read_once_and_normalised_like_torchvision(tmp_path, mode):
    root = write_image_folder(tmp_path / "imgs", num_classes=2, per_class=6, size=20, mode=mode)
    cfg = DataConfig(dataset="imagefolder", train_dir=str(root), input_size=16)
    train, test, info = retrain_datasets(cfg, cutout=4)
    dev = device_dataset(test, CPU)
    assert dev.images.dtype == torch.uint8 and dev.images.shape[1:] == (info.in_channels, 16, 16)
    x, y = dev.batch(list(range(len(test))), None)
    assert torch.allclose(x, torch.stack([test[i][0] for i in range(len(test))]), atol=1e-5)
    assert y.tolist() == [test[i][1] for i in range(len(test))]
    aug = device_dataset(train, CPU).aug
    assert (aug.padding, aug.flip, aug.cutout) == (2, True, 4)


SEARCH = tiny_search(
    seed=5, num_threads=1, data={"device_resident": True},
    schedule=[{"epochs": 2, "grace_epochs": 1, "morphs": 2, "candidates": 4},
              {"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 1}])


def _summary(s: Search):
    return ([(m.pools, m.alphas, m["train_loss"]) for m in s.cycle_log],
            s.genotype.to_dict())


@pytest.mark.slow
def test_search_on_device_resident_data_resumes_exactly(tmp_path):
    ref = Search(search_config(SEARCH), log=None)
    assert ref.data_on_device and ref.num_workers == 0
    ref.run()

    class Killed(Exception):
        pass

    def save_then_die(search, _m):
        checkpoint.save_atomic(search.state_dict(), tmp_path / "s.pt")
        raise Killed

    s = Search(search_config(SEARCH), log=None)
    with pytest.raises(Killed):
        s.run(on_epoch=save_then_die)
    torch.manual_seed(99)  # whatever ran in between must not matter
    resumed = Search(search_config(SEARCH), log=None)
    resumed.load_state_dict(checkpoint.load(tmp_path / "s.pt"))
    assert (resumed.cycle, resumed.epoch) == (0, 1)
    resumed.run()
    assert _summary(resumed) == _summary(ref)
    off = Search(search_config(SEARCH, {"data.device_resident": False}), log=None)
    assert not off.data_on_device
    off.run()
    assert _summary(off) != _summary(ref)  # the comparison above can fail


@pytest.mark.slow
def test_retrain_on_device_resident_cifar_resumes_exactly(tmp_path):
    root = write_cifar_folder(tmp_path / "c", n_train=48, n_test=16)
    cfg = retrain_config(overrides={
        "network.channels": 4, "network.layers": 3, "device": "cpu", "epochs": 3, "batch.b_min": 16,
        "batch.b_max": 16, "eval_batch_size": 16, "data.data_dir": str(root),
        "data.device_resident": True})

    def trainer():
        t = Retrainer(cfg, load_genotype("darts-v2"))
        t.setup()
        assert t.run.data_on_device
        return t

    straight = trainer()
    rows = [straight.train_epoch() for _ in range(3)]
    first = trainer()
    first.train_epoch()
    first.save(tmp_path / "r.pt")
    torch.manual_seed(7)
    resumed = trainer()
    resumed.restore(tmp_path / "r.pt")
    again = [resumed.train_epoch() for _ in range(2)]

    def strip(rs):
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rs]

    assert strip(again) == strip(rows[1:])
    assert len({r["train_loss"] for r in rows}) == 3


def test_loading_decisions():
    assert resolve_num_workers(3, CUDA) == 3 and resolve_num_workers(0, CPU) == 0
    assert resolve_num_workers("auto", CPU, cpus=16) == 0
    assert resolve_num_workers("auto", CUDA, resident=True, cpus=16) == 0
    assert resolve_num_workers("auto", CUDA, cpus=16) == 8
    assert resolve_num_workers("auto", CUDA, cpus=4) == 3
    assert resolve_num_workers("auto", CUDA, cpus=1) == 0
    gib = 2**30
    assert use_device_resident("auto", CUDA, 150 * 2**20, 16 * gib)
    assert not use_device_resident("auto", CUDA, 5 * gib, 16 * gib)  # over a quarter
    assert not use_device_resident("auto", CPU, 2**20, None)
    assert not use_device_resident("auto", CUDA, None, 16 * gib)  # unsupported dataset
    assert not use_device_resident(False, CUDA, 2**20, 16 * gib)
    assert use_device_resident(True, CPU, 2**20, None)
    with pytest.raises(ValueError, match="device_resident"):
        use_device_resident(True, CPU, None, None)
    assert DataConfig().num_workers == "auto" and DataConfig().device_resident == "auto"
    with pytest.raises(ValueError, match="num_workers"):
        DataConfig(num_workers=-1)
