"""Short real runs on slices of ../shared/data/tfds: learning, checkpoints, eval, resume, errors."""

import json
import os
import shutil
import signal

import numpy as np
import pytest

from cifar_flax import checkpoints, train
from cifar_flax.errors import CifarFlaxError, RunInterruptedError
from tests.conftest import make_config, needs_data

pytestmark = needs_data


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_training_learns_and_writes_everything(two_epochs):
    workdir, record = two_epochs
    first, second = records(workdir)
    assert second == record
    assert second["train_loss"] < first["train_loss"]
    assert (first["epoch"], second["epoch"], second["step"]) == (1, 2, 16)  # 512 // 64 per epoch
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [8, 16]  # named by the step
    assert (workdir / "curves.png").stat().st_size > 10_000
    assert any((workdir / "tensorboard").iterdir())


def test_eval_reproduces_the_last_test_accuracy(two_epochs, capsys):
    workdir, record = two_epochs
    report = train.evaluate(make_config(), str(workdir), which="latest")
    assert report["correct"] == record["test_correct"] and report["count"] == 256
    assert report["accuracy"] == record["test_accuracy"]
    out = capsys.readouterr().out
    percent = 100 * record["test_correct"] / 256
    assert f"Test accuracy: {percent:.2f}% ({record['test_correct']}/256)" in out
    saved = json.loads((workdir / "eval.json").read_text())
    assert np.array(saved["confusion_matrix"]).sum() == 256
    assert (workdir / "misclassified.png").exists()


def test_eval_on_a_slice_of_the_training_split_calls_it_val(two_epochs, capsys):
    workdir, _ = two_epochs
    report = train.evaluate(make_config(eval_split="train[:128]"), str(workdir), which="latest")
    assert (report["split"], report["count"]) == ("train[:128]", 128)
    out = capsys.readouterr().out
    assert f"Val accuracy: {100 * report['accuracy']:.2f}% ({report['correct']}/128)" in out
    assert "Test accuracy" not in out


def test_eval_needs_only_the_model_name_from_the_checkpoint(two_epochs):
    workdir, record = two_epochs
    other = make_config(model="s6_grouped", batch_size=32)  # another config entirely
    other.normalize.mean = (0.5, 0.5, 0.5)
    report = train.evaluate(other, str(workdir), which="latest")
    assert (report["model"], report["correct"]) == ("s7_lite", record["test_correct"])


def test_resume_equals_an_uninterrupted_run(two_epochs, tmp_path):
    _, uninterrupted = two_epochs
    train.train_and_evaluate(make_config(num_epochs=1), str(tmp_path))
    resumed = train.train_and_evaluate(make_config(), str(tmp_path))
    assert resumed == {
        **uninterrupted,
        **{k: resumed[k] for k in ("epoch_seconds", "train_images_per_second")},
    }
    assert [r["epoch"] for r in records(tmp_path)] == [1, 2]


def test_finished_run_is_not_trained_again(two_epochs, capsys):
    workdir, record = two_epochs
    again = train.train_and_evaluate(make_config(), str(workdir))
    assert again == record
    assert "already holds all 2 epochs" in capsys.readouterr().out


def test_checkpoints_of_another_model_are_refused(two_epochs, tmp_path):
    workdir, _ = two_epochs
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    with pytest.raises(CifarFlaxError, match="holds checkpoints of s7_lite, not s7_dwsep"):
        train.train_and_evaluate(make_config(model="s7_dwsep"), str(copy))


def test_a_checkpoint_that_does_not_fit_its_model_is_one_clear_error(two_epochs, tmp_path):
    workdir, _ = two_epochs
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    meta = copy / "checkpoints" / "16" / "meta" / "metadata"
    meta.write_text(meta.read_text().replace('"s7_lite"', '"s6_grouped"'))
    with pytest.raises(CifarFlaxError, match="cannot be restored") as error:
        train.evaluate(make_config(), str(copy), which="latest")
    assert "\n" not in str(error.value)


def test_eval_without_checkpoints(tmp_path):
    with pytest.raises(CifarFlaxError, match="no checkpoint in"):
        train.evaluate(make_config(), str(tmp_path))


def test_non_finite_loss_stops_and_keeps_earlier_checkpoints(two_epochs, tmp_path):
    workdir, _ = two_epochs
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    exploding = make_config(num_epochs=4, learning_rate=1e12)
    with pytest.raises(train.NonFiniteLossError, match=r"at step \d+ \(epoch 3\)"):
        train.train_and_evaluate(exploding, str(copy))
    manager = checkpoints.open_manager(copy, create=False)
    assert manager.all_steps() == [8, 16]
    manager.close()
    report = train.evaluate(make_config(), str(copy), which="latest")
    assert report["epoch"] == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(batch_size=0), "batch_size must be at least 1"),
        (dict(learning_rate=-0.1), "learning_rate must be positive"),
        (dict(num_epochs=0), "num_epochs must be at least 1"),
        (dict(batch_size=1024), "fewer than one batch of 1024"),
        (dict(model="vgg"), "unknown model 'vgg'"),
    ],
)
def test_bad_values_are_refused_before_any_work(tmp_path, overrides, message):
    with pytest.raises(CifarFlaxError, match=message):
        train.train_and_evaluate(make_config(**overrides), str(tmp_path / "run"))


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CifarFlaxError, match="cannot write to --workdir"):
        train.train_and_evaluate(make_config(), str(blocker / "run"))


@pytest.mark.parametrize(("signal_during_eval", "finished"), [(1, False), (2, True)])
def test_a_signal_during_evaluation_stops_only_an_unfinished_run(
    tmp_path, monkeypatch, signal_during_eval, finished
):
    evaluations = []

    def evaluate_then_signal(*args, **kwargs):
        evaluations.append(None)
        if len(evaluations) == signal_during_eval:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate_split(*args, **kwargs)

    real_evaluate_split = train.evaluate_split
    monkeypatch.setattr(train, "evaluate_split", evaluate_then_signal)
    if finished:
        assert train.train_and_evaluate(make_config(), str(tmp_path))["epoch"] == 2
    else:
        with pytest.raises(RunInterruptedError, match=r"step 8 \(end of epoch 1\) is the latest"):
            train.train_and_evaluate(make_config(), str(tmp_path))


def test_epoch_line_names_a_validation_split_val(two_epochs):
    _, record = two_epochs
    assert " test loss " in train.format_epoch(record, 2, "test[:256]")
    line = train.format_epoch(record, 2, "train[45000:]")
    assert " val loss " in line and "test" not in line
    assert line.startswith("epoch   2/2  train loss ")
