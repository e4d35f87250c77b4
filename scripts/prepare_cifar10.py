r"""Prepare CIFAR-10 for tensorflow-datasets offline, from an official archive you already have.

    python scripts/prepare_cifar10.py --archive ~/Downloads/cifar-10-python.tar.gz --data_dir DIR
    python -m cifar_flax.main --config=configs/s7.py --workdir=runs/s7 --config.data_dir=DIR

`--archive` may be `cifar-10-binary.tar.gz`, `cifar-10-python.tar.gz`, or the extracted
`cifar-10-batches-py/` (or `-bin/`) folder that torchvision and keras leave on disk. The records
are written by tfds's own `cifar10` builder (version 3.0.2), so `tfds.load("cifar10",
data_dir=DIR)` reads them as if tfds had downloaded them; nothing is fetched from the network.
"""

from __future__ import annotations

import pathlib
import pickle
import sys
import tarfile
import tempfile

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

from cifar_flax.console import quiet_library_logs

BINARY_FOLDER = "cifar-10-batches-bin"  # the layout tfds's builder reads
PYTHON_FOLDER = "cifar-10-batches-py"
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

_ARCHIVE = flags.DEFINE_string("archive", None, "Official CIFAR-10 archive or extracted folder.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir to write cifar10/3.0.2 into.")
flags.mark_flags_as_required(["archive", "data_dir"])


class ArchiveError(Exception):
    """The given archive is not an official CIFAR-10 archive or folder."""


def write_binary_layout_from_python(python_folder: pathlib.Path, out: pathlib.Path) -> None:
    """Rewrite the pickled python batches in the binary layout: label byte + 3072 pixel bytes."""
    out.mkdir(parents=True, exist_ok=True)
    for name in BATCHES:
        path = python_folder / name
        if not path.exists():
            raise ArchiveError(f"{path} is missing")
        with path.open("rb") as file:
            batch = pickle.load(file, encoding="bytes")
        data = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3072)
        labels = np.asarray(batch[b"labels"], np.uint8).reshape(-1, 1)
        (out / f"{name}.bin").write_bytes(np.concatenate([labels, data], axis=1).tobytes())
    with (python_folder / "batches.meta").open("rb") as file:
        names = pickle.load(file, encoding="bytes")[b"label_names"]
    (out / "batches.meta.txt").write_text("\n".join(n.decode() for n in names) + "\n")


def binary_layout(archive: pathlib.Path, scratch: pathlib.Path) -> pathlib.Path:
    """A folder holding `cifar-10-batches-bin/` made from whatever official form `archive` has."""
    if archive.is_dir():
        folder = archive
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            tar.extractall(scratch / "extracted", filter="data")
        folder = scratch / "extracted"
    else:
        raise ArchiveError(f"{archive} is neither a folder nor a tar archive")
    for candidate in (folder, *folder.iterdir()):
        if (candidate / "data_batch_1.bin").exists():
            root = scratch / "layout"
            root.mkdir()
            (root / BINARY_FOLDER).symlink_to(candidate.resolve(), target_is_directory=True)
            return root
        if (candidate / "data_batch_1").exists():
            write_binary_layout_from_python(candidate, scratch / "layout" / BINARY_FOLDER)
            return scratch / "layout"
    raise ArchiveError(f"no CIFAR-10 batches (data_batch_1 or data_batch_1.bin) in {archive}")


class _AlreadyExtracted:
    """Stands in for tfds's download manager: the 'download' is the folder we prepared."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder

    def download_and_extract(self, url: str) -> str:
        del url
        return str(self.folder)


class Cifar10FromFolder(tfds.image_classification.Cifar10, skip_registration=True):
    """tfds's cifar10 builder, reading the batches from a local folder instead of the web."""

    name = "cifar10"

    def __init__(self, *, folder: pathlib.Path, **kwargs: object) -> None:
        self._folder = folder
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager: object) -> dict:
        del dl_manager
        return super()._split_generators(_AlreadyExtracted(self._folder))


def prepare(archive: pathlib.Path, data_dir: pathlib.Path) -> tfds.core.DatasetBuilder:
    """Write cifar10/3.0.2 into `data_dir` from `archive`; returns the prepared builder."""
    if not archive.exists():
        raise ArchiveError(f"{archive} does not exist")
    with tempfile.TemporaryDirectory() as scratch:
        folder = binary_layout(archive, pathlib.Path(scratch))
        builder = Cifar10FromFolder(folder=folder, data_dir=str(data_dir))
        builder.download_and_prepare(
            download_dir=str(pathlib.Path(scratch) / "downloads"),
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    return tfds.builder("cifar10", data_dir=str(data_dir))


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    archive = pathlib.Path(_ARCHIVE.value).expanduser()
    data_dir = pathlib.Path(_DATA_DIR.value).expanduser()
    try:
        builder = prepare(archive, data_dir)
    except (ArchiveError, OSError, pickle.UnpicklingError, KeyError, ValueError) as error:
        sys.exit(f"error: cannot prepare CIFAR-10 from {archive}: {error}")
    splits = {name: split.num_examples for name, split in builder.info.splits.items()}
    print(f"Prepared {builder.data_dir}: {splits}")
    print(f"Use it with --config.data_dir={data_dir}")


if __name__ == "__main__":
    app.run(main)
