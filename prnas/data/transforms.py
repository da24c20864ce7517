"""Per-image transforms: the paper's augmentation, normalisation and Cutout.

Every pipeline ends in a normalised CxHxW float32 tensor whatever the source
(PIL image for CIFAR and image folders, a [0, 1] tensor for the demo digits),
so search, retrain and evaluation code never special-case a dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms as T


class Cutout:
    """Zero one ``length`` x ``length`` square (clipped at the borders) at a random centre.

    Applied after normalisation, as in the DARTS retrain code, so the square is
    the dataset mean rather than black. Draws from torch's global RNG so a run is
    reproducible under ``torch.manual_seed`` (DataLoader workers get their own
    seeded stream from torch as well).
    """

    def __init__(self, length: int) -> None:
        if length < 0:
            raise ValueError(f"Cutout length must be >= 0, got {length}")
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.length == 0:
            return img
        h, w = img.shape[-2:]
        cy = int(torch.randint(h, ()).item())
        cx = int(torch.randint(w, ()).item())
        y0, x0 = cy - self.length // 2, cx - self.length // 2
        out = img.clone()
        out[..., max(0, y0) : max(0, y0 + self.length), max(0, x0) : max(0, x0 + self.length)] = 0
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


def to_tensor(img: Image.Image | torch.Tensor) -> torch.Tensor:
    """PIL images become [0, 1] tensors; tensors (the cached demo digits) pass through."""
    if isinstance(img, torch.Tensor):
        return img
    return T.functional.to_tensor(img)


def crop_padding(input_size: int) -> int:
    """The paper's 4 px padding at 32 px, scaled to the input size."""
    return max(1, input_size // 8)


def build_transform(
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    resize: bool,
    crop: bool = False,
    flip: bool = False,
    cutout: int = 0,
    normalise: bool = True,
) -> Callable[[Image.Image | torch.Tensor], torch.Tensor]:
    """Resize -> tensor -> (crop, flip) -> normalise -> (cutout).

    Crop and flip act on the unnormalised image so the crop padding is black, as
    in the paper's torchvision pipeline.
    """
    steps: list[Callable] = []
    if resize:
        # A square target keeps the whole picture; batches need one size.
        steps.append(T.Resize((input_size, input_size), antialias=True))
    steps.append(to_tensor)
    if crop:
        steps.append(T.RandomCrop(input_size, padding=crop_padding(input_size)))
    if flip:
        steps.append(T.RandomHorizontalFlip())
    if normalise:
        steps.append(T.Normalize(tuple(mean), tuple(std)))
    if cutout:
        steps.append(Cutout(cutout))
    return T.Compose(steps)
