"""scripts/colab_tpu.ipynb: valid, and every cell but the Colab install and the TPU check runs."""

import json

import nbformat
import pytest

from tests.conftest import DATA_DIR, REPO_ROOT, needs_data

NOTEBOOK = REPO_ROOT / "scripts" / "colab_tpu.ipynb"
SKIPPED_TAGS = {"colab-only", "tpu-only"}


def load():
    return nbformat.read(NOTEBOOK, as_version=4)


def tags(cell):
    return set(cell.metadata.get("tags", []))


def test_notebook_is_valid_json_and_nbformat():
    json.loads(NOTEBOOK.read_text())
    nbformat.validate(load())


def test_only_the_install_and_the_tpu_check_are_skipped_on_cpu():
    skipped = [cell for cell in load().cells if tags(cell) & SKIPPED_TAGS]
    assert len(skipped) == 2
    assert "pip install" in skipped[0].source and ".[tpu]" in skipped[0].source
    assert 'platform == "tpu"' in skipped[1].source
    for cell in load().cells:
        if cell.cell_type == "code" and not tags(cell) & SKIPPED_TAGS:
            lines = cell.source.splitlines()
            assert not any(line.lstrip().startswith(("!", "%")) for line in lines)  # no magics


@needs_data
def test_cpu_runnable_cells_train_evaluate_and_show_the_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    workdir = tmp_path / "run"
    tiny = {
        "data_dir": str(DATA_DIR),
        "download": False,
        "train_split": "train[:256]",
        "eval_split": "test[:128]",
        "num_epochs": 1,
        "augment_workers": 0,
    }
    namespace = {}
    for cell in load().cells:
        if cell.cell_type != "code" or tags(cell) & SKIPPED_TAGS:
            continue
        exec(compile(cell.source, f"cell {cell.get('id')}", "exec"), namespace)
        if "parameters" in tags(cell):  # what papermill would inject
            namespace.update(WORKDIR=str(workdir), GLOBAL_BATCH=64, OVERRIDES=tiny)
    assert namespace["config"].batch_size == 64
    assert namespace["last_epoch"]["epoch"] == 1
    assert namespace["report"]["count"] == 128
    assert (workdir / "curves.png").exists() and (workdir / "misclassified.png").exists()


@pytest.mark.parametrize("key", ["CONFIG", "WORKDIR", "GLOBAL_BATCH", "OVERRIDES", "SAVE_TO_DRIVE"])
def test_parameters_cell_defines(key):
    (parameters,) = [cell for cell in load().cells if "parameters" in tags(cell)]
    assert f"{key} = " in parameters.source
