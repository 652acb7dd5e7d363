"""One configuration schema for every stage, loaded from YAML presets with CLI overrides.

Presets live in ``configs/`` (shipped inside the package): ``siim`` is the talk's recipe at
1024×1024, ``demo`` the same recipe sized for a 2-core CPU. ``load_config("demo",
["segmenter.epochs=3"])`` resolves a preset name or a YAML path and applies dotted overrides;
the resolved config is saved next to every checkpoint and output (:func:`save_config`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pneumoseg.errors import ConfigError
from pneumoseg.io import atomic_write_text


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
"""A share or probability: finite, in [0, 1]."""
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0.0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class AugmentConfig(_Section):
    """Albumentations recipe; each transform fires with probability ``p`` (the talk: 0.5)."""

    p: Probability = 0.5
    zoom: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.15
    """Affine scale range: zoom in/out by up to this fraction."""
    clahe: bool = True
    hflip: bool = True
    brightness_contrast: Probability = 0.2
    crop: Positive | None = None
    """Segmenter only: train on random crops of this many pixels (always, holding some of the
    mask when there is one); validation and inference see the whole image."""


class DataConfig(_Section):
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 1 / 6
    """Holdout share; the talk's split is 83.33/16.67."""
    n_folds: Annotated[int, Field(ge=2)] | None = None
    """Stratified k-fold instead of the holdout split when set."""
    split_seed: int = 0
    num_workers: NonNegativeInt = 0
    cache: bool = True
    """Decode each DICOM once at the training resolution and reuse it across epochs and runs."""
    cache_dir: str | None = None
    """Where the preprocessing cache lives; None: $PNEUMOSEG_CACHE or ~/.cache/pneumoseg."""


class StageConfig(_Section):
    """Training settings shared by the classifier and the segmenter."""

    image_size: Positive = 1024
    """Input side in pixels: a multiple of 32 (the encoders' output stride)."""
    epochs: Positive = 20
    batch_size: Positive = 8
    lr: Annotated[float, Field(gt=0.0)] = 1e-4
    lr_min: NonNegative = 1e-6
    cycle_epochs: Positive | None = None
    """Length of one cosine-annealing cycle (warm restarts) in epochs; None: one cycle over all epochs."""
    weight_decay: NonNegative = 0.0
    frozen_epochs: NonNegativeInt = 0
    """Epochs at the start during which the encoder gets no update (segmenter; a classifier of
    arch ``smp:<encoder>``)."""
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _check_schedule(self) -> StageConfig:
        if self.image_size % 32:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of 32")
        if self.frozen_epochs > self.epochs:
            raise ValueError(f"frozen_epochs ({self.frozen_epochs}) must lie in 0..epochs ({self.epochs})")
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min ({self.lr_min}) must not exceed lr ({self.lr})")
        return self


CLASSIFIER_ENCODER_PREFIX = "smp:"
"""``classifier.arch`` of this prefix names an smp encoder: the segmenter's, with a pooled head."""


class ClassifierConfig(StageConfig):
    arch: str = "legacy_xception"
    """timm model name, or ``smp:<encoder>``: the segmenter's encoder with a pooled linear head."""
    threshold: Probability = 0.5
    """Probability above which validation counts an image as positive (MCC, precision, recall)."""

    @model_validator(mode="after")
    def _check_encoder_settings(self) -> ClassifierConfig:
        if self.frozen_epochs and not self.arch.startswith(CLASSIFIER_ENCODER_PREFIX):
            raise ValueError(f"frozen_epochs needs an encoder to freeze: arch 'smp:<encoder>', not {self.arch!r}")
        if self.augment.crop:
            raise ValueError("augment.crop is for the segmenter: a crop can cut the finding out of a labelled image")
        return self


