"""Figures written to the workdir (PNG, matplotlib's non-interactive backend)."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np


def save_figure(figure: Any, path: str | pathlib.Path) -> pathlib.Path:
    """Lay out `figure`, write it to `path` (its folder made if missing) and free it."""
    figure.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_image_grid(
    images: np.ndarray,
    titles: Sequence[str],
    path: str | pathlib.Path,
    columns: int = 8,
    suptitle: str | None = None,
) -> pathlib.Path:
    """Save uint8 HWC images in a grid, each with its title (e.g. its class name)."""
    return save_heatmap_grid(images, None, titles, path, columns, suptitle)


def save_heatmap_grid(
    images: np.ndarray,
    heatmaps: np.ndarray | None,
    titles: Sequence[str],
    path: str | pathlib.Path,
    columns: int = 8,
    suptitle: str | None = None,
) -> pathlib.Path:
    """Save uint8 HWC images in a grid, each with its title and, where `heatmaps` (N, H, W in
    [0, 1]) are given, its heatmap over it (jet: blue low, red high)."""
    rows = math.ceil(len(images) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index, (axis, image, title) in enumerate(zip(axes.flat, images, titles, strict=False)):
        axis.imshow(image, interpolation="nearest")
        if heatmaps is not None:
            axis.imshow(heatmaps[index], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axis.set_title(title, fontsize=8)
    if suptitle:
        figure.suptitle(suptitle)
    return save_figure(figure, path)


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
    return save_figure(figure, path)


def save_lr_find(
    learning_rates: np.ndarray,
    losses: np.ndarray,
    smoothed: np.ndarray,
    lowest: int,
    suggestion: float,
    path: str | pathlib.Path,
    title: str = "",
) -> pathlib.Path:
    """The LR range test: each update's loss and the smoothed loss against the LR (log scale),
    the lowest smoothed loss (at update `lowest`) and the suggested peak marked."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(learning_rates, losses, color="0.75", linewidth=1, label="loss of each update")
    axis.plot(learning_rates, smoothed, color="C0", linewidth=2, label="smoothed loss")
    axis.plot(
        learning_rates[lowest], smoothed[lowest], "o", color="C3", label="lowest smoothed loss"
    )
    axis.axvline(suggestion, color="C2", linestyle="--", label=f"suggested peak {suggestion:.2g}")
    axis.set_xscale("log")
    # The diverging tail would flatten the rest of the curve.
    top = max(float(smoothed[0]), float(np.max(smoothed[: lowest + 1])))
    axis.set_ylim(0.9 * float(smoothed[lowest]), 1.15 * top)
    axis.set(xlabel="learning rate", ylabel="training loss", title=title)
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    return save_figure(figure, path)


def save_receptive_field(
    layers: Sequence[str],
    fields: Sequence[int],
    required: int,
    gradient: np.ndarray,
    centre: tuple[int, int],
    side: int,
    path: str | pathlib.Path,
    title: str = "",
) -> pathlib.Path:
    """Left: the theoretical receptive field after each convolution, against the `required`
    minimum. Right: the effective field's gradient over the image, its square of `side`
    around `centre` outlined."""
    figure, (field_axis, image_axis) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.6, 1]}
    )
    positions = np.arange(len(layers))
    field_axis.plot(positions, fields, "o-", color="C0", label="theoretical receptive field")
    field_axis.axhline(required, color="C3", linestyle="--", label=f"assignment: > {required}")
    field_axis.axhline(gradient.shape[0], color="0.5", linestyle=":", label="image side")
    field_axis.set_xticks(positions, layers, rotation=75, fontsize=7)
    field_axis.set(ylabel="pixels", title="theoretical, after each convolution")
    field_axis.grid(alpha=0.3)
    field_axis.legend()
    shown = image_axis.imshow(gradient / gradient.max(), cmap="magma", vmin=0, vmax=1)
    half = side / 2
    image_axis.add_patch(
        matplotlib.patches.Rectangle(
            (centre[1] - half, centre[0] - half), side, side, fill=False, color="C2", linewidth=2
        )
    )
    image_axis.set_title(f"effective: {side}x{side} holds 95% of the gradient")
    figure.colorbar(shown, ax=image_axis, fraction=0.046, label="mean |gradient| (max = 1)")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)
