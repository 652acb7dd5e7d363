"""PyTorch datasets over a SIIM-layout folder: images from the preprocessing cache, masks from RLE."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from pneumoseg.data.cache import ImageCache
from pneumoseg.data.labels import ImageLabel, LabelSet, label_mask
from pneumoseg.data.preprocess import IMAGENET, Normalisation, resize_mask, to_model_input
from pneumoseg.errors import PneumosegError


@dataclass(frozen=True)
class Sample:
    image_id: str
    path: Path
    label: ImageLabel

    @property
    def positive(self) -> bool:
        return self.label.positive


def match_samples(index: dict[str, Path], labels: LabelSet, image_ids: list[str]) -> list[Sample]:
    """Pair each requested ImageId with its file and label; a missing image is an error."""
    missing = [i for i in image_ids if i not in index]
    if missing:
        raise PneumosegError(
            f"{len(missing)} labelled images of the split are not in the image folder (e.g. {missing[0]}); "
            "run `pneumoseg check-data`"
        )
    return [Sample(i, index[i], labels.images[i]) for i in image_ids]


class XrayDataset(Dataset):
    """Yields ``{"image": (3,S,S) float, "mask": (1,S,S) float, "label": float, "index": int}``.

    Augmentation is seeded from (seed, epoch, index), so an epoch is reproduced exactly after a
    resume; call :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, samples: list[Sample], cache: ImageCache, transform: A.Compose | None = None,
                 *, with_mask: bool = True, seed: int = 0, normalisation: Normalisation = IMAGENET):
        self.samples = samples
        self.normalisation = normalisation
        self.cache = cache
        self.transform = transform
        self.with_mask = with_mask
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _mask(self, sample: Sample, source_shape: tuple[int, int]) -> np.ndarray:
        if not sample.positive:
            return np.zeros((self.cache.size, self.cache.size), dtype=np.uint8)
        return resize_mask(label_mask(sample.label, source_shape), (self.cache.size, self.cache.size)).astype(np.uint8)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        sample = self.samples[index]
        image, source_shape = self.cache.load(sample.path)
        mask = self._mask(sample, source_shape) if self.with_mask else None
        if self.transform is not None:
            self.transform.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]))
            out = self.transform(image=image, mask=mask) if mask is not None else self.transform(image=image)
            image, mask = out["image"], out.get("mask")
        item: dict[str, torch.Tensor | int] = {
            "image": to_model_input(image, self.normalisation),
            "label": torch.tensor([float(sample.positive)]),
            "index": index,
        }
        if mask is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask)).float().unsqueeze(0)
        return item
