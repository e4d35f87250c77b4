"""A network of the user's own: loading it by file or package, the contract, one-line errors."""

import pathlib

import pytest

from cifar_flax.errors import CifarFlaxError
from cifar_flax.models import create_model
from cifar_flax.models.external import canonical
from cifar_flax.summary import summarize
from tests.conftest import REPO_ROOT

EXAMPLE = "examples/my_net.py:MyNet"


def write(tmp_path, source, name="net.py"):
    path = tmp_path / name
    path.write_text(source)
    return path


def test_the_example_passes_every_assignment_check(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    checks = dict(summarize(create_model(EXAMPLE), EXAMPLE).checks())
    assert all(checks.values()), checks


def test_a_file_spec_is_made_absolute_and_a_package_spec_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert canonical(EXAMPLE) == f"{REPO_ROOT / 'examples' / 'my_net.py'}:MyNet"
    assert canonical("tests.test_external:Net") == "tests.test_external:Net"
    assert canonical("s7_lite") == "s7_lite"


def test_a_module_of_a_package_loads_by_its_dotted_name(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert type(create_model("examples.my_net:MyNet")).__name__ == "MyNet"


HEADER = "import flax.linen as nn\n\n\nclass "
NEEDS_AN_ARGUMENT = (
    HEADER
    + "Net(nn.Module):\n    width: int\n\n    def __call__(self, x, train):\n        return x\n"
)
SEVEN_CLASSES = (
    HEADER
    + "Net(nn.Module):\n    @nn.compact\n    def __call__(self, x, train=False):\n"
    + "        return nn.Dense(7)(x.reshape(len(x), -1))\n"
)
NO_TRAIN_ARGUMENT = HEADER + "Net(nn.Module):\n    def __call__(self, x):\n        return x\n"


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        (None, "{dir}/missing.py:Net", "model file {dir}/missing.py not found"),
        (
            HEADER + "A(nn.Module):\n    pass\n",
            "{dir}/net.py:B",
            "no Flax module 'B'; it defines: A",
        ),
        ("x = 1 / 0\n", "{dir}/net.py:Net", "cannot import {dir}/net.py: ZeroDivisionError"),
        ("class Net:\n    pass\n", "{dir}/net.py:Net", "has no Flax module 'Net'"),
        (NEEDS_AN_ARGUMENT, "{dir}/net.py:Net", "must be constructible with no arguments"),
        (
            SEVEN_CLASSES,
            "{dir}/net.py:Net",
            "returns (2, 7) for a batch of 2; it must return (N, 10)",
        ),
        (NO_TRAIN_ARGUMENT, "{dir}/net.py:Net", "calling it as model(x, train=False)"),
        (None, "no_such_package.mod:Net", "cannot import no_such_package.mod"),
        (None, "nothing.py:", "bad model 'nothing.py:'"),
    ],
)
def test_a_bad_model_is_one_line(tmp_path, source, spec, message):
    if source is not None:
        write(tmp_path, source)
    with pytest.raises(CifarFlaxError) as error:
        create_model(spec.format(dir=tmp_path))
    assert message.format(dir=tmp_path) in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_names_point_at_both_kinds_of_model():
    with pytest.raises(CifarFlaxError, match=r"unknown model 'vgg'.*path/to/file\.py:ClassName"):
        create_model("vgg")


def test_example_file_is_plain_flax():
    source = (REPO_ROOT / "examples" / "my_net.py").read_text()
    assert "cifar_flax" not in source.split('"""', 2)[2]  # the code after the docstring
    assert pathlib.Path(REPO_ROOT / "examples" / "my_net.py").exists()
