"""Model summary: the layer table, the receptive field and the assignment's checks.

Everything is read off the model itself. The model is traced once (shapes only, no compute)
with a Flax method interceptor that records every module call as a tree: which module, its
input and output shapes and its own parameters. The receptive field is then propagated through
that tree with the usual recurrence (Araujo et al., Distill 2019):

    j_out = j_in * s,    r_out = r_in + d * (k - 1) * j_in,
    n_out = floor((n_in + 2p - d * (k - 1) - 1) / s) + 1

Sequential containers compose their children in call order; `Residual` feeds every branch the
same input and keeps the largest field. The computed n_out is checked against the traced shape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp

from cifar_flax.models.layers import Conv2d, GlobalAvgPool, Residual

ASSIGNMENT_MAX_PARAMS = 200_000
ASSIGNMENT_MIN_RECEPTIVE_FIELD = 44


@dataclasses.dataclass
class LayerCall:
    """One call of a module during the traced forward pass, with the calls it made."""

    module: nn.Module
    path: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    num_params: int
    children: list[LayerCall] = dataclasses.field(default_factory=list)

    def walk(self) -> Iterator[LayerCall]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclasses.dataclass(frozen=True)
class Window:
    """The spatial footprint of a layer: kernel, stride, padding, dilation."""

    kernel: int
    stride: int
    padding: int
    dilation: int


@dataclasses.dataclass(frozen=True)
class FieldRow:
    """One row of the receptive-field table (sizes are H = W)."""

    layer: str
    n_in: int
    kernel: int | None  # None for a residual add, which has no window
    padding: int | None
    stride: int | None
    dilation: int | None
    n_out: int
    j_in: int
    j_out: int
    r_in: int
    r_out: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """What `--mode=summary` reports about a model."""

    model_name: str
    root: LayerCall
    field_rows: list[FieldRow]
    receptive_field: int  # at the input of the final global pooling (the last conv's)
    receptive_field_with_pooling: int  # at the model's output
    has_max_pooling: bool

    @property
    def total_params(self) -> int:
        return self.root.num_params

    def leaves(self) -> list[LayerCall]:
        return [call for call in self.root.walk() if not call.children and call is not self.root]

    def checks(self) -> list[tuple[str, bool]]:
        convs = [call for call in self.leaves() if isinstance(call.module, Conv2d)]
        return [
            (f"params < {ASSIGNMENT_MAX_PARAMS:,}", self.total_params < ASSIGNMENT_MAX_PARAMS),
            (
                f"receptive field > {ASSIGNMENT_MIN_RECEPTIVE_FIELD}",
                self.receptive_field > ASSIGNMENT_MIN_RECEPTIVE_FIELD,
            ),
            ("depthwise convolution", any(is_depthwise(call) for call in convs)),
            ("dilated convolution", any(call.module.dilation > 1 for call in convs)),
            ("no max-pooling", not self.has_max_pooling),
            ("global average pooling", ends_in_global_pooling(self.root)),
        ]


def is_depthwise(call: LayerCall) -> bool:
    """One filter per input channel: groups equal to the input channels (not merely grouped)."""
    groups = call.module.groups
    return groups > 1 and groups == call.in_shape[-1]


def ends_in_global_pooling(root: LayerCall) -> bool:
    spatial = [call for call in root.walk() if window_of(call) is not None]
    return bool(spatial) and isinstance(spatial[-1].module, GlobalAvgPool)


def window_of(call: LayerCall) -> Window | None:
    """The spatial window of a layer call, or None for layers that act per position."""
    module = call.module
    if isinstance(module, Conv2d):
        return Window(module.kernel_size, module.stride, module.padding, module.dilation)
    if isinstance(module, GlobalAvgPool):
        size = call.in_shape[1]
        return Window(size, size, 0, 1)
    return None


def trace_calls(model: nn.Module, input_shape: tuple[int, ...]) -> LayerCall:
    """Trace `model` on an input of `input_shape` (shapes only) and return its call tree."""
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    stack: list[LayerCall] = []
    roots: list[LayerCall] = []

    def record(next_fun: Callable[..., Any], args: tuple, kwargs: dict, context: Any) -> Any:
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        module = context.module
        own_params = module.variables.get("params", {})
        call = LayerCall(
            module=module,
            path="/".join(module.scope.path) or type(module).__name__,
            in_shape=tuple(args[0].shape),
            out_shape=(),
            num_params=count_params(own_params),
        )
        (stack[-1].children if stack else roots).append(call)
        stack.append(call)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            stack.pop()
        call.out_shape = tuple(out.shape)
        return out

    def forward(variables: Any, x: jax.Array) -> jax.Array:
        with nn.intercept_methods(record):
            return model.apply(variables, x, train=False)

    jax.eval_shape(forward, variables, x)
    (root,) = roots
    return root


def count_params(params: Any) -> int:
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def uses_max_pooling(model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether the forward pass contains a max reduction over windows (any max-pool)."""
    x = jnp.zeros(input_shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables)
    return any(eqn.primitive.name == "reduce_window_max" for eqn in iter_eqns(jaxpr.jaxpr))


