"""Inference: the two-stage pipeline, post-processing and test-time augmentation."""
