"""The shipped checkpoints in pretrained/: each evaluates, offline on CPU, to its README figure.

This guards the checkpoints against changes to the networks or the checkpoint format: a shipped
model that no longer restores, or restores to other outputs, fails here.
"""

import json
import pathlib
import shutil

import pytest

from cifar_flax.config_lib import import_file
from tests.conftest import REAL_DATA_DIR, REPO_ROOT, cli, e2e, needs_real_data, with_xla_flags

# The --config each shipped model's README command evaluates it with.
CONFIGS = {
    "s7": "configs/s7.py",
    "s7_dwsep": "configs/s7.py:s7_dwsep",
    "s7_dilated_stride": "configs/s7.py:s7_dilated_stride",
    "s9": "configs/s9.py",
    "s9_seed": "configs/s9.py:seed",
    "s6": "configs/s6.py",
}
SHIPPED = sorted(path.parent.name for path in (REPO_ROOT / "pretrained").glob("*/results.json"))


def test_every_shipped_model_has_a_config():
    assert set(SHIPPED) <= set(CONFIGS), "add the new pretrained/ directory to CONFIGS"


@e2e
@needs_real_data
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_evaluates_to_its_readme_accuracy(name, tmp_path):
    shipped = json.loads((REPO_ROOT / "pretrained" / name / "results.json").read_text())
    # A copy: evaluation writes eval.json and misclassified.png into the directory it reads.
    workdir = shutil.copytree(REPO_ROOT / "pretrained" / name, tmp_path / name)
    result = cli(
        REPO_ROOT,
        f"--config={CONFIGS[name]}",
        f"--workdir={workdir}",
        "--mode=eval",
        f"--config.data_dir={REAL_DATA_DIR}",
        "--config.download=false",
        env=with_xla_flags(fast_compile=False),  # as users run it
    )
    assert result.returncode == 0, result.stderr
    accuracy = f"{100 * shipped['final_accuracy']:.2f}%"
    assert f"Test accuracy: {accuracy} (" in result.stdout
    # The row scripts/ship_pretrained.py printed for it, unedited, once.
    row = import_file(REPO_ROOT / "scripts" / "ship_pretrained.py").table_row(
        pathlib.Path("pretrained") / name, shipped
    )
    readme = (REPO_ROOT / "README.md").read_text().splitlines()
    assert readme.count(row) == 1, f"README needs this results row once: {row}"
