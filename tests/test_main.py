"""The command line: summary for every config form, one-line errors for bad input."""

import subprocess
import sys

import pytest

from tests.conftest import DATA_DIR, needs_data

EXPECTED = {
    ("configs/s7.py",): ("97,284", "69 (109"),
    ("configs/s7.py:s7_dwsep",): ("170,304", "83 (107"),
    ("configs/s7.py:s7_dilated_stride",): ("98,180", "97 (121"),
    ("configs/s9.py",): ("178,178", "47 (59"),
    ("configs/s6.py",): ("187,418", "31 (35"),
    ("configs/s7.py", "--config.model=s9_inverted_residual"): ("178,178", "47 (59"),
}


def cli(repo_root, *args):
    return subprocess.run(
        [sys.executable, "-m", "cifar_flax.main", *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(("args", "expected"), EXPECTED.items())
def test_summary(repo_root, tmp_path, args, expected):
    config, *overrides = args
    result = cli(
        repo_root, f"--config={config}", f"--workdir={tmp_path}", "--mode=summary", *overrides
    )
    assert result.returncode == 0, result.stderr
    params, field = expected
    assert f"Total params: {params}\nReceptive field: {field} including the final pooling)\n" in (
        result.stdout
    )
    assert "Unable to initialize backend" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config.model=resnet"], "error: unknown model 'resnet'; choose one of: s7_dwsep,"),
        (["--config.modle=s7_lite"], "error: unknown config key 'modle'; Did you mean \"model\""),
        (["--config.batch_size=many"], "error: flag --config.batch_size=many: invalid literal"),
        (["--mode=train"], "error: --mode=train writes to a directory: pass --workdir=DIR"),
    ],
)
def test_bad_input_is_one_line(repo_root, args, message):
    result = cli(repo_root, "--config=configs/s7.py", "--mode=summary", *args)
    assert result.returncode != 0
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("configs/s7.py:nope", "error: unknown config variant 'nope'"),
        ("configs/missing.py", "error: [Errno 2] No such file or directory: 'configs/missing.py'"),
    ],
)
def test_bad_config_file_is_one_line(repo_root, config, message):
    result = cli(repo_root, f"--config={config}", "--mode=summary")
    assert result.returncode != 0
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@needs_data
def test_data_mode_prints_counts_and_statistics_and_writes_the_grid(repo_root, tmp_path):
    result = cli(
        repo_root,
        "--config=configs/s7.py",
        f"--workdir={tmp_path}",
        "--mode=data",
        f"--config.data_dir={DATA_DIR}",
        "--config.train_split=train[:512]",
        "--config.eval_split=test[:256]",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["class", "train[:512]", "test[:256]"]
    assert lines[11].split() == ["total", "512", "256"]
    assert sum(int(line.split()[1]) for line in lines[1:11]) == 512
    assert lines[12].startswith("Train mean: (0.4") and " std: (0.2" in lines[12]
    assert (tmp_path / "augmented_samples.png").stat().st_size > 10_000


def test_data_mode_without_data_is_one_clear_line(repo_root, tmp_path):
    result = cli(
        repo_root,
        "--config=configs/s7.py",
        f"--workdir={tmp_path / 'w'}",
        "--mode=data",
        f"--config.data_dir={tmp_path / 'nothing'}",
        "--config.download=False",
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: CIFAR-10 is not prepared in")
    assert "--config.data_dir" in last and "scripts/prepare_cifar10.py" in last
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode=eval"], "error: no checkpoint in"),
        (["--mode=train", "--config.batch_size=0"], "error: bad config: batch_size must be"),
        (["--mode=train", "--config.learning_rate=-1"], "error: bad config: learning_rate must"),
        (["--mode=train", "--config.num_epochs=0"], "error: bad config: num_epochs must be"),
    ],
)
def test_train_and_eval_errors_are_one_line(repo_root, tmp_path, args, message):
    result = cli(repo_root, "--config=configs/s7.py", f"--workdir={tmp_path}", *args)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
