"""Model factories: the timm classifier and the segmentation-models-pytorch segmenter."""

from pneumoseg.models.classifier import build_classifier
from pneumoseg.models.segmenter import build_segmenter
from pneumoseg.models.weights import load_pretrained

__all__ = ["build_classifier", "build_segmenter", "load_pretrained"]
