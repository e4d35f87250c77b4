"""scripts/compare_torch.py: the Flax networks equal the PyTorch originals (needs torch)."""

import pytest

from cifar_flax.config_lib import import_file
from tests.conftest import REPO_ROOT

torch = pytest.importorskip("torch", reason="needs PyTorch (pip install torch), not a dependency")


@pytest.fixture(scope="module")
def script():
    # Importing the script defines its absl flags: once per test session.
    return import_file(REPO_ROOT / "scripts" / "compare_torch.py")


@pytest.mark.parametrize(
    "name", ["s7_dwsep", "s7_dilated_stride", "s9_inverted_residual", "s7_lite", "s6_grouped"]
)
def test_flax_equals_pytorch(script, name):
    if not script.DEFAULT_TORCH_SEEDS.exists():
        pytest.skip(f"needs the PyTorch seed networks at {script.DEFAULT_TORCH_SEEDS}")
    torch_seeds = import_file(script.DEFAULT_TORCH_SEEDS)
    assert script.max_logit_difference(name, torch_seeds, batch_size=4) <= 1e-4
