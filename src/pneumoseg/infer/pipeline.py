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
from pneumoseg.errors import PneumosegError
from pneumoseg.runs.postprocess import load_postprocess
from pneumoseg.runs.trained import TrainedModel, load_stage_models
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


@dataclass
class EnsembleRunner:
    """The folds of a cross-validation, as one model: the mean of their probabilities. Folds
    run one after another on each batch and their maps are summed as they come, so a batch
    never holds K probability maps at once."""

    runners: list[ModelRunner]

    def __post_init__(self) -> None:
        sizes = {r.image_size for r in self.runners}
        if len(sizes) != 1:
            raise PneumosegError(f"the folds of an ensemble take different input sizes ({sorted(sizes)})")

    @property
    def image_size(self) -> int:
        return self.runners[0].image_size

    @property
    def normalisation(self) -> Normalisation:
        return self.runners[0].normalisation

    @property
    def tta(self) -> bool:
        return self.runners[0].tta

    @property
    def source(self) -> str:
        return f"ensemble of {len(self.runners)}: " + ", ".join(r.source for r in self.runners)

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        total = self.runners[0].probabilities(images)
        for runner in self.runners[1:]:
            total += runner.probabilities(images)
        return total / len(self.runners)


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
    classifier: ModelRunner | EnsembleRunner | None
    segmenter: ModelRunner | EnsembleRunner
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


def _runner(run: Path, which: str, kind: str, device: str, *, tta: bool, autocast: bool | None = None):
    """A run folder's model, or a CV folder's folds as an :class:`EnsembleRunner`; the config
    of the (first) model, whose runtime decides bf16."""
    models = load_stage_models(run, which, kind)
    config = models[0].config
    if autocast is None:  # bf16 where the run trained in bf16 (runtime.amp on CUDA or a CPU with native bf16)
        autocast = use_autocast(config.runtime, torch.device(device))
    runners = [torch_runner(m, device, autocast=autocast, tta=tta) for m in models]
    return (runners[0] if len(runners) == 1 else EnsembleRunner(runners)), config, autocast


def build_torch_pipeline(cls_run: Path | None, seg_run: Path, *, seg_checkpoint: str = "auto", tta: bool = False,
                         post: PostprocessConfig | None = None, device: str = "cpu") -> TwoStagePipeline:
    """Load both stages (the classifier is skipped when ``cls_run`` is None: segmentation
    alone). Either may be a CV folder: its folds are averaged, with the post-processing
    ``tune --cv`` chose on their out-of-fold outputs."""
    seg_runner, config, autocast = _runner(seg_run, seg_checkpoint, "segmenter", device, tta=tta)
    cls_runner = None
    if cls_run is not None:
        cls_runner, _, _ = _runner(cls_run, "best", "classifier", device, tta=tta, autocast=autocast)
    post = post or load_postprocess(seg_run, config.postprocess, gated=cls_runner is not None)
    return TwoStagePipeline(cls_runner, seg_runner, post)
