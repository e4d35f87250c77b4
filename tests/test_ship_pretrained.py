"""scripts/ship_pretrained.py: a finished run becomes a pretrained model that evaluates alone."""

import json
import shutil

import pytest

from cifar_flax import evaluation, train
from cifar_flax.config_lib import import_file
from cifar_flax.errors import CifarFlaxError
from tests.conftest import REPO_ROOT, make_config, synthetic_data_dir


@pytest.fixture(scope="module")
def script():
    # Importing the script defines its absl flags: once per test session.
    return import_file(REPO_ROOT / "scripts" / "ship_pretrained.py")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A short finished run of its own (2 epochs of 2 steps) and its log."""
    workdir = tmp_path_factory.mktemp("finished")
    train.train_and_evaluate(make_config(train_split="train[:128]"), str(workdir))
    log = tmp_path_factory.mktemp("logs") / "run.log"
    log.write_text("epoch 1/2 ...\n")
    return workdir, log


def test_ships_only_the_final_checkpoint_and_evaluates_it(script, finished_run, tmp_path, capsys):
    workdir, log = finished_run
    dest = tmp_path / "pretrained" / "s7_lite"
    shipped = script.ship(workdir, dest, log, synthetic_data_dir())
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [p.name for p in (dest / "checkpoints").iterdir()] == [str(records[-1]["step"])]
    files = ("metrics.jsonl", "config.json", "curves.png", "train.log", "eval.json")
    for name in (*files, "misclassified.png"):
        assert (dest / name).is_file(), name
    assert shipped["final_accuracy"] == records[-1]["eval_accuracy"]
    assert (shipped["model"], shipped["params"], shipped["epochs"]) == ("s7_lite", 97_284, 2)
    assert shipped["ran_on"] == [records[0]["device"]]
    assert shipped["recipe"] == "Adam, step 0.01, wd 0.0001, clip 0.1, bs 64"
    assert json.loads((dest / "results.json").read_text()) == shipped

    # The shipped directory alone gives the same accuracy, through the default (latest) choice,
    # and rewrites the shipped eval.json unchanged (no diff in a repo after the README command).
    shipped_eval = (dest / "eval.json").read_text()
    capsys.readouterr()
    report = evaluation.evaluate(make_config(), str(dest))
    assert report["accuracy"] == records[-1]["eval_accuracy"]
    assert (dest / "eval.json").read_text() == shipped_eval
    row = script.table_row(dest, shipped)
    assert f"**{100 * records[-1]['eval_accuracy']:.2f}%**" in row and "97,284" in row


def test_an_unfinished_run_is_refused(script, finished_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run[0], workdir)
    shutil.rmtree(workdir / "checkpoints" / "4")  # as if killed during the second epoch
    with pytest.raises(CifarFlaxError, match=r"has not finished \(1 of 2 epochs\)"):
        script.ship(workdir, tmp_path / "dest", None, synthetic_data_dir())
    assert not (tmp_path / "dest").exists()


def test_a_dest_in_use_and_missing_data_are_refused_without_harm(script, finished_run, tmp_path):
    workdir, log = finished_run
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(CifarFlaxError, match="not empty"):
        script.ship(workdir, used, log, synthetic_data_dir())
    assert [p.name for p in used.iterdir()] == ["keep.txt"]

    fresh = tmp_path / "fresh"
    with pytest.raises(CifarFlaxError):
        script.ship(workdir, fresh, log, str(tmp_path / "no_data"))
    assert not fresh.exists()
    assert len(list((workdir / "checkpoints").iterdir())) == 2