class SegmenterConfig(StageConfig):
    arch: str = "FPN"
    """segmentation-models-pytorch architecture name."""
    encoder: str = "inceptionresnetv2"
    # Redefined defaults keep the base class's types: a plain ``int`` here would drop their bounds.
    batch_size: Positive = 4
    cycle_epochs: Positive | None = 1
    frozen_epochs: NonNegativeInt = 2
    swa_start: Positive = 13
    swa_end: Positive = 17
    """SWA averages the weights at the end of epochs swa_start..swa_end (1-based, inclusive)."""
    dice_weight: NonNegative = 1.0
    bce_weight: NonNegative = 1.0
    negative_fraction: Probability = 0.0
    """Share of the negative images mixed into segmenter training (0: positives only, as the talk)."""

    @model_validator(mode="after")
    def _check_epochs(self) -> SegmenterConfig:
        if not self.swa_start <= self.swa_end <= self.epochs:
            raise ValueError(f"the SWA window {self.swa_start}..{self.swa_end} must lie inside the epochs "
                             f"(1..{self.epochs}), start before end")
        if self.frozen_epochs >= self.epochs:
            raise ValueError(f"frozen_epochs ({self.frozen_epochs}) must be below epochs ({self.epochs}): "
                             "the segmenter's encoder must train for at least one epoch")
        if self.dice_weight == 0 and self.bce_weight == 0:
            raise ValueError("dice_weight and bce_weight are both 0: nothing to train on")
        if self.augment.crop and not 32 <= self.augment.crop <= self.image_size:
            raise ValueError(f"augment.crop ({self.augment.crop}) must lie in 32..image_size ({self.image_size})")
        return self


class PostprocessConfig(_Section):
    """The one schema for post-processing values, wherever they come from: YAML presets,
    postprocess.json, CLI flags, onnx.json (:func:`updated_postprocess`)."""

    cls_threshold: Probability = 0.5
    pixel_threshold: Probability = 0.5
    min_area: NonNegativeInt = 3500
    """Smallest connected component kept, in pixels at 1024×1024 (scaled with resolution)."""
    rule: Literal["threshold", "triplet"] = "threshold"
    top: Probability = 0.75
    """Triplet rule: the image is empty unless ``min_area`` pixels exceed ``top``..."""
    bottom: Probability = 0.3
    """...and then the mask is ``p > bottom``."""


class RuntimeConfig(_Section):
    device: str = "auto"
    """"auto" picks CUDA when present, else CPU."""
    amp: bool = True
    """bf16 autocast in training and in the torch inference of the trained run: on CUDA, and on
    CPUs with native bf16 (AVX512-BF16/AMX)."""
    channels_last: bool = True
    """channels_last memory format in training (CUDA and CPU)."""
    threads: Positive | None = None
    """Torch CPU threads; fixed in the demo preset so a rerun on the same machine repeats exactly."""
    deterministic: bool = False
    """Deterministic algorithms (torch.use_deterministic_algorithms) and no cuDNN autotuning:
    on in the demo preset; off by default because some CUDA kernels are slower that way."""


class Config(_Section):
    name: str = "custom"
    seed: int = 0
    """Seeds weight initialisation, data order and augmentation."""
    data: DataConfig = DataConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    segmenter: SegmenterConfig = SegmenterConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    runtime: RuntimeConfig = RuntimeConfig()


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("pneumoseg.configs").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        text, source = path.read_text(), str(path)
    else:
        preset = resources.files("pneumoseg.configs") / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ConfigError(f"unknown config preset {name_or_path!r}; choose one of {preset_names()} or give a YAML path")
        text, source = preset.read_text(), f"preset {name_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a mapping of sections")
    return data, source


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (numbers, bools, null)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like section.field=value")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    try:
        node[leaf] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        node[leaf] = raw


def format_validation_error(source: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {where}: {first['msg']}{more}"


def load_config(name_or_path: str | Path = "demo", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a preset name (``siim``, ``demo``) or a YAML file, then apply ``section.field=value`` overrides."""
    data, source = _read_yaml(name_or_path)
    for override in overrides:
        apply_override(data, override)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def updated_postprocess(base: PostprocessConfig, updates: dict[str, Any], source: str) -> PostprocessConfig:
    """``base`` with ``updates`` (None values ignored), validated as a whole;
    a bad value is a one-line :class:`ConfigError` naming ``source`` (a file, "command line")."""
    unknown = sorted(set(updates) - set(PostprocessConfig.model_fields))
    if unknown:
        raise ConfigError(f"{source}: unknown post-processing setting {unknown[0]!r}; "
                          f"the settings are {', '.join(PostprocessConfig.model_fields)}")
    values = base.model_dump()
    values.update({k: v for k, v in updates.items() if v is not None})
    try:
        return PostprocessConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: Config, path: Path) -> None:
    atomic_write_text(path, config_to_yaml(config))