def iter_eqns(jaxpr: Any) -> Iterator[Any]:
    """Every equation of a jaxpr, descending into the jaxprs nested in its equations."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from iter_eqns(sub)


def spatial_size(shape: tuple[int, ...]) -> int:
    """H (= W) of an NHWC shape; 1 for pooled (N, C) features."""
    return shape[1] if len(shape) == 4 else 1


@dataclasses.dataclass(frozen=True)
class FieldState:
    size: int
    jump: int
    field: int


def propagate_field(call: LayerCall, state: FieldState, rows: list[FieldRow]) -> FieldState:
    """Receptive field after `call` given the one at its input; appends a row per spatial layer."""
    window = window_of(call)
    if window is not None:
        if call.in_shape[1] != state.size:
            raise AssertionError(
                f"{call.path}: input is {call.in_shape} but the layers before it give size "
                f"{state.size}; a spatial op outside Conv2d/GlobalAvgPool is not accounted for"
            )
        effective = window.dilation * (window.kernel - 1)
        size = (state.size + 2 * window.padding - effective - 1) // window.stride + 1
        if size != spatial_size(call.out_shape):
            raise AssertionError(
                f"{call.path}: computed output size {size}, traced output {call.out_shape}"
            )
        out = FieldState(size, state.jump * window.stride, state.field + effective * state.jump)
        rows.append(
            FieldRow(
                call.path,
                state.size,
                window.kernel,
                window.padding,
                window.stride,
                window.dilation,
                out.size,
                state.jump,
                out.jump,
                state.field,
                out.field,
            )
        )
        return out
    if isinstance(call.module, Residual):
        ends = [propagate_field(child, state, rows) for child in call.children]
        if call.module.shortcut is None:
            ends.append(state)
        if len({(end.size, end.jump) for end in ends}) != 1:
            raise AssertionError(f"{call.path}: residual branches disagree in size or jump: {ends}")
        out = FieldState(ends[0].size, ends[0].jump, max(end.field for end in ends))
        rows.append(
            FieldRow(
                f"{call.path} (add)",
                state.size,
                None,
                None,
                None,
                None,
                out.size,
                state.jump,
                out.jump,
                state.field,
                out.field,
            )
        )
        return out
    for child in call.children:
        state = propagate_field(child, state, rows)
    return state


def summarize(model: nn.Module, model_name: str, image_size: int = 32) -> Summary:
    """Trace `model` on a batch of one RGB image and compute its summary."""
    input_shape = (1, image_size, image_size, 3)
    root = trace_calls(model, input_shape)
    rows: list[FieldRow] = []
    final = propagate_field(root, FieldState(image_size, 1, 1), rows)
    before_pooling = rows[-1].r_in if ends_in_global_pooling(root) else final.field
    return Summary(
        model_name=model_name,
        root=root,
        field_rows=rows,
        receptive_field=before_pooling,
        receptive_field_with_pooling=final.field,
        has_max_pooling=uses_max_pooling(model, input_shape),
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(cell).rjust(width) if i else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "-" * len(line(headers))
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def format_summary(summary: Summary) -> str:
    """The text `--mode=summary` prints; it ends with the totals and the PASS/FAIL checks."""
    layer_rows = []
    for call in summary.leaves():
        module = call.module
        window = window_of(call)
        conv = isinstance(module, Conv2d)
        layer_rows.append(
            [
                call.path,
                type(module).__name__,
                f"{window.kernel}x{window.kernel}" if window else "-",
                window.stride if window else "-",
                window.dilation if window else "-",
                module.groups if conv else "-",
                "x".join(map(str, call.out_shape[1:])),
                f"{call.num_params:,}",
            ]
        )
    field_rows = [
        [
            row.layer,
            row.n_in,
            *("-" if v is None else v for v in (row.kernel, row.padding, row.stride, row.dilation)),
            row.n_out,
            row.j_in,
            row.j_out,
            row.r_in,
            row.r_out,
        ]
        for row in summary.field_rows
    ]
    checks = [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in summary.checks()]
    return "\n".join(
        [
            f"Model: {summary.model_name}",
            "",
            _table(
                [
                    "layer",
                    "type",
                    "kernel",
                    "stride",
                    "dilation",
                    "groups",
                    "output (HxWxC)",
                    "params",
                ],
                layer_rows,
            ),
            "",
            "Receptive field (H = W; n: size, j: jump, r: receptive field)",
            _table(
                ["layer", "n_in", "k", "p", "s", "d", "n_out", "j_in", "j_out", "r_in", "r_out"],
                field_rows,
            ),
            "",
            f"Total params: {summary.total_params:,}",
            f"Receptive field: {summary.receptive_field} "
            f"({summary.receptive_field_with_pooling} including the final pooling)",
            *checks,
        ]
    )
