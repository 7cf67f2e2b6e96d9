"""Settings precedence: flags over environment over TOML over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudrec.config import Settings, SettingsError, load_settings


def test_defaults_listen_on_loopback_8080_and_1935_with_data_in_cloudrec_data():
    s = load_settings(env={})
    assert (s.host, s.http_port, s.rtmp_port) == ("127.0.0.1", 8080, 1935)
    assert s.data_dir == Path("./cloudrec-data")
    assert s.database.startswith("sqlite:///") and s.database.endswith("cloudrec-data/cloudrec.db")


def test_flags_beat_environment_which_beats_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('http_port = 9001\nrtmp_port = 9002\nhost = "0.0.0.0"\n')
    env = {"CLOUDREC_HTTP_PORT": "9101", "CLOUDREC_CONFIG": str(toml)}
    s = load_settings({"http_port": None, "rtmp_port": None, "host": "10.1.1.1"}, env=env)
    assert (s.http_port, s.rtmp_port, s.host) == (9101, 9002, "10.1.1.1")


def test_the_data_dir_toml_is_read_when_no_config_is_named(tmp_path):
    (tmp_path / "cloudrec.toml").write_text("rtmp_port = 2935\n")
    s = load_settings({"data_dir": tmp_path}, env={})
    assert s.rtmp_port == 2935


def test_booleans_parse_from_the_environment():
    assert load_settings(env={"CLOUDREC_ALLOW_PRIVATE_TARGETS": "1"}).allow_private_targets
    assert not load_settings(env={"CLOUDREC_ALLOW_PRIVATE_TARGETS": "off"}).allow_private_targets


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLOUDREC_HTTP_PORT": "eighty"}, "setting http_port"),
        ({"CLOUDREC_RTMP_PORT": "70000"}, "not a TCP port"),
        ({"CLOUDREC_ALLOW_PRIVATE_TARGETS": "maybe"}, "not a boolean"),
        ({"CLOUDREC_LOG_FORMAT": "xml"}, "log_format"),
        ({"CLOUDREC_EXECUTOR": "k8s"}, "executor: 'k8s' is not one of process, host, ray"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(env, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(env=env)


def test_an_unknown_toml_key_is_an_error_not_a_silent_default(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("http_prot = 1\n")
    with pytest.raises(SettingsError, match="unknown settings http_prot"):
        load_settings(config_file=toml, env={})


def test_every_setting_has_an_environment_variable():
    """Every field, whatever its type, is read from CLOUDREC_<NAME> (the old test set the int
    fields only and checked two of them)."""
    import dataclasses

    sample = {"int": "7", "float": "2.5", "bool": "true", "Path": "/srv/rec", "str": "x"}
    special = {
        "http_port": "8081",
        "rtmp_port": "1936",
        "log_format": "text",
        "executor": "process",
        "hook_rtmp_base": "rtmp://10.0.0.5:1935",
        "rtmp_connection_cap_exempt": "10.0.0.9",
        "tls_cert_file": "/etc/passwd",  # any file: only that it exists is checked here
        "tls_key_file": "/etc/passwd",
        "loopback_plays": "false",  # on by default
    }
    fields = dataclasses.fields(Settings)
    raw = {f.name: special.get(f.name, sample[str(f.type)]) for f in fields}
    s = load_settings(env={f"CLOUDREC_{name.upper()}": value for name, value in raw.items()})
    typed = {"int": int, "float": float, "bool": lambda v: v == "true", "Path": Path, "str": str}
    for f in fields:
        want = typed[str(f.type)](raw[f.name])
        got = getattr(s, f.name)
        assert got == want and got != getattr(Settings(), f.name), (f.name, got)
