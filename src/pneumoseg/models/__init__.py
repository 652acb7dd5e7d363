"""Model factories: the timm classifier and the segmentation-models-pytorch segmenter, and the input
normalisation each expects."""

from pneumoseg.models.classifier import build_classifier
from pneumoseg.models.normalisation import classifier_normalisation, segmenter_normalisation
from pneumoseg.models.segmenter import build_segmenter
from pneumoseg.models.weights import load_pretrained

__all__ = ["build_classifier", "build_segmenter", "classifier_normalisation", "load_pretrained",
           "segmenter_normalisation"]
