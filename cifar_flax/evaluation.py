"""Evaluating a model on a split: during training (loss and accuracy) and of a saved checkpoint
(`--mode=eval`: accuracy, per-class accuracy, confusion matrix, eval.json, misclassified.png,
gradcam.png)."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from ml_collections import config_dict

from cifar_flax import checkpoints, device_augment, gradcam, input_pipeline, plots, splits
from cifar_flax.distributed import check_devices, global_batches, process_shard
from cifar_flax.metrics import held_out_name, is_chief
from cifar_flax.models import create_model
from cifar_flax.steps import (
    data_sharding,
    jit_config_eval_step,
    make_mesh,
    replicated,
)

EVAL_FILE = "eval.json"
MISCLASSIFIED_FILE = "misclassified.png"
MISCLASSIFIED_SHOWN = 32
GRADCAM_FILE = "gradcam.png"
GRADCAM_SHOWN = 16  # misclassified images, and as many correctly classified ones


@dataclasses.dataclass(frozen=True)
class EvalResult:
    loss: float
    correct: int
    count: int
    predictions: np.ndarray
    labels: np.ndarray

    @property
    def accuracy(self) -> float:
        return self.correct / self.count


def evaluate_split(
    eval_step: Callable[..., Any],
    variables: Any,
    split: splits.Split,
    batch_size: int,
    normalize: config_dict.ConfigDict,
    to_global: Callable[[splits.Batch], Any],
) -> EvalResult:
    """Loss and accuracy of `variables` on the whole split (each process feeding its shard)."""
    loss_sum, correct, predictions = 0.0, 0, []
    for batch in input_pipeline.eval_batches(split, batch_size, normalize, process_shard()):
        metrics = jax.device_get(eval_step(variables, to_global(batch)))
        loss_sum += float(metrics["loss_sum"])
        correct += int(metrics["correct"])
        predictions.append(metrics["predictions"])
    return EvalResult(
        loss=loss_sum / len(split),
        correct=correct,
        count=len(split),
        predictions=np.concatenate(predictions)[: len(split)],
        labels=split.labels,
    )


def restore_checkpoint(
    workdir: str, which: str, mesh: jax.sharding.Mesh
) -> tuple[int, dict[str, Any], nn.Module, Any]:
    """(step, meta, model, model variables) of the workdir's latest or best checkpoint."""
    manager = checkpoints.open_manager(workdir, create=False)
    try:
        step = checkpoints.choose_step(manager, which, workdir)
        meta = checkpoints.read_meta(manager, step)
        model = create_model(meta["model"])
        template = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3)))
        template = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated(mesh)),
            dict(template),
        )
        return step, meta, model, checkpoints.restore_model(manager, step, template)
    finally:
        manager.close()


def evaluate(config: config_dict.ConfigDict, workdir: str, which: str = "latest") -> dict[str, Any]:
    """Evaluate the latest (or best) checkpoint in `workdir` on `config.eval_split`.

    Only the model name and the normalisation come from the checkpoint; the data location and
    split come from `config`.
    """
    mesh = make_mesh()
    step, meta, model, variables = restore_checkpoint(workdir, which, mesh)
    gradcam_layer = gradcam.choose_layer(model, config.eval.gradcam_layer)
    check_devices(config.batch_size)
    input_pipeline.hide_gpus_from_tensorflow()
    split = input_pipeline.load_split(config.data_dir, config.eval_split, config.download)
    result = evaluate_split(
        jit_config_eval_step(mesh, model, config),
        variables,
        split,
        config.batch_size,
        config_dict.ConfigDict(meta["normalize"]),
        global_batches(data_sharding(mesh)),
    )
    report = eval_report(result, split, meta, which, step, config.eval_flip)
    if is_chief():
        print_report(report, split.class_names)
        workdir = pathlib.Path(workdir)
        (workdir / EVAL_FILE).write_text(json.dumps(report, indent=2) + "\n")
        save_misclassified(result, split, meta["model"], workdir / MISCLASSIFIED_FILE)
        save_gradcam(model, variables, gradcam_layer, result, split, meta, workdir / GRADCAM_FILE)
    return report


