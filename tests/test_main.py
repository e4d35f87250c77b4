"""The command line: summary for every config form, default workdirs, one-line errors for bad
input; and, in the end-to-end tier, whole runs killed, signalled, split over two processes."""

import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from cifar_flax import main
from cifar_flax.config_lib import load_config
from cifar_flax.models import conv
from tests.conftest import REPO_ROOT, cli, e2e, synthetic_data_dir, with_xla_flags

EXPECTED = {
    ("configs/s7.py",): ("97,284", "69 (109"),
    ("configs/s7.py:s7_dwsep",): ("170,304", "83 (107"),
    ("configs/s7.py:s7_dilated_stride",): ("98,180", "97 (121"),
    ("configs/s9.py",): ("178,178", "47 (59"),
    ("configs/s6.py",): ("187,418", "31 (35"),
    ("configs/s7.py", "--config.model=s9_inverted_residual"): ("178,178", "47 (59"),
}


@pytest.mark.parametrize(("args", "expected"), EXPECTED.items())
def test_summary(repo_root, capsys, args, expected):
    spec, *overrides = args
    config = load_config(repo_root / spec)
    for override in overrides:
        key, _, value = override.removeprefix("--config.").partition("=")
        config[key] = value
    main.run("summary", config, None)
    params, field = expected
    assert f"Total params: {params}\nReceptive field: {field} including the final pooling)\n" in (
        capsys.readouterr().out
    )


@e2e
def test_summary_from_the_command_line(repo_root):
    result = cli(repo_root, "--config=configs/s7.py", "--mode=summary")
    assert result.returncode == 0, result.stderr
    assert "Total params: 97,284\nReceptive field: 69 (109 including" in result.stdout
    assert "Unable to initialize backend" not in result.stderr
    assert not result.stdout.startswith("Workdir:")  # the summary writes nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config.model=resnet"], "error: unknown model 'resnet'; choose one of: s7_dwsep,"),
        (["--config.modle=s7_lite"], "error: unknown config key 'modle'; Did you mean \"model\""),
        (["--config.batch_size=many"], "error: flag --config.batch_size=many: invalid literal"),
    ],
)
@e2e
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
@e2e
def test_bad_config_file_is_one_line(repo_root, config, message):
    result = cli(repo_root, f"--config={config}", "--mode=summary")
    assert result.returncode != 0
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@e2e
def test_data_mode_prints_counts_and_statistics_and_writes_the_grid(repo_root, tmp_path):
    from cifar_flax import input_pipeline

    data_dir = synthetic_data_dir()
    result = cli(
        repo_root,
        "--config=configs/s7.py",
        f"--workdir={tmp_path}",
        "--mode=data",
        f"--config.data_dir={data_dir}",
        "--config.train_split=train[:512]",
        "--config.eval_split=test[:256]",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["class", "train[:512]", "test[:256]"]
    assert lines[11].split() == ["total", "512", "256"]
    assert sum(int(line.split()[1]) for line in lines[1:11]) == 512
    mean, std = input_pipeline.channel_stats(input_pipeline.load_split(data_dir, "train[:512]"))
    values = ", ".join(f"{v:.4f}" for v in mean), ", ".join(f"{v:.4f}" for v in std)
    assert lines[12] == f"Train mean: ({values[0]}) std: ({values[1]})"
    assert "oneDNN" not in result.stderr and "I0000" not in result.stderr, result.stderr
    assert (tmp_path / "augmented_samples.png").stat().st_size > 10_000


@e2e
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
@e2e
def test_train_and_eval_errors_are_one_line(repo_root, tmp_path, args, message):
    result = cli(repo_root, "--config=configs/s7.py", f"--workdir={tmp_path}", *args)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr


# --- Preemption, several processes, and bad input against a trained workdir -------------------


def small_run():
    """The command-line flags of a short run on the synthetic data."""
    return (
        "--config=configs/s7.py",
        f"--config.data_dir={synthetic_data_dir()}",
        "--config.train_split=train[:512]",
        "--config.eval_split=test[:256]",
        "--config.batch_size=64",
        "--config.augment_workers=0",
        "--config.download=False",
    )


TIMINGS = ("epoch_seconds", "train_images_per_second")


def start(repo_root, workdir, *args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "cifar_flax.main", *small_run(), f"--workdir={workdir}", *args],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process, timeout=600):
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def metrics(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in lines]


def step_dirs(workdir):
    return sorted((workdir / "checkpoints").iterdir()) if (workdir / "checkpoints").exists() else []


def wait_for_first_checkpoint(process, workdir):
    deadline = time.monotonic() + 300
    while not any(path.name.isdigit() for path in step_dirs(workdir)):
        assert process.poll() is None, finish(process).stderr
        assert time.monotonic() < deadline
        time.sleep(0.05)


