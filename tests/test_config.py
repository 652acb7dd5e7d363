import pytest
import yaml

from pneumoseg.config import Config, load_config, preset_names, save_config
from pneumoseg.errors import ConfigError


def test_presets_ship_with_the_package():
    assert {"demo", "siim"} <= set(preset_names())


def test_siim_preset_is_the_talks_recipe():
    cfg = load_config("siim")
    assert cfg.classifier.arch == "legacy_xception" and cfg.classifier.image_size == 1024
    assert cfg.classifier.epochs == 20 and cfg.classifier.augment.p == 0.5
    seg = cfg.segmenter
    assert (seg.arch, seg.encoder, seg.image_size) == ("FPN", "inceptionresnetv2", 1024)
    assert (seg.epochs, seg.frozen_epochs, seg.swa_start, seg.swa_end) == (20, 2, 13, 17)
    assert cfg.postprocess.min_area == 3500
    assert cfg.data.val_fraction == pytest.approx(1 / 6)


def test_overrides_are_typed_and_nested():
    cfg = load_config("demo", ["segmenter.epochs=3", "segmenter.frozen_epochs=1", "segmenter.swa_start=2",
                               "segmenter.swa_end=3", "data.n_folds=5",
                               "classifier.augment.clahe=false", "data.cache_dir=null"])
    assert cfg.segmenter.epochs == 3 and cfg.data.n_folds == 5
    assert cfg.classifier.augment.clahe is False and cfg.data.cache_dir is None


@pytest.mark.parametrize("override, message", [
    ("segmenter.nope=1", "segmenter.nope"),
    ("segmenter.epochs=abc", "segmenter.epochs"),
    ("segmenter", "section.field=value"),
    ("segmenter.frozen_epochs=99", "frozen_epochs"),
])
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown config preset"):
        load_config("nope")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("segmenter: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("demo", ["segmenter.lr=0.005"])
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["segmenter"]["lr"] == 0.005
    assert isinstance(load_config(path), Config)


def test_a_folder_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert load_config("demo").name == "demo"


def test_postprocess_values_are_validated_wherever_they_come_from(tmp_path):
    """postprocess.json, CLI flags and onnx.json all go through one schema (updated_postprocess)."""
    from pneumoseg.config import PostprocessConfig, updated_postprocess

    base = PostprocessConfig()
    assert updated_postprocess(base, {"rule": "triplet", "top": 0.8, "min_area": None}, "x").rule == "triplet"
    for updates, needle in (({"rule": "bogus"}, "rule"), ({"cls_threshold": float("nan")}, "cls_threshold"),
                            ({"pixel_threshold": 1.5}, "pixel_threshold"), ({"min_area": -1}, "min_area"),
                            ({"threshold": 0.5}, "unknown post-processing setting 'threshold'")):
        with pytest.raises(ConfigError, match=needle) as info:
            updated_postprocess(base, updates, "runs/seg/postprocess.json")
        assert str(info.value).startswith("runs/seg/postprocess.json: ") and "\n" not in str(info.value)


def test_a_bad_postprocess_json_stops_predict_loading(tmp_path):
    import json

    from pneumoseg.config import PostprocessConfig
    from pneumoseg.errors import PneumosegError
    from pneumoseg.runs.postprocess import load_postprocess
    from pneumoseg.io import sealed

    (tmp_path / "postprocess.json").write_text(json.dumps(sealed({"system": "two-stage", "params": {"cls_threshold": 7}, "mean_dice": 0.8, "all_empty_baseline": 0.7, "n_images": 3})))
    with pytest.raises(PneumosegError, match="postprocess.json: cls_threshold"):
        load_postprocess(tmp_path, PostprocessConfig())
    (tmp_path / "postprocess.json").write_text("[1, 2]")
    with pytest.raises(PneumosegError, match="no params object"):
        load_postprocess(tmp_path, PostprocessConfig())
