"""The two-stage pipeline: the classifier gates, only positives are segmented.

Models are wrapped as plain ``forward(np.ndarray) -> np.ndarray`` functions, so PyTorch and
ONNX Runtime back-ends are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pneumoseg.config import PostprocessConfig
from pneumoseg.data.preprocess import Normalisation, resize_to_uint8, to_model_input
from pneumoseg.infer.postprocess import REFERENCE_SIZE, postprocess, resize_prob
from pneumoseg.infer.tta import Forward, hflip_tta
from pneumoseg.runs.postprocess import load_postprocess
from pneumoseg.runs.trained import TrainedModel, load_trained
from pneumoseg.runtime import use_autocast

SUBMISSION_SHAPE = (REFERENCE_SIZE, REFERENCE_SIZE)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def torch_forward(model: torch.nn.Module, device: torch.device | str = "cpu", *, autocast: bool = False) -> Forward:
    """Run ``model`` in channels_last layout, which oneDNN and cuDNN prefer (1.3–2× faster on a
    2-core CPU; see benchmarks/RESULTS.md), in bf16 autocast when ``autocast``."""
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def forward(x: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(batch).float().cpu().numpy()

    return forward


@dataclass
class ModelRunner:
    """One model at its own input size and normalisation; returns probabilities for a list of [0,1] images."""

    forward: Forward
    image_size: int
    normalisation: Normalisation
    tta: bool = False
    source: str = ""
    """What identifies the model's weights: its back-end and checksum (e.g. ``torch:<sha256>``)."""

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        batch = np.stack([resize_to_uint8(image, self.image_size) for image in images])
        x = to_model_input(batch, self.normalisation).numpy()
        forward = hflip_tta(self.forward) if self.tta else self.forward
        logits = forward(x)
        return _sigmoid(logits[:, 0]).astype(np.float32)


def torch_runner(trained: TrainedModel, device: torch.device | str = "cpu", *, autocast: bool = False,
                 tta: bool = False) -> ModelRunner:
    """A trained model as a :class:`ModelRunner` at its own input size and normalisation."""
    return ModelRunner(torch_forward(trained.model, device, autocast=autocast), trained.image_size,
                       trained.normalisation, tta, f"torch:{trained.digest}:{'bf16' if autocast else 'fp32'}")


@dataclass
class Prediction:
    probability: float | None
    """Classifier probability of pneumothorax (None when the gate is skipped)."""
    segmented: bool
    seg_prob: np.ndarray | None
    """Segmenter probability map at the segmenter's input size (None when not segmented)."""
    mask: np.ndarray = field(repr=False)
    """Final mask at 1024×1024, the submission's resolution."""

    @property
    def positive(self) -> bool:
        return bool(self.mask.any())


@dataclass
class TwoStagePipeline:
    classifier: ModelRunner | None
    segmenter: ModelRunner
    post: PostprocessConfig

    def fingerprint(self) -> dict[str, object]:
        """Everything that decides a prediction: each model's weights and back-end, its input
        size and TTA, and the post-processing (a resumed run must match it)."""
        runners = {"classifier": self.classifier, "segmenter": self.segmenter}
        return {
            **{kind: None if r is None else {"source": r.source, "image_size": r.image_size, "tta": r.tta,
                                             "normalisation": [*r.normalisation.mean, *r.normalisation.std]}
               for kind, r in runners.items()},
            "postprocess": self.post.model_dump(mode="json"),
        }

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """Images as float [0, 1] arrays of any size; one :class:`Prediction` each."""
        if not images:
            return []
        if self.classifier is None:
            probs: list[float | None] = [None] * len(images)
            gate = np.ones(len(images), dtype=bool)
        else:
            cls_probs = self.classifier.probabilities(images)
            probs = [float(p) for p in cls_probs]
            gate = cls_probs >= self.post.cls_threshold
        seg_maps: list[np.ndarray | None] = [None] * len(images)
        chosen = np.flatnonzero(gate)
        if len(chosen):
            for i, prob in zip(chosen, self.segmenter.probabilities([images[i] for i in chosen])):
                seg_maps[i] = prob
        return [self._finish(p, m) for p, m in zip(probs, seg_maps)]

    def _finish(self, probability: float | None, seg_prob: np.ndarray | None) -> Prediction:
        if seg_prob is None:
            return Prediction(probability, False, None, np.zeros(SUBMISSION_SHAPE, dtype=bool))
        mask = postprocess(resize_prob(seg_prob, SUBMISSION_SHAPE), self.post)
        return Prediction(probability, True, seg_prob, mask)


def build_torch_pipeline(cls_run: Path | None, seg_run: Path, *, seg_checkpoint: str = "auto", tta: bool = False,
                         post: PostprocessConfig | None = None, device: str = "cpu") -> TwoStagePipeline:
    """Load both runs (the classifier is skipped when ``cls_run`` is None: segmentation alone)."""
    segmenter: TrainedModel = load_trained(seg_run, seg_checkpoint, expect="segmenter")
    classifier = load_trained(cls_run, "best", expect="classifier") if cls_run is not None else None
    post = post or load_postprocess(seg_run, segmenter.config.postprocess, gated=classifier is not None)
    # bf16 where the run trained in bf16 (runtime.amp on CUDA or a CPU with native bf16).
    autocast = use_autocast(segmenter.config.runtime, torch.device(device))
    cls_runner = torch_runner(classifier, device, autocast=autocast, tta=tta) if classifier else None
    seg_runner = torch_runner(segmenter, device, autocast=autocast, tta=tta)
    return TwoStagePipeline(cls_runner, seg_runner, post)