def fingerprint(directory):
    """Every file under `directory` with its content hash: equal before and after = untouched."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """An uninterrupted 3-epoch run of the small config: the reference for resumed runs."""
    workdir = tmp_path_factory.mktemp("three_epochs")
    result = finish(start(REPO_ROOT, workdir, "--config.num_epochs=3"))
    assert result.returncode == 0, result.stderr
    return workdir


@e2e
def test_killed_at_a_random_moment_then_restarted_ends_as_if_never_killed(
    repo_root, tmp_path, three_epochs
):
    delay = random.uniform(0.0, 1.0)  # epochs 2 and 3 take several seconds on 2 cores
    process = start(repo_root, tmp_path, "--config.num_epochs=3")
    wait_for_first_checkpoint(process, tmp_path)
    time.sleep(delay)
    assert process.poll() is None, f"finished before the kill at +{delay:.2f}s"
    process.kill()  # SIGKILL: nothing runs after it
    process.wait()
    result = finish(start(repo_root, tmp_path, "--config.num_epochs=3"))
    assert result.returncode == 0, result.stderr
    assert "Resuming from the checkpoint after epoch" in result.stdout
    assert metrics(tmp_path) == metrics(three_epochs), f"killed at +{delay:.2f}s"
    for path in step_dirs(tmp_path):  # no half-written checkpoint is left behind
        assert path.name.isdigit(), path
        assert {"model", "train", "meta"} <= {item.name for item in path.iterdir()}


@e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_a_checkpoint_and_exit_with_a_message(
    repo_root, tmp_path, three_epochs, signum
):
    process = start(repo_root, tmp_path, "--config.num_epochs=3")
    wait_for_first_checkpoint(process, tmp_path)
    time.sleep(0.5)  # into epoch 2
    process.send_signal(signum)
    stopped = finish(process)
    assert stopped.returncode == 128 + signum, stopped.stderr
    lines = stopped.stderr.strip().splitlines()
    name = signal.Signals(signum).name
    assert lines[-1].startswith(f"{name}: training stopped;"), lines[-1]
    assert lines[-1].endswith("to resume"), lines[-1]
    # Only our two lines: no traceback, nor orbax's warning about the checkpoint's missing metrics.
    assert all(line.startswith(name) for line in lines), stopped.stderr
    assert len(metrics(tmp_path)) < 3
    result = finish(start(repo_root, tmp_path, "--config.num_epochs=3"))
    assert result.returncode == 0, result.stderr
    assert metrics(tmp_path) == metrics(three_epochs)


def free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@e2e
@pytest.mark.parametrize(
    "augment_on",
    [
        "host",
        pytest.param(
            "device",
            marks=pytest.mark.skipif(
                conv.JAXLIB >= (0, 12),
                reason="two processes augmenting on the devices hang on jax 0.12 (gloo), "
                "under investigation",
            ),
        ),
    ],
)
def test_two_processes_train_like_one_process_over_the_same_devices(
    repo_root, tmp_path, augment_on
):
    """2 processes x 1 CPU device (gloo collectives) against 1 process x 2 CPU devices: each
    process feeds half of every global batch (augments it on the host, or its device computes
    those rows), process 0 writes the metrics."""
    two_epochs = ("--config.num_epochs=2", f"--config.augment_on={augment_on}")
    one_process_env = with_xla_flags("--xla_force_host_platform_device_count=2")
    reference = finish(start(repo_root, tmp_path / "one", *two_epochs, env=one_process_env))
    assert reference.returncode == 0, reference.stderr
    address = f"localhost:{free_port()}"
    processes = [
        start(
            repo_root,
            tmp_path / "two",
            *two_epochs,
            f"--coordinator_address={address}",
            "--num_processes=2",
            f"--process_id={index}",
        )
        for index in range(2)
    ]
    results = [finish(process) for process in processes]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert results[0].stdout.count("epoch ") == 2 and "epoch " not in results[1].stdout
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["epoch"] for r in two] == [1, 2]
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], str):  # the device
                assert b[key] == a[key], key
            else:
                assert b[key] == pytest.approx(a[key], rel=1e-5), key


def read_only_directory(tmp_path):
    """A workdir nobody may create: chmod for a user, sysfs for root (chmod does not stop root)."""
    if os.geteuid() == 0:
        return pathlib.Path("/sys/cifar-flax-run")
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    return directory / "run"


def damaged_data_dir(tmp_path):
    """A copy of the prepared data whose test TFRecord file is cut short."""
    source = pathlib.Path(synthetic_data_dir()) / "cifar10" / "3.0.2"
    target = tmp_path / "tfds" / "cifar10" / "3.0.2"
    target.mkdir(parents=True)
    for path in source.iterdir():
        if "test.tfrecord" in path.name:
            (target / path.name).write_bytes(path.read_bytes()[:100_000])
        elif "tfrecord" in path.name:
            (target / path.name).symlink_to(path)
        else:
            shutil.copy(path, target / path.name)
    return target.parents[1]


def rewrite_meta(workdir, change):
    for meta in (workdir / "checkpoints").glob("*/meta/metadata"):
        meta.write_text(json.dumps(change(json.loads(meta.read_text()))))


def cut_arrays(workdir):
    for item in (workdir / "checkpoints").glob("*/model"):
        for path in item.rglob("*"):
            if path.is_file() and "metadata" not in path.name:
                path.write_bytes(path.read_bytes()[:50])


BAD_INPUT = {
    "unknown config key": (["--config.modle=x"], None, "unknown config key 'modle'"),
    "another model's workdir": (
        ["--config.model=s7_dwsep"],
        None,
        "holds a run with other settings (model: 's7_lite' -> 's7_dwsep'); pass --workdir=DIR",
    ),
    "read-only workdir": (["--workdir={readonly}"], None, "cannot write to --workdir="),
    "truncated TFRecord": (
        ["--mode=eval", "--config.eval_split=test", "--config.data_dir={damaged}"],
        None,
        "cannot read split 'test' from",
    ),
    "checkpoint of a newer format": (
        ["--mode=eval"],
        lambda workdir: rewrite_meta(workdir, lambda meta: {**meta, "format": 99}),
        "has format 99, written by a newer cifar-flax; this version reads formats 1 to 3",
    ),
    "best of a run on the test set": (
        ["--mode=eval", "--checkpoint=best"],
        None,
        "keeps no best checkpoint: its run evaluates on 'test[:256]'",
    ),
    "checkpoint with cut arrays": (["--mode=eval"], cut_arrays, "cannot be restored"),
    "checkpoint of a model that does not fit": (
        ["--mode=eval"],
        lambda workdir: rewrite_meta(
            workdir, lambda meta: {**meta, "model": "s9_inverted_residual"}
        ),
        "cannot be restored",
    ),
    "split tfds rejects": (["--config.eval_split=test[:abc]"], None, "bad split 'test[:abc]'"),
    "batch size over 8 devices": (
        ["--config.batch_size=60", "XLA_FLAGS=--xla_force_host_platform_device_count=8"],
        None,
        "batch_size 60 must be a multiple of the 8 devices",
    ),
    "missing data": (["--config.data_dir={empty}"], None, "CIFAR-10 is not prepared in"),
    "impossible process id": (
        ["--num_processes=2", "--process_id=5"],
        None,
        "cannot start the multi-process run",
    ),
}


@e2e
@pytest.mark.parametrize(("args", "damage", "message"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_ends_in_one_line_and_keeps_the_checkpoints(
    repo_root, tmp_path, three_epochs, args, damage, message
):
    workdir = tmp_path / "run"
    shutil.copytree(three_epochs, workdir)
    if damage:
        damage(workdir)
    before = fingerprint(workdir / "checkpoints")
    places = dict(
        readonly=read_only_directory(tmp_path),
        damaged=damaged_data_dir(tmp_path) if "{damaged}" in " ".join(args) else None,
        empty=tmp_path / "empty",
    )
    env = dict(os.environ)
    flags_ = []
    for arg in args:
        if arg.startswith("XLA_FLAGS="):
            env = with_xla_flags(arg.removeprefix("XLA_FLAGS="))
        else:
            flags_.append(arg.format(**places))
    result = finish(start(repo_root, workdir, "--config.num_epochs=3", *flags_, env=env))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert fingerprint(workdir / "checkpoints") == before


@e2e
def test_without_workdir_a_run_trains_resumes_and_evaluates_in_its_default_one(tmp_path):
    run = (f"--config={REPO_ROOT / 'configs' / 's7.py'}", *small_run()[1:], "--config.num_epochs=1")
    first = cli(tmp_path, *run)  # from another directory: runs/ is made there
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].startswith("Workdir: runs/s7 ")
    assert (tmp_path / "runs" / "s7" / "checkpoints").is_dir()
    evaluated = cli(tmp_path, *run, "--mode=eval")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Test accuracy: " in evaluated.stdout
    before = fingerprint(tmp_path / "runs" / "s7" / "checkpoints")
    other = cli(tmp_path, *run, "--config.train_split=train[:1024]")
    assert other.returncode != 0
    last = other.stderr.strip().splitlines()[-1]
    assert last.startswith("error: runs/s7 holds a run with other settings (train_split:")
    assert "--workdir=DIR" in last and "Traceback" not in other.stderr
    assert fingerprint(tmp_path / "runs" / "s7" / "checkpoints") == before


@e2e
def test_the_example_network_trains_and_evaluates_from_the_command_line(repo_root, tmp_path):
    model = "--config.model=examples/my_net.py:MyNet"
    trained = finish(start(repo_root, tmp_path / "mine", model, "--config.num_epochs=1"))
    assert trained.returncode == 0, trained.stderr
    evaluated = cli(repo_root, *small_run(), f"--workdir={tmp_path / 'mine'}", "--mode=eval")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "MyNet" in evaluated.stdout and "Test accuracy: " in evaluated.stdout
