"""Training augmentation (albumentations), the talk's recipe: each transform fires with p=0.5."""

from __future__ import annotations

import albumentations as A
import cv2

from pneumoseg.config import AugmentConfig


def build_train_transform(cfg: AugmentConfig) -> A.Compose | None:
    """Zoom in/out, CLAHE, horizontal flip and brightness/contrast on uint8 image + mask, then
    (segmenter only) a random ``crop`` × ``crop`` window that holds some of the mask when the
    image has one: the network sees the full input resolution at a fraction of the cost.

    Returns ``None`` when every transform is switched off (``p == 0`` and no crop).
    """
    transforms: list[A.BasicTransform] = [] if cfg.p <= 0 else _photometric_and_geometric(cfg)
    if cfg.crop:
        transforms.append(A.CropNonEmptyMaskIfExists(height=cfg.crop, width=cfg.crop))
    return A.Compose(transforms) if transforms else None


def _photometric_and_geometric(cfg: AugmentConfig) -> list[A.BasicTransform]:
    transforms: list[A.BasicTransform] = []
    if cfg.hflip:
        transforms.append(A.HorizontalFlip(p=cfg.p))
    if cfg.zoom > 0:
        transforms.append(
            A.Affine(scale=(1 - cfg.zoom, 1 + cfg.zoom), border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=cfg.p)
        )
    if cfg.clahe:
        transforms.append(A.CLAHE(clip_limit=2.0, tile_grid_size=(8, 8), p=cfg.p))
    if cfg.brightness_contrast > 0:
        limit = cfg.brightness_contrast
        transforms.append(A.RandomBrightnessContrast(brightness_limit=limit, contrast_limit=limit, p=cfg.p))
    return transforms
