"""Mask statistics of the real SIIM label file (``train-rle-full.csv.gz``: 12,047 images),
printed by ``tools/real_mask_stats.py`` and pasted here, so the package never needs the real
file at run time. Areas are in pixels at 1024 x 1024."""

REAL_STATS = {
    "n_images": 12047,
    "n_positive": 2669,
    "n_instances": 3576,
    "image_area_quantiles_px": [1364, 4059, 8630, 18388, 45772],  # 5/25/50/75/95 %
    "instance_area_quantiles_px": [55, 1118, 1663, 2149, 2667, 3241, 3791, 4386, 4962, 5578, 6504,
                                   7382, 8533, 9949, 11479, 13571, 16496, 20032, 26039, 35486,
                                   161421],  # 0..100 % by 5
}
# positive share 0.222, instances per positive 1.340, two or more 0.234, under 1 % of the image 0.569
IMAGE_AREA_QUANTILES = (5, 25, 50, 75, 95)
