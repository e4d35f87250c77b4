"""The workdir: its default name, and which config changes a resumed run refuses."""

import json
import pathlib

import pytest

from cifar_flax import workdir
from tests.conftest import make_config


@pytest.mark.parametrize(
    ("spec", "model", "name"),
    [
        ("configs/s7.py", None, "runs/s7"),
        ("configs/s7.py:s7_dwsep,seed", None, "runs/s7-s7_dwsep-seed"),
        ("configs/s9.py:val", None, "runs/s9-val"),
        ("configs/s7.py", "examples/my_net.py:MyNet", "runs/s7-MyNet"),
        ("configs/s7.py", "s6_grouped", "runs/s7-s6_grouped"),
    ],
)
def test_default_workdir_names_the_config_variant_and_model(spec, model, name):
    assert workdir.default_workdir(spec, model) == pathlib.Path(name)


def saved(**overrides):
    return {"model": "s7_lite", "config": json.loads(make_config(**overrides).to_json())}


def test_more_epochs_continue_a_run_only_where_the_schedule_does_not_depend_on_them():
    assert workdir.changed_settings(saved(num_epochs=5), make_config()) == []
    onecycle = make_config(lr_schedule="onecycle")
    assert workdir.changed_settings(saved(num_epochs=5, lr_schedule="onecycle"), onecycle) == [
        "num_epochs: 5 -> 2"
    ]


def test_where_the_data_is_may_change_but_not_the_recipe():
    moved = make_config(data_dir="/elsewhere", augment_workers=3, download=True)
    assert workdir.changed_settings(saved(), moved) == []
    stronger = make_config()
    stronger.augment.hflip_p = 0.5
    assert workdir.changed_settings(saved(), stronger) == ["augment.hflip_p: 0.2 -> 0.5"]


def test_a_users_file_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = workdir.config_json(make_config(model="nets/mine.py:Net"))
    assert values["model"] == f"{tmp_path / 'nets' / 'mine.py'}:Net"
