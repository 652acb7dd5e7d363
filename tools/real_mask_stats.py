"""Print the real SIIM label file's mask statistics as the constants of
``src/pneumoseg/data/synth/card.py`` (``REAL_STATS``): the synthetic dataset card and the tests
compare the generated masks with them, so the package never needs the real file at run time.

Per positive image: the area of the union of its instances, in pixels at 1024 x 1024, at the
5/25/50/75/95 % quantiles. Per instance: the same, at every 5 % (the generator samples instance
sizes from this table). Also the positive share of images and the instances per positive image.

    python tools/real_mask_stats.py [--labels ../shared/siim-sample/train-rle-full.csv.gz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pneumoseg.data.labels import read_labels
from pneumoseg.data.rle import rle_runs, run_pixels

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LABELS = REPO.parent / "shared" / "siim-sample" / "train-rle-full.csv.gz"
SHAPE = (1024, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    args = parser.parse_args()
    labels = read_labels(args.labels)
    image_areas, instance_areas, n_instances = [], [], []
    for label in labels.images.values():
        if not label.rles:
            continue
        pixels = []
        for rle in label.rles:
            starts, lengths = rle_runs(rle, SHAPE)
            instance_areas.append(int(lengths.sum()))
            pixels.append(run_pixels(starts, lengths))
        image_areas.append(len(np.unique(np.concatenate(pixels))))
        n_instances.append(len(label.rles))
    image_q = np.percentile(image_areas, [5, 25, 50, 75, 95])
    instance_q = np.percentile(instance_areas, np.arange(0, 101, 5))
    print("REAL_STATS = {")
    print(f'    "n_images": {len(labels)},')
    print(f'    "n_positive": {len(image_areas)},')
    print(f'    "n_instances": {len(instance_areas)},')
    print(f'    "image_area_quantiles_px": {[int(round(v)) for v in image_q]},  # 5/25/50/75/95 %')
    print(f'    "instance_area_quantiles_px": {[int(round(v)) for v in instance_q]},  # 0..100 by 5')
    print("}")
    print(f"# positive share {len(image_areas) / len(labels):.3f}, "
          f"instances per positive {np.mean(n_instances):.3f}, "
          f"two or more {np.mean(np.array(n_instances) > 1):.3f}, "
          f"under 1 % of the image {np.mean(np.array(image_areas) < 0.01 * 1024**2):.3f}")


if __name__ == "__main__":
    main()
