"""The loop baseline: RLE written plainly, as the competition's reference ``mask_functions.py`` did.

Same spec as :mod:`pneumoseg.data.rle` ("relative" format, column-major pixels, ``"-1"`` for an
empty mask): a Python loop over every pixel to encode and a loop over the runs to decode. Kept
only as the yardstick the benchmarks compare against.
"""

import numpy as np


def mask2rle(mask):
    """Encode a (rows, columns) mask: walk each column top to bottom, columns left to right."""
    height, width = mask.shape
    rle = []
    last = 0
    current_pixel = 0
    run_start = -1
    run_length = 0
    for x in range(width):
        for y in range(height):
            color = 1 if mask[y][x] else 0
            if color != last:
                if color == 1:
                    run_start = current_pixel
                    run_length = 1
                else:
                    rle.append(str(run_start))
                    rle.append(str(run_length))
                    run_start = -1
                    run_length = 0
                    current_pixel = 0
            elif run_start > -1:
                run_length += 1
            last = color
            current_pixel += 1
    if run_start > -1:  # a run touching the last pixel (the reference dropped it)
        rle.append(str(run_start))
        rle.append(str(run_length))
    return " ".join(rle) if rle else "-1"


def rle2mask(rle, height=1024, width=1024):
    """Decode into a (rows, columns) 0/255 mask."""
    mask = np.zeros(width * height)
    if rle.strip() == "-1":
        return mask.reshape(width, height).T
    array = np.asarray([int(x) for x in rle.split()])
    starts = array[0::2]
    lengths = array[1::2]
    current_position = 0
    for index, start in enumerate(starts):
        current_position += start
        mask[current_position:current_position + lengths[index]] = 255
        current_position += lengths[index]
    return mask.reshape(width, height).T
