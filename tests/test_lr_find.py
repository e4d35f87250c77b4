"""The LR range test: its suggestion, its early stop, and a workdir it leaves as it was."""

import json
import re
import shutil

import numpy as np
import pytest

from cifar_flax import lr_find
from cifar_flax.errors import CifarFlaxError
from tests.conftest import cli, e2e, make_config, synthetic_data_dir


def range_test_config(start, stop, steps):
    config = make_config(optimizer="sgd", nesterov=True, momentum=0.9, grad_clip_value=None)
    config.lr_find.update(dict(start=start, stop=stop, steps=steps))
    return config


def files(workdir):
    return {
        path.relative_to(workdir): path.read_bytes()
        for path in sorted(workdir.rglob("*"))
        if path.is_file()
    }


def test_the_suggestion_lies_inside_the_range_below_divergence_and_the_run_is_untouched(
    two_epochs, tmp_path, capsys
):
    workdir = tmp_path / "run"
    shutil.copytree(two_epochs[0], workdir)
    before = files(workdir)
    result = lr_find.lr_find(range_test_config(1e-4, 1e3, 70), str(workdir))
    after = files(workdir)
    written = {lr_find.RESULT_FILE, lr_find.PLOT_FILE}
    assert {str(path) for path in after.keys() - before.keys()} == written
    assert all(after[path] == content for path, content in before.items())  # byte for byte
    assert result == json.loads((workdir / lr_find.RESULT_FILE).read_text())
    learning_rates = np.asarray(result["learning_rates"])
    assert learning_rates[0] == pytest.approx(1e-4, rel=1e-3) and learning_rates[-1] < 1e3
    assert result["diverged"]  # SGD does not learn at LR 1,000
    suggestion = result["suggested_learning_rate"]
    assert 1e-4 < suggestion < learning_rates[-1]  # inside, and below where it diverged
    smoothed = [loss for loss in result["smoothed_losses"] if loss is not None]
    assert min(smoothed) < 0.9 * smoothed[0]  # it learnt
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("Suggested OneCycle peak LR: ")
    assert line.endswith(f"--config.learning_rate={suggestion:.2g}")


def test_a_range_that_diverges_at_once_stops_early_with_one_line(tmp_path):
    with pytest.raises(CifarFlaxError, match=r"lower --config.lr_find.start$") as raised:
        lr_find.lr_find(range_test_config(1e3, 1e6, 50), str(tmp_path))
    assert int(re.search(r"update (\d+):", str(raised.value))[1]) < 50
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("start", 20.0, "lr_find.start must be positive and below lr_find.stop"),
        ("steps", 1, "lr_find.steps must be at least 2"),
        ("diverge", 1.0, "lr_find.diverge must be above 1"),
    ],
)
def test_a_range_that_cannot_run_is_one_line(tmp_path, key, value, message):
    config = range_test_config(1e-4, 10.0, 20)
    config.lr_find[key] = value
    with pytest.raises(CifarFlaxError, match=message):
        lr_find.lr_find(config, str(tmp_path))


def test_the_range_grows_by_a_constant_factor_from_start_to_stop():
    schedule = lr_find.exponential_range(1e-4, 1.0, 5)
    values = np.array([float(schedule(step)) for step in range(5)])
    np.testing.assert_allclose(values, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-6)


def test_the_smoothed_loss_is_bias_corrected():
    np.testing.assert_allclose(lr_find.smoothed([2.0, 2.0, 2.0], 0.98), [2.0, 2.0, 2.0])
    rising = lr_find.smoothed([1.0, 3.0], 0.5)  # (0.5 * 1 + 0.5 * 3) weighted back to 1
    np.testing.assert_allclose(rising, [1.0, (0.25 * 1 + 0.5 * 3) / 0.75])


@e2e
def test_from_the_command_line_it_prints_the_suggestion_and_writes_only_its_files(
    repo_root, tmp_path
):
    data = f"--config.data_dir={synthetic_data_dir()}"
    small = ("--config.train_split=train[:512]", "--config.augment_workers=0")
    args = (f"--workdir={tmp_path}", "--mode=lr_find", data, *small)
    result = cli(repo_root, "--config=configs/s7.py", *args, "--config.lr_find.steps=40")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"Suggested OneCycle peak LR: \S+ \(a tenth of \S+, where the smoothed loss was lowest\); "
        r"train with --config.learning_rate=\S+",
        result.stdout.splitlines()[-1],
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lr_find.json", "lr_find.png"]
    bad = cli(repo_root, "--config=configs/s7.py", *args, "--config.lr_find.steps=1")
    assert bad.returncode != 0
    assert bad.stderr.strip() == "error: bad config: lr_find.steps must be at least 2"
