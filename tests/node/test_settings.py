"""The node's settings: a YAML file with the command line on top, every value validated with
one line naming the source and the field, and relative paths taken from the file's folder."""

from __future__ import annotations

import pytest
import yaml

from pneumoseg.errors import ConfigError, PneumosegError
from pneumoseg.node.sender import DimseDestination, StowDestination, parse_destination
from pneumoseg.node.settings import load_node_settings, save_node_settings
from tests.train.test_cli import assert_one_line_error, run_main


def _write(tmp_path, **values):
    path = tmp_path / "etc" / "node.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


def test_the_file_is_read_and_the_command_line_wins(tmp_path):
    config = _write(tmp_path, spool="spool", model="/models/model.zip", port=4104, modalities=["dx"],
                    allow_callers=["ORTHANC"], retry_max_s=5)
    settings = load_node_settings(config, {"port": 11113, "allow_callers": [], "views": None, "body_parts": ["chest"]})
    assert settings.spool == tmp_path / "etc" / "spool"  # relative to the file
    assert str(settings.model) == "/models/model.zip"
    assert settings.port == 11113 and settings.allow_callers == ["ORTHANC"] and settings.retry_max_s == 5
    assert settings.read_filter().modalities == ("DX",) and settings.read_filter().body_parts == ("CHEST",)
    assert settings.read_filter().views == ("PA", "AP")  # the default stands
    save_node_settings(settings, tmp_path / "saved.yaml")
    assert load_node_settings(tmp_path / "saved.yaml", {}) == settings


@pytest.mark.parametrize(("values", "needle"), [
    ({"port": 70000}, "port: Input should be less than or equal to 65535"),
    ({"ae_title": "A\\B"}, "ae_title: Value error, 'A\\\\B' is not an AE title"),
    ({"allow_callers": ["WAY_TOO_LONG_AE_TITLE"]}, "allow_callers"),
    ({"retry_max_s": 0}, "retry_max_s"),
    ({"sendto": "X@h:1"}, "sendto: Extra inputs are not permitted"),
])
def test_a_bad_value_is_one_line_naming_the_file_and_field(tmp_path, values, needle):
    config = _write(tmp_path, spool="s", **values)
    with pytest.raises(ConfigError) as error:
        load_node_settings(config, {})
    assert str(error.value).startswith(f"{config}: ") and needle in str(error.value)


def test_a_file_that_is_not_a_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_node_settings(bad, {})
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_node_settings(bad, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_node_settings(tmp_path / "missing.yaml", {})


def test_destinations_are_parsed_and_exclusive():
    assert parse_destination("ORTHANC@127.0.0.1:4242", None) == DimseDestination("ORTHANC", "127.0.0.1", 4242)
    assert parse_destination(None, "http://pacs:8042/dicom-web") == StowDestination("http://pacs:8042/dicom-web")
    assert parse_destination(None, None) is None
    with pytest.raises(PneumosegError, match="not both"):
        parse_destination("ORTHANC@h:1", "http://pacs/dicom-web")
    with pytest.raises(PneumosegError, match="http://"):
        parse_destination(None, "pacs:8042")


def test_the_command_refuses_bad_settings_in_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "node", "--cls", "c", "--seg", "s")
    assert_one_line_error(code, err, "spool: Field required")
    config = _write(tmp_path, spool="s", cls="c", seg="s", port=0)
    code, _, err = run_main(monkeypatch, capsys, "node", "--config", str(config))
    assert_one_line_error(code, err, str(config), "port")
    code, _, err = run_main(monkeypatch, capsys, "node", "--config", str(config), "--port", "4000",
                            "--host", "0.0.0.0")
    assert_one_line_error(code, err, "--allow-caller")
