"""Short runs on the synthetic CIFAR-10: learning, checkpoints, eval, resume, errors.

The tests that use the `two_epochs` run live here, whichever module they check, so that one
test worker trains it once."""

import json
import os
import shutil
import signal

import pytest

from cifar_flax import checkpoints, evaluation, train
from cifar_flax.errors import CifarFlaxError, NonFiniteLossError, RunInterruptedError
from tests.conftest import make_config


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_training_learns_and_writes_everything(two_epochs):
    workdir, record = two_epochs
    first, second = records(workdir)
    assert second == record
    assert second["train_loss"] < first["train_loss"]
    # Chance is 0.1 (sd 0.02 over 256 images). Under the seed's strong augmentation two epochs
    # reach 0.43-0.58 across seeds, and 0.23 with jax 0.7.2 and OpenCV 5.1: it learns, slowly.
    assert second["eval_accuracy"] > 0.2
    assert (first["epoch"], second["epoch"], second["step"]) == (1, 2, 16)  # 512 // 64 per epoch
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [8, 16]  # named by the step
    assert (workdir / "curves.png").stat().st_size > 10_000
    assert any((workdir / "tensorboard").iterdir())
    assert second["eval_split"] == "test[:256]"
    written = json.loads((workdir / "config.json").read_text())
    assert written == json.loads(make_config().to_json())


def test_a_run_prints_its_recipe_first(tmp_path, capsys):
    train.train_and_evaluate(make_config(num_epochs=1), str(tmp_path))
    out = capsys.readouterr().out
    assert out.index("Recipe:") < out.index("epoch   1/1")
    shown = ["optimizer = adam", "lr_schedule = step", "step_schedule.step_size = 2"]
    for line in [*shown, "batch_size = 64", "train_split = train[:512]"]:
        assert f"  {line}\n" in out
    assert "onecycle" not in out and "data_dir" not in out  # unused, or not about the recipe


def test_eval_defaults_to_the_latest_checkpoint_and_keeps_no_best_on_the_test_set(two_epochs):
    workdir, _ = two_epochs
    assert evaluation.evaluate(make_config(), str(workdir))["step"] == 16
    with pytest.raises(CifarFlaxError, match="keeps no best checkpoint: its run evaluates on"):
        evaluation.evaluate(make_config(), str(workdir), which="best")


def as_format(meta, old_format):
    """`meta` as a checkpoint of `old_format` held it."""
    old = {k: v for k, v in meta.items() if not k.startswith("epoch_") and k != "format"}
    if "eval_accuracy" in old:
        old["test_accuracy"] = old.pop("eval_accuracy")
    if old_format == 2:
        old.update(format=2, epoch_losses=[], epoch_corrects=[])
    return old


@pytest.mark.parametrize("old_format", [1, 2])
def test_checkpoints_of_earlier_formats_evaluate_and_resume(
    two_epochs, tmp_path, capsys, old_format
):
    workdir, record = two_epochs
    copy = shutil.copytree(workdir, tmp_path / "old")
    for path in copy.glob("checkpoints/*/meta/metadata"):
        path.write_text(json.dumps(as_format(json.loads(path.read_text()), old_format)))
    report = evaluation.evaluate(make_config(), str(copy))
    assert (report["epoch"], report["correct"]) == (2, record["eval_correct"])
    assert train.train_and_evaluate(make_config(), str(copy)) == record
    assert "already holds all 2 epochs" in capsys.readouterr().out


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


def test_a_checkpoint_that_does_not_fit_its_model_is_one_clear_error(two_epochs, tmp_path):
    workdir, _ = two_epochs
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    meta = copy / "checkpoints" / "16" / "meta" / "metadata"
    meta.write_text(meta.read_text().replace('"s7_lite"', '"s6_grouped"'))
    with pytest.raises(CifarFlaxError, match="cannot be restored") as error:
        evaluation.evaluate(make_config(), str(copy), which="latest")
    assert "\n" not in str(error.value)


def test_eval_without_checkpoints(tmp_path):
    with pytest.raises(CifarFlaxError, match="no checkpoint in"):
        evaluation.evaluate(make_config(), str(tmp_path))


def test_non_finite_loss_stops_and_keeps_earlier_checkpoints(two_epochs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(two_epochs[0], copy)
    exploding = make_config(num_epochs=4)  # the LR explodes after epoch 2
    with pytest.raises(NonFiniteLossError, match=r"at step \d+ \(epoch 3\)"):
        train.train_and_evaluate(exploding, str(copy))
    manager = checkpoints.open_manager(copy, create=False)
    assert manager.all_steps() == [8, 16]
    manager.close()
    report = evaluation.evaluate(make_config(), str(copy), which="latest")
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
    assert record["epoch"] == 2 and record["eval_accuracy"] > 0.2
    monkeypatch.chdir(tmp_path / "nets")  # the checkpoint knows where the class is
    report = evaluation.evaluate(make_config(), str(tmp_path / "run"), which="latest")
    assert report["model"] == f"{tmp_path / 'nets' / 'mine.py'}:Net"
    assert report["correct"] == record["eval_correct"]


def test_augmenting_on_the_devices_a_run_stopped_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
    on_devices = dict(augment_on="device")
    uninterrupted = train.train_and_evaluate(make_config(**on_devices), str(tmp_path / "whole"))
    real_jit_train_step = train.jit_train_step

    def signal_at_step_11(*args, **kwargs):  # epoch 2's third step
        step = real_jit_train_step(*args, **kwargs)

        def counted(state, batch):
            if int(state.step) == 10:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(state, batch)

        return counted

    monkeypatch.setattr(train, "jit_train_step", signal_at_step_11)
    with pytest.raises(RunInterruptedError, match="step 11 "):
        train.train_and_evaluate(make_config(**on_devices), str(tmp_path / "stopped"))
    monkeypatch.setattr(train, "jit_train_step", real_jit_train_step)
    resumed = train.train_and_evaluate(make_config(**on_devices), str(tmp_path / "stopped"))
    timing = ("epoch_seconds", "train_images_per_second")
    assert resumed == {**uninterrupted, **{key: resumed[key] for key in timing}}
    whole, stopped = records(tmp_path / "whole"), records(tmp_path / "stopped")
    assert [{k: v for k, v in r.items() if k not in timing} for r in stopped] == [
        {k: v for k, v in r.items() if k not in timing} for r in whole
    ]
