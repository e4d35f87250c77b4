"""The shipped checkpoints in pretrained/: each evaluates, offline on CPU, to its README figure.

This guards the checkpoints against changes to the networks or the checkpoint format: a shipped
model that no longer restores, or restores to other outputs, fails here.
"""

import json
import pathlib
import shutil

import pytest

from cifar_flax.config_lib import import_file, load_config
from tests.conftest import REAL_DATA_DIR, REPO_ROOT, cli, e2e, needs_real_data, with_xla_flags

# Each shipped directory, the config its README command evaluates it with, and its network.
TABLE = json.loads((REPO_ROOT / "pretrained" / "shipped.json").read_text())
SHIPPED = sorted(path.parent.name for path in (REPO_ROOT / "pretrained").glob("*/results.json"))


def test_the_table_lists_every_shipped_model_with_its_network():
    assert sorted(TABLE) == SHIPPED, "list the pretrained/ directories in pretrained/shipped.json"
    for name, row in TABLE.items():
        results = json.loads((REPO_ROOT / "pretrained" / name / "results.json").read_text())
        assert results["model"] == row["network"] == load_config(REPO_ROOT / row["config"]).model


@e2e
@needs_real_data
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_evaluates_to_its_readme_accuracy(name, tmp_path):
    shipped = json.loads((REPO_ROOT / "pretrained" / name / "results.json").read_text())
    # A copy: evaluation writes eval.json and misclassified.png into the directory it reads.
    workdir = shutil.copytree(REPO_ROOT / "pretrained" / name, tmp_path / name)
    result = cli(
        REPO_ROOT,
        f"--config={TABLE[name]['config']}",
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
