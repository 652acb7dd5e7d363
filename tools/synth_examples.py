"""Render a grid of example synthetic films to docs/synth-examples.png: 4 positives (mask
outlined in red) and 4 negatives, each labelled with its class and the look-alikes present.

    python tools/synth_examples.py [--out docs/synth-examples.png] [--seed 0] [--tile 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pneumoseg.data.synth import synth_radiograph

REPO = Path(__file__).resolve().parents[1]
SHORT = {"skin_fold": "skin fold", "scapula": "scapula", "bulla": "bulla", "chest_drain": "drain",
         "central_line": "line", "ecg_leads": "ECG", "text_label": "text"}


def tile(seed: int, index: int, positive: bool, size: int) -> np.ndarray:
    radiograph = synth_radiograph(np.random.default_rng([seed, index]), 1024, int(positive))
    small = cv2.resize(radiograph.image, (size, size), interpolation=cv2.INTER_AREA)
    out = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    if radiograph.n_instances:
        mask = cv2.resize(radiograph.mask.astype(np.uint8), (size, size),
                          interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (0, 0, 255), 1)
    label = "positive" if radiograph.n_instances else "negative"
    extras = ", ".join(SHORT[k] for k in radiograph.lookalikes) or "no look-alikes"
    cv2.rectangle(out, (0, size - 30), (size, size), (0, 0, 0), -1)
    cv2.putText(out, label, (4, size - 17), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (80, 255, 255), 1,
                cv2.LINE_AA)
    cv2.putText(out, extras, (4, size - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "synth-examples.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile", type=int, default=256)
    args = parser.parse_args()
    rows = [np.hstack([tile(args.seed, i + 4 * row, positive=row == 0, size=args.tile)
                       for i in range(4)]) for row in range(2)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
