"""scripts/compare_torch.py: the Flax networks equal the PyTorch originals (needs torch)."""

import importlib.util
import pathlib

import pytest

torch = pytest.importorskip("torch")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(
        "compare_torch", REPO_ROOT / "scripts" / "compare_torch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the script's absl flags: load it once
    return module


@pytest.mark.parametrize(
    "name", ["s7_dwsep", "s7_dilated_stride", "s9_inverted_residual", "s7_lite", "s6_grouped"]
)
def test_flax_equals_pytorch(script, name):
    if not script.DEFAULT_TORCH_SEEDS.exists():
        pytest.skip(f"no reference at {script.DEFAULT_TORCH_SEEDS}")
    torch_seeds = script.load_torch_seeds(script.DEFAULT_TORCH_SEEDS)
    assert script.max_logit_difference(name, torch_seeds, batch_size=4) <= 1e-4
