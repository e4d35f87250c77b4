"""scripts/prepare_cifar10.py: official archives (written here, small) -> tfds, offline."""

import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.conftest import REPO_ROOT, e2e, prepare_script

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCHES = [(f"data_batch_{i}", 60) for i in range(1, 6)] + [("test_batch", 50)]


@pytest.fixture(scope="module")
def script():
    return prepare_script()


@pytest.fixture(scope="module")
def records():
    """Per batch: (labels, images as N x 3072 CHW-planar bytes), as the official files hold."""
    rng = np.random.default_rng(0)
    return {
        name: (
            rng.integers(0, 10, count).astype(np.uint8),
            rng.integers(0, 256, (count, 3072), dtype=np.uint8),
        )
        for name, count in BATCHES
    }


def write_python_folder(root, records):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (labels, data) in records.items():
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),
            b"data": data,
            b"filenames": [b"image.png"] * len(labels),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [n.encode() for n in NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


def write_binary_folder(root, records):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, (labels, data) in records.items():
        rows = np.concatenate([labels[:, None], data], axis=1)
        (folder / f"{name}.bin").write_bytes(rows.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(NAMES) + "\n\n")
    return folder


def tar_gz(folder, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def as_set(labels, images_hwc):
    return sorted(
        (int(label), image.tobytes()) for label, image in zip(labels, images_hwc, strict=True)
    )


def expected(records, names):
    labels = np.concatenate([records[name][0] for name in names])
    data = np.concatenate([records[name][1] for name in names])
    return as_set(labels, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("form", ["python.tar.gz", "binary.tar.gz", "python folder"])
def test_round_trip(script, records, tmp_path, form):
    source = tmp_path / "source"
    if form == "python.tar.gz":
        archive = tar_gz(write_python_folder(source, records), tmp_path / "cifar-10-python.tar.gz")
    elif form == "binary.tar.gz":
        archive = tar_gz(write_binary_folder(source, records), tmp_path / "cifar-10-binary.tar.gz")
    else:
        archive = write_python_folder(source, records)
    data_dir = tmp_path / "tfds"
    script.prepare(archive, data_dir)
    for split, names in (("train", [n for n, _ in BATCHES[:5]]), ("test", ["test_batch"])):
        images, labels = tfds.as_numpy(
            tfds.load(
                "cifar10",
                data_dir=str(data_dir),
                split=split,
                as_supervised=True,
                batch_size=-1,
                download=False,
            )
        )
        assert as_set(labels, images) == expected(records, names)
    builder = tfds.builder("cifar10", data_dir=str(data_dir))
    assert builder.info.features["label"].names == NAMES
    assert (tmp_path / "tfds" / "cifar10" / "3.0.2").is_dir()


@e2e
def test_bad_archive_is_a_one_line_error(tmp_path):
    not_cifar = tmp_path / "notes.txt"
    not_cifar.write_text("hello")
    result = subprocess.run(
        [
            sys.executable,
            "scripts/prepare_cifar10.py",
            f"--archive={not_cifar}",
            f"--data_dir={tmp_path / 'tfds'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot prepare CIFAR-10")
    assert "neither a folder nor a tar archive" in result.stderr
