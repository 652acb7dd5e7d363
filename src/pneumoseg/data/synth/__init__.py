"""Synthetic SIIM-style dataset: chest-radiograph-like DICOMs with pneumothorax labels.

This is the project's embedded default dataset: ``generate_dataset`` writes the released SIIM
layout (nested DICOM folders + stage-1 style ``train-rle.csv``) so the whole pipeline can be
trained and evaluated on a machine without the real data.

How an image is drawn. Everything is drawn in a *canonical frame*: the unit square, patient
facing the viewer (the patient's right lung on the image left), anatomy at the average position
of the real SIIM lung fields. Smooth structures (body, lungs, heart, mediastinum, breasts,
stomach gas) are drawn on a coarse canvas (a quarter of the size, at least 128 px) and
upsampled once; sharp structures (ribs, clavicles, vessel markings, the pneumothorax and its
pleural line) are drawn at full resolution. The canonical picture is then posed (shift, scale,
rotation) with one affine warp, windowed (exposure, contrast, gamma), given quantum noise and
sometimes a side marker.

Pneumothorax shapes come from a bank of real SIIM masks (``assets/shape_bank.npz``, built by
``tools/build_shape_bank.py``): a shape is placed at its real position relative to the lung
field, mapped onto the drawn lung, and clipped to it. Inside it the lung is darker (air) and has
no vessel markings; a thin bright visceral pleural line runs along its inner border.
"""

from pneumoseg.data.synth.dataset import SynthSummary, generate_dataset
from pneumoseg.data.synth.dicom_writer import SynthUids, synth_uids, write_synth_dicom
from pneumoseg.data.synth.pneumothorax import ShapeBank, load_shape_bank
from pneumoseg.data.synth.radiograph import SynthRadiograph, synth_radiograph

__all__ = [
    "ShapeBank",
    "SynthRadiograph",
    "SynthSummary",
    "SynthUids",
    "generate_dataset",
    "load_shape_bank",
    "synth_radiograph",
    "synth_uids",
    "write_synth_dicom",
]
