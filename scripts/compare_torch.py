r"""Check the Flax seed networks against the PyTorch originals, weight for weight.

For each network: build the PyTorch reference (--torch_seeds, the seeds' torch_seeds.py), give its
BatchNorm layers random affine parameters and running statistics (so they matter), copy every
weight into the Flax model, and compare the eval-mode outputs on a random batch.

    python scripts/compare_torch.py [--torch_seeds=PATH] [--batch_size=8]

Needs torch (not a project dependency; `pip install torch` CPU build is enough).
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import app, flags

from cifar_flax.config_lib import import_file
from cifar_flax.console import quiet_library_logs
from cifar_flax.models import NETWORKS, create_model
from cifar_flax.models.layers import Conv2d
from cifar_flax.summary import trace

DEFAULT_TORCH_SEEDS = (
    pathlib.Path(__file__).resolve().parents[2] / "shared/reference/torch_seeds.py"
)
TOLERANCE = 1e-4

_TORCH_SEEDS = flags.DEFINE_string("torch_seeds", str(DEFAULT_TORCH_SEEDS), "torch_seeds.py")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Random images per comparison.")


def randomize_batch_norm(torch_model: Any, seed: int) -> None:
    """Give every BatchNorm random affine parameters and running stats (defaults are 1 and 0)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in torch_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in (
                    (module.weight, 0.5, 1.5),
                    (module.bias, -0.5, 0.5),
                    (module.running_mean, -0.5, 0.5),
                    (module.running_var, 0.5, 2.0),
                ):
                    tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=generator))


def flax_variables_from_torch(flax_model: nn.Module, torch_model: Any) -> dict:
    """Flax variables holding `torch_model`'s weights.

    Layers are paired in order: PyTorch's registration order against the order in which the
    Flax model calls its layers (the two coincide for the seeds; kinds and shapes are checked).
    """
    import torch

    torch_layers = [
        m
        for m in torch_model.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.BatchNorm2d | torch.nn.Linear)
    ]
    flax_layers = [
        call
        for call in trace(flax_model, (1, 32, 32, 3))[0].walk()
        if isinstance(call.module, Conv2d | nn.BatchNorm | nn.Dense)
    ]
    if len(torch_layers) != len(flax_layers):
        raise ValueError(f"{len(torch_layers)} PyTorch layers vs {len(flax_layers)} Flax layers")
    params: dict = {}
    batch_stats: dict = {}

    def put(tree: dict, path: tuple[str, ...], name: str, value: np.ndarray) -> None:
        node = tree
        for key in path:
            node = node.setdefault(key, {})
        node[name] = value

    for torch_layer, call in zip(torch_layers, flax_layers, strict=True):
        path = tuple(call.module.scope.path)
        state = {k: v.detach().numpy() for k, v in torch_layer.state_dict().items()}
        if isinstance(torch_layer, torch.nn.Conv2d) and isinstance(call.module, Conv2d):
            put(params, path, "kernel", state["weight"].transpose(2, 3, 1, 0))  # OIHW -> HWIO
            if "bias" in state:
                put(params, path, "bias", state["bias"])
        elif isinstance(torch_layer, torch.nn.BatchNorm2d) and isinstance(
            call.module, nn.BatchNorm
        ):
            put(params, path, "scale", state["weight"])
            put(params, path, "bias", state["bias"])
            put(batch_stats, path, "mean", state["running_mean"])
            put(batch_stats, path, "var", state["running_var"])
        elif isinstance(torch_layer, torch.nn.Linear) and isinstance(call.module, nn.Dense):
            put(params, path, "kernel", state["weight"].T)
            put(params, path, "bias", state["bias"])
        else:
            raise ValueError(f"layer mismatch: PyTorch {torch_layer} vs Flax {call.path}")
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    expected = jax.eval_shape(flax_model.init, jax.random.key(0), np.zeros((1, 32, 32, 3)))
    got = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
    if jax.tree.structure(expected) != jax.tree.structure(got) or expected != got:
        raise ValueError("copied weights do not fill the Flax model's variables exactly")
    return variables


def max_logit_difference(name: str, torch_seeds: Any, batch_size: int, seed: int = 0) -> float:
    """Largest |Flax - PyTorch| eval-mode output of network `name` on a random batch."""
    import torch

    torch.manual_seed(seed)
    torch_model = torch_seeds.MODELS[NETWORKS[name].seed][0]().eval()
    randomize_batch_norm(torch_model, seed)
    flax_model = create_model(name)
    variables = flax_variables_from_torch(flax_model, torch_model)
    images = np.random.default_rng(seed).normal(size=(batch_size, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(flax_model.apply(variables, images, train=False))
    return float(np.max(np.abs(got - expected)))


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("error: torch is not installed; `pip install torch` (the CPU build is enough)")
    torch_seeds = import_file(_TORCH_SEEDS.value)
    worst = 0.0
    for name in NETWORKS:
        difference = max_logit_difference(name, torch_seeds, _BATCH_SIZE.value)
        worst = max(worst, difference)
        verdict = "OK" if difference <= TOLERANCE else "MISMATCH"
        seed = NETWORKS[name].seed
        print(f"{name:22s} seed {seed}  max |logit difference| = {difference:.2e}  {verdict}")
    if worst > TOLERANCE:
        sys.exit(f"error: a network differs from PyTorch by more than {TOLERANCE:g}")


if __name__ == "__main__":
    app.run(main)
