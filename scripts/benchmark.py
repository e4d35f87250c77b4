r"""Steady-state throughput of the training step, the eval step and the input pipeline.

    python scripts/benchmark.py --models=all --batch_size=128,512 [--compute_dtype=bfloat16]
        [--torch] [--data_dir=DIR]

For each network and batch size it prints one line:

    NAME batch=B train_img_per_s=... eval_img_per_s=... input_img_per_s=...
        [host_end_to_end_img_per_s=... device_end_to_end_img_per_s=...] [data=...]
        [torch_img_per_s=... ratio=...]

Steps run on one fixed synthetic batch (the same for JAX and PyTorch), after compilation and
warm-up; each figure is the median of --repeats timings of --steps steps. The input pipeline is
timed on real data (a --input_images slice of --data_dir) with the augmentation of the config
that trains the network, over one epoch after a warm-up epoch (worker start-up excluded).
`--end_to_end` times training fed by each `augment_on` (host: tf.data with Albumentations in
worker processes; device: the split resident on the device, augmented there): --steps steps
of real images from a --steps x batch split, the step and its input together, after a warm-up
epoch of the same steps; `train_img_per_s` beside them is the bare step's rate. Where the
real images cannot be loaded (TensorFlow not installed, or no prepared copy in --data_dir),
uniform-noise uint8 images of CIFAR-10's shape stand in; `data=` names the images behind the
input and end-to-end figures (`synthetic` for those). Without TensorFlow or Albumentations the
host pipeline is not timed (the first line says why).
`ratio` = JAX train / PyTorch train, the PyTorch original (--torch_seeds, the seeds' torch_seeds.py,
channels_last, SGD momentum, cross-entropy) measured in the same run on the same kind of device,
in the same precision: with --compute_dtype=bfloat16, under `torch.autocast(dtype=bfloat16)`.
"""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_dict

