"""scripts/benchmark.py: its figures and the data they came from, here and on a machine without
TensorFlow or Albumentations (as the lent GPU machines are)."""

import os
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT, e2e, synthetic_data_dir

TINY = ("--models=s7_dwsep", "--batch_size=16", "--steps=2", "--repeats=1", "--noinput")
HOST_PIPELINE_LIBRARIES = ("tensorflow", "tensorflow_datasets", "albumentations")


def benchmark(*args, pythonpath=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((*map(str, pythonpath), str(REPO_ROOT)))}
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def fields(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))


@e2e
def test_the_input_and_both_places_on_the_prepared_images():
    with_input = [arg for arg in TINY if arg != "--noinput"]
    lines = benchmark(*with_input, "--input_images=48", f"--data_dir={synthetic_data_dir()}")
    figures = fields(lines[-1])
    assert lines[-1].startswith("s7_dwsep batch=16 ")
    assert figures["data"] == "train[:48],train[:32]"  # the input's images, the epochs'
    for column in ("train", "eval", "input", "host_end_to_end", "device_end_to_end"):
        assert float(figures[f"{column}_img_per_s"]) > 0, column


@e2e
def test_without_the_host_pipelines_libraries_synthetic_images_feed_the_device(tmp_path):
    for name in HOST_PIPELINE_LIBRARIES:  # each import fails as where it is not installed
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n'
        )
    lines = benchmark(*TINY, pythonpath=[tmp_path])
    assert "# tensorflow is not installed: the host pipeline is not timed" in lines
    figures = fields(lines[-1])
    assert figures["data"] == "synthetic"
    assert float(figures["device_end_to_end_img_per_s"]) > 0
    assert "host_end_to_end_img_per_s" not in figures
