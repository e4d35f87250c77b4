"""examples/colab.ipynb: valid, installs as CI's floor venv does, and every cell but the Colab
install and the accelerator check runs (here on the CPU, against the synthetic data)."""

import json

import nbformat
import pytest

from tests.conftest import REPO_ROOT, make_config

NOTEBOOK = REPO_ROOT / "examples" / "colab.ipynb"
SKIPPED_TAGS = {"colab-only", "accelerator-only"}


def load():
    return nbformat.read(NOTEBOOK, as_version=4)


def tags(cell):
    return set(cell.metadata.get("tags", []))


def test_notebook_is_valid_json_and_nbformat():
    json.loads(NOTEBOOK.read_text())
    nbformat.validate(load())


def test_only_the_install_and_the_accelerator_check_are_skipped_on_cpu():
    skipped = [cell for cell in load().cells if tags(cell) & SKIPPED_TAGS]
    assert len(skipped) == 2
    assert "!pip install -q -e .\n" in skipped[0].source and "pip list" in skipped[0].source
    assert 'platform in ("gpu", "tpu")' in skipped[1].source
    for cell in load().cells:
        if cell.cell_type == "code" and not tags(cell) & SKIPPED_TAGS:
            lines = cell.source.splitlines()
            assert not any(line.lstrip().startswith(("!", "%")) for line in lines)  # no magics


def test_cpu_runnable_cells_train_evaluate_and_show_the_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    workdir = tmp_path / "run"
    # The recipe of the other short runs (their compiled steps are cached), on fewer images.
    tiny = {
        **make_config().to_dict(),
        "train_split": "train[:256]",
        "eval_split": "test[:128]",
        "num_epochs": 1,
    }
    namespace = {}
    for cell in load().cells:
        if cell.cell_type != "code" or tags(cell) & SKIPPED_TAGS:
            continue
        exec(compile(cell.source, f"cell {cell.get('id')}", "exec"), namespace)
        if "parameters" in tags(cell):  # what papermill would inject
            namespace.update(CONFIG="configs/s7.py:seed", WORKDIR=str(workdir), OVERRIDES=tiny)
    assert namespace["config"].batch_size == 64
    assert namespace["last_epoch"]["epoch"] == 1
    assert namespace["report"]["count"] == 128
    assert (workdir / "curves.png").exists() and (workdir / "misclassified.png").exists()


def test_the_install_cell_is_the_one_ci_tests_on_the_floor_versions():
    (install,) = [cell for cell in load().cells if "colab-only" in tags(cell)]
    (command,) = [line for line in install.source.splitlines() if "pip install" in line]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert command.removeprefix("!").replace(" -q", "") + "  # the notebook's install cell" in ci


@pytest.mark.parametrize("key", ["CONFIG", "WORKDIR", "GLOBAL_BATCH", "OVERRIDES", "SAVE_TO_DRIVE"])
def test_parameters_cell_defines(key):
    (parameters,) = [cell for cell in load().cells if "parameters" in tags(cell)]
    assert f"{key} = " in parameters.source