from cifar_flax import batch_source, splits
from cifar_flax.config_lib import COMPUTE_DTYPES, base_config, import_file, load_config
from cifar_flax.console import quiet_library_logs
from cifar_flax.errors import CifarFlaxError
from cifar_flax.host_memory import restart_reusing_freed_memory
from cifar_flax.models import NETWORKS, create_model
from cifar_flax.steps import (
    create_train_state,
    in_compute_dtype,
    jit_eval_step,
    jit_train_step,
    make_mesh,
    replicated,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

_MODELS = flags.DEFINE_string("models", "all", "Comma-separated network names, or 'all'.")
_BATCH_SIZES = flags.DEFINE_list("batch_size", ["128"], "Images per step; several: 128,512.")
_COMPUTE_DTYPE = flags.DEFINE_enum(
    "compute_dtype", "float32", COMPUTE_DTYPES, "What activations and convolutions compute in."
)
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings per figure (the median is printed).")
_TORCH = flags.DEFINE_boolean("torch", False, "Also time the PyTorch original.")
_INPUT = flags.DEFINE_boolean("input", True, "Time the input pipeline on real data.")
_DATA_DIR = flags.DEFINE_string("data_dir", str(SHARED / "data" / "tfds"), "tfds data_dir.")
_INPUT_IMAGES = flags.DEFINE_integer("input_images", 10_000, "Images per input-pipeline epoch.")
_TORCH_SEEDS = flags.DEFINE_string(
    "torch_seeds", str(SHARED / "reference" / "torch_seeds.py"), "The PyTorch seed networks."
)
_WORKERS = flags.DEFINE_integer("augment_workers", None, "Augmentation processes (default: auto).")
_END_TO_END = flags.DEFINE_list(
    "end_to_end",
    ["host", "device"],
    "Time training fed by these augment_on places (host, device; none: --end_to_end=).",
)


def median_rate(run_steps: Callable[[], None], images: int, repeats: int) -> float:
    """Median images per second of `run_steps` (which must block until its work is done)."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_steps()
        rates.append(images / (time.perf_counter() - started))
    return statistics.median(rates)


def synthetic_batch(batch_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.normal(size=(batch_size, 32, 32, 3)).astype(np.float32),
        "label": rng.integers(0, 10, batch_size).astype(np.int32),
    }


def jax_rates(
    name: str, batch_size: int, steps: int, repeats: int, compute_dtype: str
) -> tuple[float, float]:
    """(train, eval) images per second of network `name` on one device."""
    mesh = make_mesh(jax.devices()[:1])
    config = base_config()
    config.optimizer, config.momentum = "sgd", 0.9  # as the PyTorch side
    config.compute_dtype = compute_dtype
    model = create_model(name)
    state = jax.device_put(create_train_state(model, config, steps_per_epoch=100), replicated(mesh))
    batch = jax.device_put(synthetic_batch(batch_size))
    train_step = jit_train_step(mesh)

    def train_steps() -> None:
        nonlocal state
        for _ in range(steps):
            state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)

    train_steps()  # compile and warm up
    train = median_rate(train_steps, steps * batch_size, repeats)

    eval_step = jit_eval_step(mesh, in_compute_dtype(model.apply, compute_dtype))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    eval_batch = synthetic_batch(batch_size)
    eval_batch = jax.device_put({**eval_batch, "mask": np.ones(batch_size, np.float32)})

    def eval_steps() -> None:
        for _ in range(steps):
            metrics = eval_step(variables, eval_batch)
        jax.block_until_ready(metrics)

    eval_steps()
    return train, median_rate(eval_steps, steps * batch_size, repeats)


def torch_rate(name: str, batch_size: int, steps: int, repeats: int, compute_dtype: str) -> float:
    """Training images per second of the PyTorch original, as torch_seeds.py's bench runs it,
    under autocast to bfloat16 when `compute_dtype` is bfloat16."""
    import torch
    import torch.nn.functional as F

    torch_seeds = import_file(_TORCH_SEEDS.value)
    # The same kind of device as JAX's: a GPU run compares GPU against GPU.
    use_cuda = jax.default_backend() == "gpu" and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    torch.manual_seed(0)
    model = torch_seeds.MODELS[NETWORKS[name].seed][0]()
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = synthetic_batch(batch_size)
    images = torch.from_numpy(batch["image"].transpose(0, 3, 1, 2).copy()).to(
        device, memory_format=torch.channels_last
    )
    labels = torch.from_numpy(batch["label"]).long().to(device)
    bfloat16 = compute_dtype == "bfloat16"

    def train_steps() -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):
                loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
        if use_cuda:
            torch.cuda.synchronize()

    train_steps()
    return median_rate(train_steps, steps * batch_size, repeats)


def host_pipeline_missing() -> str | None:
    """Why the host pipeline cannot run here (a library it needs is not installed), or None."""
    try:
        from cifar_flax import input_pipeline  # TensorFlow, tfds, Albumentations
    except ImportError as error:
        return f"{error.name or error} is not installed"
    input_pipeline.hide_gpus_from_tensorflow()
    return None


def training_images(count: int) -> splits.Split:
    """The first `count` images of the prepared training split in --data_dir, or synthetic
    ones where that cannot be loaded here."""
    try:
        from cifar_flax import input_pipeline

        return input_pipeline.load_split(_DATA_DIR.value, f"train[:{count}]", download=False)
    except (ImportError, CifarFlaxError):
        return splits.synthetic(count)


def input_rate(name: str, batch_size: int, split: splits.Split, workers: int | None) -> float:
    """Images per second of one epoch of `split` through the training input pipeline (after a
    warm-up epoch)."""
    from cifar_flax import input_pipeline

    config = training_config(name)
    config.batch_size = batch_size
    workers = input_pipeline.augment_workers(workers)
    with input_pipeline.Augmenter(config.augment, config.normalize.mean, workers) as augmenter:
        for _ in input_pipeline.train_batches(split, config, 0, augmenter):
            pass
        started = time.perf_counter()
        count = sum(
            len(batch["label"])
            for batch in input_pipeline.train_batches(split, config, 1, augmenter)
        )
    return count / (time.perf_counter() - started)


def end_to_end_rate(name: str, batch_size: int, split: splits.Split, augment_on: str) -> float:
    """Training images per second of network `name` fed by the batches of `augment_on`, over an
    epoch of `split` after a warm-up epoch (compilation, worker start-up)."""
    steps = len(split) // batch_size
    config = training_config(name)
    config.batch_size, config.augment_on, config.augment_workers = (
        batch_size,
        augment_on,
        _WORKERS.value,
    )
    mesh = make_mesh(jax.devices()[:1])
    model = create_model(name)
    state = jax.device_put(
        create_train_state(model, config, steps_per_epoch=steps), replicated(mesh)
    )
    train_step = jit_train_step(mesh)
    with batch_source.open_batches(config, split, mesh) as batches:

        def epoch(index: int) -> None:
            nonlocal state
            for batch in batches(index, 0):
                state, metrics = train_step(state, batch)
            jax.block_until_ready(metrics)

        epoch(0)
        started = time.perf_counter()
        epoch(1)
    return steps * batch_size / (time.perf_counter() - started)


def training_config(name: str) -> config_dict.ConfigDict:
    """Our recipe for network `name`: the config file in configs/ with a variant of that name."""
    for path in sorted((REPO_ROOT / "configs").glob("*.py")):
        try:
            return load_config(f"{path}:{name}")
        except ValueError:  # not one of this file's variants
            continue
    raise ValueError(f"no file in configs/ has a variant {name!r}")


def describe_machine() -> str:
    device = jax.devices()[0]
    return (
        f"# jax {jax.__version__} on {device.platform} ({device.device_kind}), "
        f"{jax.device_count()} device(s); host {platform.machine()} with "
        f"{os.cpu_count()} CPUs; GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}"
    )


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    names = list(NETWORKS) if _MODELS.value == "all" else _MODELS.value.split(",")
    unknown = [name for name in names if name not in NETWORKS]
    if unknown:
        sys.exit(f"error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(NETWORKS)}")
    try:
        batch_sizes = [int(size) for size in _BATCH_SIZES.value]
    except ValueError:
        sys.exit(f"error: --batch_size takes integers, e.g. 128,512, not {_BATCH_SIZES.value}")
    places = [place for place in _END_TO_END.value if place not in ("host", "device")]
    if places:
        sys.exit(f"error: --end_to_end takes host, device or both, not {', '.join(places)}")
    print(f"{describe_machine()}; compute_dtype={_COMPUTE_DTYPE.value}", flush=True)
    time_input, places = _INPUT.value, _END_TO_END.value
    missing = host_pipeline_missing() if time_input or "host" in places else None
    if missing:
        print(f"# {missing}: the host pipeline is not timed", flush=True)
        time_input, places = False, [place for place in places if place != "host"]
    dtype = _COMPUTE_DTYPE.value
    # Loaded once (per batch size): every network's input and end-to-end epochs see the same images.
    input_images = training_images(_INPUT_IMAGES.value) if time_input else None
    epoch_images = (
        {size: training_images(_STEPS.value * size) for size in batch_sizes} if places else {}
    )
    for name in names:
        for batch_size in batch_sizes:
            train, evaluate = jax_rates(name, batch_size, _STEPS.value, _REPEATS.value, dtype)
            fields = [f"train_img_per_s={train:.0f}", f"eval_img_per_s={evaluate:.0f}"]
            data = []  # the images behind the input and end-to-end figures
            if input_images is not None:
                rate = input_rate(name, batch_size, input_images, _WORKERS.value)
                fields.append(f"input_img_per_s={rate:.0f}")
                data.append(input_images.name)
            if places:
                split = epoch_images[batch_size]
                for place in places:
                    rate = end_to_end_rate(name, batch_size, split, place)
                    fields.append(f"{place}_end_to_end_img_per_s={rate:.0f}")
                data.append(split.name)
            if data:
                fields.append(f"data={','.join(dict.fromkeys(data))}")
            if _TORCH.value:
                torch = torch_rate(name, batch_size, _STEPS.value, _REPEATS.value, dtype)
                fields += [f"torch_img_per_s={torch:.0f}", f"ratio={train / torch:.2f}"]
            print(f"{name} batch={batch_size} {' '.join(fields)}", flush=True)


if __name__ == "__main__":
    restart_reusing_freed_memory()  # as cifar_flax.main runs; PyTorch gains from it too
    app.run(main)
