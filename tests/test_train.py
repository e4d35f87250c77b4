"""Short runs on the synthetic CIFAR-10: learning, checkpoints, eval, resume, errors."""

import json
import os
import shutil
import signal

import numpy as np
import pytest

from cifar_flax import checkpoints, train
from cifar_flax.errors import CifarFlaxError, RunInterruptedError
from tests.conftest import make_config


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_training_learns_and_writes_everything(two_epochs):
    workdir, record = two_epochs
    first, second = records(workdir)
    assert second == record
    assert second["train_loss"] < first["train_loss"]
    assert second["test_accuracy"] > 0.5  # chance is 0.1: the synthetic classes are learnable
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


@pytest.mark.parametrize(
    ("overrides", "change"),
    [
        (dict(model="s7_dwsep"), "model: 's7_lite' -> 's7_dwsep'"),
        (dict(optimizer="sgd"), "optimizer: 'adam' -> 'sgd'"),
        (dict(train_split="train[:1024]"), "train_split: 'train[:512]' -> 'train[:1024]'"),
        (dict(lr_schedule="onecycle", num_epochs=3), "lr_schedule: 'step' -> 'onecycle'"),
    ],
)
def test_a_workdir_of_other_settings_is_refused_untouched(two_epochs, tmp_path, overrides, change):
    workdir, _ = two_epochs
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    before = sorted((path, path.stat().st_mtime_ns) for path in copy.rglob("*"))
    with pytest.raises(CifarFlaxError, match="holds a run with other settings") as error:
        train.train_and_evaluate(make_config(**overrides), str(copy))
    message = str(error.value)
    assert change in message and "--workdir=DIR" in message and "\n" not in message
    assert sorted((path, path.stat().st_mtime_ns) for path in copy.rglob("*")) == before


def test_more_epochs_continue_a_run_only_where_the_schedule_does_not_depend_on_them():
    def saved(**overrides):
        return {"model": "s7_lite", "config": json.loads(make_config(**overrides).to_json())}

    assert train.changed_settings(saved(num_epochs=5), make_config()) == []
    onecycle = make_config(lr_schedule="onecycle")
    assert train.changed_settings(saved(num_epochs=5, lr_schedule="onecycle"), onecycle) == [
        "num_epochs: 5 -> 2"
    ]


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
    copy = tmp_path / "run"
    shutil.copytree(two_epochs[0], copy)
    exploding = make_config(num_epochs=4)  # the LR explodes after epoch 2
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


USER_NET = """
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, use_bias=False)(x))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Conv(16, (3, 3), feature_group_count=16)(x)
        x = nn.relu(nn.Conv(32, (3, 3), kernel_dilation=2)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))
"""


def test_a_users_own_network_trains_resumes_and_evaluates_from_anywhere(tmp_path, monkeypatch):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "mine.py").write_text(USER_NET)
    monkeypatch.chdir(tmp_path)
    config = make_config(model="nets/mine.py:Net", num_epochs=1)
    train.train_and_evaluate(config, str(tmp_path / "run"))
    record = train.train_and_evaluate(make_config(model="nets/mine.py:Net"), str(tmp_path / "run"))
    assert record["epoch"] == 2 and record["test_accuracy"] > 0.2
    monkeypatch.chdir(tmp_path / "nets")  # the checkpoint knows where the class is
    report = train.evaluate(make_config(), str(tmp_path / "run"), which="latest")
    assert report["model"] == f"{tmp_path / 'nets' / 'mine.py'}:Net"
    assert report["correct"] == record["test_correct"]