def eval_report(
    result: EvalResult,
    split: splits.Split,
    meta: dict[str, Any],
    which: str,
    step: int,
    flip: bool = False,
) -> dict[str, Any]:
    """What eval.json holds; `flip`: each image was evaluated with its mirror image."""
    class_names = split.class_names
    classes = len(class_names)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (result.labels, result.predictions), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "model": meta["model"],
        "checkpoint": which,
        "split": split.name,
        "step": step,
        "epoch": meta["epoch"],
        "steps_into_next_epoch": meta["epoch_steps"],
        "eval_flip": flip,
        "accuracy": result.accuracy,
        "correct": result.correct,
        "count": result.count,
        "loss": result.loss,
        "per_class_accuracy": dict(zip(class_names, per_class.tolist(), strict=True)),
        "confusion_matrix": confusion.tolist(),
    }


def print_report(report: dict[str, Any], class_names: tuple[str, ...]) -> None:
    where = f"epoch {report['epoch']}"
    if report["steps_into_next_epoch"]:
        where += f" + {report['steps_into_next_epoch']} steps"
    print(f"Checkpoint: {report['checkpoint']} (step {report['step']}, {where}), {report['model']}")
    mirrored = ", each image with its mirror image" if report["eval_flip"] else ""
    print(
        f"{held_out_name(report['split']).capitalize()} accuracy: "
        f"{100 * report['accuracy']:.2f}% ({report['correct']}/{report['count']}){mirrored}"
    )
    print("Per-class accuracy:")
    for name, accuracy in report["per_class_accuracy"].items():
        print(f"  {name:12s} {100 * accuracy:6.2f}%")
    short = [name[:5] for name in class_names]
    print("Confusion matrix (rows: true, columns: predicted):")
    print("       " + " ".join(f"{name:>5s}" for name in short))
    for name, row in zip(short, report["confusion_matrix"], strict=True):
        print(f"{name:>6s} " + " ".join(f"{count:5d}" for count in row))


def save_misclassified(
    result: EvalResult, split: splits.Split, model: str, path: pathlib.Path
) -> None:
    """A grid of the first misclassified images, each titled "true -> predicted"."""
    wrong = np.flatnonzero(result.predictions != result.labels)[:MISCLASSIFIED_SHOWN]
    names = split.class_names
    plots.save_image_grid(
        split.images[wrong],
        [f"{names[result.labels[i]]} -> {names[result.predictions[i]]}" for i in wrong],
        path,
        suptitle=f"{model}: misclassified ({split.name}), true -> predicted",
    )


def save_gradcam(
    model: nn.Module,
    variables: Any,
    layer: str,
    result: EvalResult,
    split: splits.Split,
    meta: dict[str, Any],
    path: pathlib.Path,
) -> None:
    """The first misclassified images and as many correctly classified ones, each under the
    Grad-CAM heatmap of its predicted class at `layer`."""
    wrong = np.flatnonzero(result.predictions != result.labels)[:GRADCAM_SHOWN]
    right = np.flatnonzero(result.predictions == result.labels)[:GRADCAM_SHOWN]
    shown = np.concatenate([wrong, right])
    images = split.images[shown]
    normalized = device_augment.normalize(
        images, meta["normalize"]["mean"], meta["normalize"]["std"]
    )
    maps = jax.jit(lambda v, x: gradcam.heatmaps(model, v, x, layer)[1])(variables, normalized)
    names = split.class_names
    plots.save_heatmap_grid(
        images,
        np.asarray(maps),
        [f"{names[result.labels[i]]} -> {names[result.predictions[i]]}" for i in shown],
        path,
        suptitle=f"{meta['model']}: Grad-CAM of the predicted class at {layer} "
        f"({split.name}; first {len(wrong)} misclassified, then {len(right)} correct)",
    )
