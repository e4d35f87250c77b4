"""The shipped checkpoints in pretrained/: each evaluates, offline on CPU, to its README figure.

This guards the checkpoints against changes to the networks or the checkpoint format: a shipped
model that no longer restores, or restores to other outputs, fails here.
"""

import json
import re
import shutil

import pytest

from tests.conftest import DATA_DIR, REPO_ROOT, cli, needs_data

# The --config each shipped model's README command evaluates it with.
CONFIGS = {
    "s7": "configs/s7.py",
    "s7_dwsep": "configs/s7.py:s7_dwsep",
    "s7_dilated_stride": "configs/s7.py:s7_dilated_stride",
    "s9": "configs/s9.py",
    "s6": "configs/s6.py",
}
SHIPPED = sorted(path.parent.name for path in (REPO_ROOT / "pretrained").glob("*/results.json"))


def test_every_shipped_model_has_a_config():
    assert set(SHIPPED) <= set(CONFIGS), "add the new pretrained/ directory to CONFIGS"


@needs_data
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
        f"--config.data_dir={DATA_DIR}",
        "--config.download=false",
    )
    assert result.returncode == 0, result.stderr
    accuracy = f"{100 * shipped['final_accuracy']:.2f}%"
    assert f"Test accuracy: {accuracy} (" in result.stdout
    readme_rows = [
        line
        for line in (REPO_ROOT / "README.md").read_text().splitlines()
        if re.match(rf"\| `pretrained/{name}` \|", line)
    ]
    assert len(readme_rows) == 1, f"README needs one results row for pretrained/{name}"
    assert f"**{accuracy}**" in readme_rows[0]
