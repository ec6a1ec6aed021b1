"""Library exceptions live in jflows.errors; layers validate their attributes at construction."""

import importlib
import inspect
import pkgutil

import pytest

import jflows
import jflows.bijectors
import jflows.errors
import jflows.kernels
from jflows.bijectors import MLP, ConvNet, MaskedCoupling, SplitCoupling, Stack
from jflows.errors import ConfigError


def test_every_library_exception_is_defined_in_jflows_errors():
    stray = []
    for info in pkgutil.walk_packages(jflows.__path__, "jflows."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == info.name and info.name != "jflows.errors"):
                stray.append(f"{info.name}.{name}")
    assert not stray


def test_inverse_not_converged_error_keeps_its_import_paths():
    from jflows.bijectors import InverseNotConvergedError
    from jflows.kernels.fixed_point import InverseNotConvergedError as from_kernel

    assert InverseNotConvergedError is jflows.errors.InverseNotConvergedError
    assert from_kernel is jflows.kernels.InverseNotConvergedError is InverseNotConvergedError
    assert issubclass(InverseNotConvergedError, jflows.errors.JflowsError)


@pytest.mark.parametrize("make", [lambda: MLP(activation="swish"),
                                  lambda: ConvNet(activation="swish")])
def test_an_unknown_activation_is_a_config_error_naming_value_and_choices(make):
    with pytest.raises(ConfigError, match="activation='swish'.*'relu', 'elu', 'tanh', 'gelu'"):
        make()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: SplitCoupling(scale_map="softsign"), "softsign"),
        (lambda: MaskedCoupling(mask="diagonal"), "diagonal"),
        (lambda: Stack(lambda: SplitCoupling(), length=0), "length"),
        (lambda: MLP(hidden=(16, 0)), "hidden"),
        (lambda: ConvNet(kernel_sizes=(3, -1)), "kernel_sizes"),
    ],
)
def test_layers_validate_their_attributes_at_construction(make, needle):
    with pytest.raises(ConfigError, match=needle):  # no init/apply needed
        make()
