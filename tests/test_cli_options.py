"""Typed model options: ``--opt`` checked against the factories, ``jflows models``, versions."""

import functools
import json
import typing

import pytest

from jflows.cli import main
from jflows.errors import CheckpointError, ConfigError
from jflows.models import MODELS
from jflows.training import train_run
from jflows.training.options import GLOSSARY, coerce_options, glossary_markdown, option_specs
from jflows.training.runs import CONFIG_VERSION, read_config


def one_line(capsys, args, *needles):
    """``jflows args`` exits 2 with one line on stderr naming every needle, no traceback."""
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


TINY = ["--opt", "n_couplings=2", "--opt", "hidden=(8,)", "--batch-size", "32", "--quiet"]


def train(out, *extra):
    return ["train", "--model", "realnvp", "--data", "moons", "--out", str(out), "--steps", "2",
            *extra]


@pytest.mark.parametrize(
    ("opt", "needles"),
    [
        ("hidden=abc", ("hidden", "tuple[int, ...]", "(128, 128)", "'abc'")),
        ("nope=1", ("'nope'", "n_couplings", "jflows models realnvp")),
        ("scale_map=foo", ("scale_map", "'tanh', 'sigmoid', 'exp', 'none'", "default 'tanh'")),
        ("n_couplings=2.5", ("n_couplings", "int", "default 8")),
        ("actnorm=1", ("actnorm", "bool", "default False")),
    ],
)
def test_a_bad_opt_is_one_line_naming_the_option_and_nothing_is_written(
    tmp_path, capsys, opt, needles
):
    out = tmp_path / "run"
    one_line(capsys, train(out, "--opt", opt), *needles)
    assert not out.exists()


def test_opt_values_are_converted_to_the_factory_types():
    options = coerce_options("resflow", {"hidden": [8, 8], "coeff": 1, "tail": None, "unroll": 2})
    assert options == {"hidden": (8, 8), "coeff": 1.0, "tail": None, "unroll": 2}
    assert isinstance(options["coeff"], float)
    assert coerce_options("resflow", {"hidden": 8}) == {"hidden": 8}  # int is allowed too
    with pytest.raises(ConfigError, match="on_nonconvergence.*'raise', 'nan', 'ignore'"):
        coerce_options("resflow", {"on_nonconvergence": "retry"})


def test_every_factory_option_has_a_type_and_a_glossary_line():
    for model in MODELS:
        for spec in option_specs(model):
            assert spec.name in GLOSSARY, (model, spec.name)
            assert spec.type_text not in ("str", "Any"), (model, spec.name)  # choices are typed


def test_readme_holds_the_option_glossary():
    with open("README.md", encoding="utf-8") as f:
        assert glossary_markdown() in f.read()


def test_a_bug_inside_a_factory_is_not_relabelled_as_a_user_error(tmp_path, monkeypatch):
    factory = MODELS["realnvp"]

    @functools.wraps(factory)
    def broken(*args, **kwargs):
        raise TypeError("internal bug")

    monkeypatch.setitem(MODELS, "realnvp", broken)
    with pytest.raises(TypeError, match="internal bug") as info:
        train_run("realnvp", "moons", tmp_path / "run", steps=2, options={"n_couplings": 2})
    assert not isinstance(info.value, ConfigError)


def test_models_lists_every_model_on_one_line(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(MODELS)


def test_models_name_lists_options_with_types_defaults_and_help(capsys):
    assert main(["models", "resflow"]) == 0
    out = capsys.readouterr().out
    assert "n_exact_terms: " in out and "int = 2" in out
    assert "'roulette' | 'series' | 'exact' = 'roulette'" in out
    assert GLOSSARY["inverse_max_iter"] in out
    one_line(capsys, ["models", "flowpp"], "unknown model 'flowpp'", "resflow")


def test_config_carries_its_version_and_old_and_newer_versions_are_handled(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train(out, *TINY)) == 0
    path = out / "config.json"
    config = json.loads(path.read_text())
    assert config["version"] == CONFIG_VERSION == 3
    assert config["options"] == {"n_couplings": 2, "hidden": [8]}
    del config["version"]  # a run written before versions: version 1, still loads
    path.write_text(json.dumps(config))
    assert main(["eval", "--run", str(out), "--data", "moons"]) == 0
    path.write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(CheckpointError, match="version 99.*up to 3"):
        read_config(out)
    capsys.readouterr()
    one_line(capsys, ["eval", "--run", str(out), "--data", "moons"], "version 99")


def test_option_choices_match_the_library_lists():
    from jflows.kernels.coupling import SCALE_MAPS
    from jflows.kernels.fixed_point import ON_NONCONVERGENCE
    from jflows.kernels.lipschitz_nets import LIPSCHITZ_ACTIVATIONS
    from jflows.models.common import BASES, DTYPES

    def choices(model, name):
        (spec,) = [s for s in option_specs(model) if s.name == name]
        return tuple(a for a in typing.get_args(spec.hint) if isinstance(a, str))

    assert choices("realnvp", "scale_map") == SCALE_MAPS
    assert choices("resflow", "activation") == LIPSCHITZ_ACTIVATIONS
    assert choices("iresnet", "on_nonconvergence") == ON_NONCONVERGENCE
    assert set(choices("nice", "base")) == set(BASES)
    assert choices("glow", "dtype") == DTYPES
