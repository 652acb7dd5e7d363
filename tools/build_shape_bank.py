"""Build ``src/pneumoseg/assets/shape_bank.npz``: real pneumothorax shapes for the synthetic data.

Reads the full SIIM label file (relative RLE, one row per instance), keeps instances covering at
least ``--min-area`` of the 1024x1024 image (smaller ones vanish when images are downsampled for
training), and takes ``--count`` of them at evenly spaced area quantiles so the bank follows the
real size distribution. Each shape is cropped to its bounding box and shrunk to fit ``--crop``
pixels (soft edges kept as uint8, so it can be scaled back up smoothly); its box (as fractions
of the image) and original area are stored beside it.

    python tools/build_shape_bank.py [--labels ../shared/siim-sample/train-rle-full.csv.gz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pneumoseg.data.labels import read_labels
from pneumoseg.data.rle import rle_decode, rle_runs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LABELS = REPO.parent / "shared" / "siim-sample" / "train-rle-full.csv.gz"
DEFAULT_OUT = REPO / "src" / "pneumoseg" / "assets" / "shape_bank.npz"
SOURCE_SIZE = 1024


def read_instance_rles(path: Path) -> list[str]:
    """The RLE strings of every pneumothorax instance (one per positive row), image by image."""
    return [rle for label in read_labels(path).images.values() for rle in label.rles]


def crop_shape(mask: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """The mask cut to its bounding box and shrunk to fit ``crop``; and the box as fractions."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    cut = mask[y0:y1, x0:x1].astype(np.float32)
    factor = min(1.0, crop / max(cut.shape))
    h, w = max(1, round(cut.shape[0] * factor)), max(1, round(cut.shape[1] * factor))
    small = cv2.resize(cut, (w, h), interpolation=cv2.INTER_AREA)
    box = np.array([x0, y0, x1, y1], np.float32) / mask.shape[0]
    return np.round(small * 255).astype(np.uint8), box


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--min-area", type=float, default=0.002, help="fraction of the image")
    args = parser.parse_args()

    rles = read_instance_rles(args.labels)
    shape = (SOURCE_SIZE, SOURCE_SIZE)
    areas = np.array([rle_runs(rle, shape)[1].sum() for rle in rles])  # runs never overlap
    eligible = np.flatnonzero(areas >= args.min_area * SOURCE_SIZE**2)
    by_area = eligible[np.argsort(areas[eligible], kind="stable")]
    chosen = by_area[np.round(np.linspace(0, len(by_area) - 1, args.count)).astype(int)]

    crops = np.zeros((len(chosen), args.crop, args.crop), np.uint8)
    crop_hw = np.zeros((len(chosen), 2), np.int16)
    boxes = np.zeros((len(chosen), 4), np.float32)
    for row, i in enumerate(chosen):
        small, boxes[row] = crop_shape(rle_decode(rles[i], shape), args.crop)
        crops[row, : small.shape[0], : small.shape[1]] = small
        crop_hw[row] = small.shape
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, crops=crops, crop_hw=crop_hw, boxes=boxes,
                        areas=areas[chosen].astype(np.int32), source_size=np.int32(SOURCE_SIZE))

    real = areas / SOURCE_SIZE**2 * 100
    kept = areas[chosen] / SOURCE_SIZE**2 * 100
    quantiles = [5, 25, 50, 75, 95]
    print(f"{len(rles)} real instances, {len(eligible)} with area >= {args.min_area:.2%}; "
          f"kept {len(chosen)}")
    print(f"area % of image, quantiles {quantiles}:")
    for name, values in (("real (all)", real), ("shape bank", kept)):
        print(f"  {name:11} {np.round(np.percentile(values, quantiles), 3).tolist()}  "
              f"mean {values.mean():.3f}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
