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
    cfg = load_config("demo", ["segmenter.epochs=3", "segmenter.frozen_epochs=1", "data.n_folds=5",
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
