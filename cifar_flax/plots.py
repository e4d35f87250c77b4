"""Figures written to the workdir (PNG, matplotlib's non-interactive backend)."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np


def save_image_grid(
    images: np.ndarray,
    titles: Sequence[str],
    path: str | pathlib.Path,
    columns: int = 8,
    suptitle: str | None = None,
) -> pathlib.Path:
    """Save uint8 HWC images in a grid, each with its title (e.g. its class name)."""
    rows = math.ceil(len(images) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, title in zip(axes.flat, images, titles, strict=False):
        axis.imshow(image, interpolation="nearest")
        axis.set_title(title, fontsize=8)
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_training_curves(
    records: Sequence[dict[str, Any]],
    path: str | pathlib.Path,
    title: str = "",
    held_out: str = "test",
) -> pathlib.Path:
    """Loss and accuracy per epoch from metrics.jsonl records: train, and the held-out split
    (the records' eval_* keys) labelled `held_out`, "val" for a validation split."""
    epochs = [record["epoch"] for record in records]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for split, label in (("train", "train"), ("eval", held_out)):
        loss_axis.plot(epochs, [r[f"{split}_loss"] for r in records], label=label)
        accuracy_axis.plot(epochs, [100 * r[f"{split}_accuracy"] for r in records], label=label)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = pathlib.Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
