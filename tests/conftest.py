"""Shared test fixtures."""

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The real CIFAR-10, prepared for tfds (read-only); tests use small slices of it.
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "tfds"
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "cifar10").exists(), reason=f"{DATA_DIR} is not here"
)


@pytest.fixture
def repo_root() -> pathlib.Path:
    return REPO_ROOT
