"""The typed run configuration: checked fields, JSON round trip, old versions, bad files."""

from __future__ import annotations

import json

import pytest

from jflows.errors import CheckpointError, ConfigError
from jflows.training.run_config import CONFIG_VERSION, RunConfig
from jflows.training.runs import read_config

MINIMAL = {"model": "realnvp", "options": {"hidden": [8]}, "data": "moons",
           "data_name": "moons", "kind": "vector", "event_shape": [2]}


def test_fields_are_typed_and_read_as_attributes_or_keys():
    config = RunConfig.from_dict({**MINIMAL, "mean": [0, 1.5], "lr": 1})
    assert config.event_shape == (2,) and config["event_shape"] == (2,)
    assert config.mean == (0.0, 1.5) and isinstance(config.lr, float)
    assert config.version == CONFIG_VERSION and dict(config)["model"] == "realnvp"
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.replace(steps=5).steps == 5 and config.steps == 1000


@pytest.mark.parametrize(("key", "value", "message"), [
    ("steps", "ten", "steps must be int, got 'ten'"),
    ("batch_size", True, "batch_size must be int"),
    ("kind", "audio", "kind must be 'vector' | 'image'"),
    ("event_shape", [2, "a"], r"event_shape\[1\] must be int"),
    ("grad_clip", "none", "grad_clip must be float"),
])
def test_a_wrong_value_is_named(key, value, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({**MINIMAL, key: value})


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(ConfigError, match="unknown keys \\['nope'\\]"):
        RunConfig.from_dict({**MINIMAL, "nope": 1})
    with pytest.raises(ConfigError, match="missing keys \\['kind'\\]"):
        RunConfig.from_dict({k: v for k, v in MINIMAL.items() if k != "kind"})


def test_old_versions_load_and_bad_files_are_checkpoint_errors(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    path = run / "config.json"
    path.write_text(json.dumps(MINIMAL))  # version 1: no "version", no later settings
    config = read_config(run)
    assert config.version == CONFIG_VERSION
    assert (config.patience, config.val_fraction, config.schedule) == (0, 0.0, "cosine")
    path.write_text(json.dumps({**MINIMAL, "version": 2, "steps": "x"}))
    with pytest.raises(CheckpointError, match="config version 2.*steps must be int"):
        read_config(run)
