"""Model summary: the layer table, the receptive field and the assignment's checks.

Everything is read off the model itself, a seed network or any Flax Linen module a user wrote.
The model is traced once (shapes only, no compute):

* a Flax method interceptor records every module call (its path, input and output shapes and
  own parameters): the layer table;
* the forward pass's jaxpr is followed equation by equation from the image: every convolution
  (`nn.Conv` or ours, with strides, padding, `kernel_dilation`, `feature_group_count`), pooling
  window (`nn.avg_pool`, `nn.max_pool`), strided slice and global reduction (`jnp.mean` over
  H and W) updates the receptive field with the usual recurrence (Araujo et al., Distill 2019)

      j_out = j_in * s,    r_out = r_in + d * (k - 1) * j_in,

  and where two paths meet (a residual add, a concatenation) the larger field is kept. Because
  this follows the data rather than the order of calls, branches need no special module.

An operation that moves pixels in a way the recurrence cannot express (a gather, a resize, a
transpose of H with C) ends in one line naming it and the layer it is in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_flax.errors import CifarFlaxError, first_line
from cifar_flax.models.conv import native_conv
from cifar_flax.models.layers import Conv2d

ASSIGNMENT_MAX_PARAMS = 200_000
ASSIGNMENT_MIN_RECEPTIVE_FIELD = 44
# Marks a module's equations in the jaxpr's name stack (jax.named_scope), whatever Flax adds.
SCOPE_MARK = "@"

# Primitives that act on each position alone (and may broadcast parameters over the map).
ELEMENTWISE = frozenset(
    """abs add and atan2 ceil clamp convert_element_type copy copy_p cos div eq erf erf_inv
    exp exp2 expm1 floor ge gt integer_pow is_finite le log log1p logistic lt max min mul
    ne neg not or pow reduce_precision rem round rsqrt select_n sign sin sqrt square
    stop_gradient sub tan tanh xor""".split()  # noqa: SIM905
)
SPATIAL_REDUCTIONS = {"reduce_sum": "global_avg", "reduce_max": "global_max"}
WINDOWS = {
    "reduce_window_sum": "avg_pool",
    "reduce_window_max": "max_pool",
    "reduce_window_min": "min_pool",
    "reduce_window": "pool",
}
MAX_POOLING = {"max_pool", "global_max"}


Shape = tuple[int, ...]


class SummaryError(CifarFlaxError):
    """The model does something the summary cannot account for."""


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
class Field:
    """Where a tensor derived from the image stands: map size (H = W), jump, receptive field.

    `pooled` marks a tensor whose positions no longer map to the image (pooled or flattened).
    """

    size: int
    jump: int
    field: int
    pooled: bool = False


@dataclasses.dataclass(frozen=True)
class FieldRow:
    """One operation that changes the receptive field (sizes are H = W)."""

    layer: str
    kind: str  # conv, avg_pool, max_pool, pool, slice, global_avg, global_max, flatten, merge
    n_in: int
    kernel: int | None  # None for a merge of paths, which has no window
    padding: int | str | None
    stride: int | None
    dilation: int | None
    n_out: int
    j_in: int
    j_out: int
    r_in: int
    r_out: int
    groups: int = 1
    in_features: int = 0


@dataclasses.dataclass(frozen=True)
class Summary:
    """What `--mode=summary` reports about a model."""

    model_name: str
    root: LayerCall
    field_rows: list[FieldRow]
    receptive_field: int  # at the input of the final global pooling (the last conv's)
    receptive_field_with_pooling: int  # at the model's output

    @property
    def total_params(self) -> int:
        return self.root.num_params

    @property
    def has_max_pooling(self) -> bool:
        return any(row.kind in MAX_POOLING for row in self.field_rows)

    def leaves(self) -> list[LayerCall]:
        return [call for call in self.root.walk() if not call.children and call is not self.root]

    def convs(self) -> list[FieldRow]:
        return [row for row in self.field_rows if row.kind == "conv"]

    def checks(self) -> list[tuple[str, bool]]:
        return [
            (f"params < {ASSIGNMENT_MAX_PARAMS:,}", self.total_params < ASSIGNMENT_MAX_PARAMS),
            (
                f"receptive field > {ASSIGNMENT_MIN_RECEPTIVE_FIELD}",
                self.receptive_field > ASSIGNMENT_MIN_RECEPTIVE_FIELD,
            ),
            ("depthwise convolution", any(is_depthwise(row) for row in self.convs())),
            ("dilated convolution", any(row.dilation > 1 for row in self.convs())),
            ("no max-pooling", not self.has_max_pooling),
            ("global average pooling", ends_in_global_average(self.field_rows)),
        ]


def is_depthwise(row: FieldRow) -> bool:
    """One filter per input channel: groups equal to the input channels (not merely grouped)."""
    return row.groups > 1 and row.groups == row.in_features


def ends_in_global_average(rows: list[FieldRow]) -> bool:
    """The last operation over positions averages the whole map down to one value."""
    spatial = [row for row in rows if row.kind != "merge"]
    return bool(spatial) and (
        spatial[-1].kind == "global_avg"
        or (spatial[-1].kind == "avg_pool" and spatial[-1].n_out == 1)
    )


def count_params(params: Any) -> int:
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def native_form(module: Conv2d, x: jax.Array) -> jax.Array:
    """Conv2d as one `conv_general_dilated`, the form the field analysis reads (the CPU runs an
    equal rewrite of it, see models/conv.py)."""
    params = module.variables["params"]
    y = native_conv(
        x, params["kernel"], module.stride, module.padding, module.dilation, module.groups
    )
    return y + params["bias"] if module.use_bias else y


def trace(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[LayerCall, Any]:
    """The module-call tree of `model` on an input of `input_shape`, and the forward's jaxpr."""
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    try:
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
    except Exception as error:
        raise SummaryError(f"cannot initialize the model: {first_line(error)}") from error
    stack: list[LayerCall] = []
    roots: list[LayerCall] = []

    def record(next_fun: Callable[..., Any], args: tuple, kwargs: dict, context: Any) -> Any:
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        module = context.module
        path = "/".join(module.scope.path)
        call = LayerCall(
            module=module,
            path=path or type(module).__name__,
            in_shape=tuple(getattr(args[0], "shape", ())) if args else (),
            out_shape=(),
            num_params=count_params(module.variables.get("params", {})),
        )
        (stack[-1].children if stack else roots).append(call)
        stack.append(call)
        try:
            with jax.named_scope(SCOPE_MARK + path.replace("/", ".")):
                if isinstance(module, Conv2d):
                    out = native_form(module, *args)
                else:
                    out = next_fun(*args, **kwargs)
        finally:
            stack.pop()
        call.out_shape = tuple(getattr(out, "shape", ()))
        return out

    def forward(variables: Any, x: jax.Array) -> jax.Array:
        with nn.intercept_methods(record):
            return model.apply(variables, x, train=False)

    try:
        closed = jax.make_jaxpr(forward)(variables, x)
    except Exception as error:
        raise SummaryError(f"cannot trace the model: {first_line(error)}") from error
    (root,) = roots
    return root, closed


def scope_path(name_stack: str) -> str:
    """The innermost module path in a name stack ("" for the root module)."""
    marks = [part for part in name_stack.split("/") if part.startswith(SCOPE_MARK)]
    return marks[-1][len(SCOPE_MARK) :].replace(".", "/") if marks else ""


def sub_jaxpr(eqn: Any) -> Any | None:
    """The one jaxpr a call-like equation (jit, custom_jvp/vjp, remat) runs on its inputs."""
    for value in eqn.params.values():
        jaxpr = getattr(value, "jaxpr", value)
        if hasattr(jaxpr, "eqns") and len(jaxpr.invars) == len(eqn.invars):
            return jaxpr
    return None


Fields = list[Field | None]


class FieldTracer:
    """Follows the receptive field through a jaxpr; collects a row per field-changing op."""

    def __init__(self) -> None:
        self.rows: list[FieldRow] = []

    def run(self, jaxpr: Any, fields: Fields, prefix: str = "") -> Fields:
        env: dict[Any, Field] = {}
        for var, field in zip(jaxpr.invars, fields, strict=True):
            if field is not None:
                env[var] = field
        for eqn in jaxpr.eqns:
            stack = "/".join(part for part in (prefix, str(eqn.source_info.name_stack)) if part)
            ins = [env.get(var) if not is_literal(var) else None for var in eqn.invars]
            if all(field is None for field in ins):
                continue
            outs = self.step(eqn, ins, stack)
            for var, field in zip(eqn.outvars, outs, strict=True):
                if field is not None:
                    env[var] = field
        return [None if is_literal(var) else env.get(var) for var in jaxpr.outvars]

    def step(self, eqn: Any, ins: Fields, stack: str) -> Fields:
        name = eqn.primitive.name
        inner = sub_jaxpr(eqn)
        if inner is not None:
            return self.run(inner, ins, stack)
        known = [field for field in ins if field is not None]
        if all(field.pooled for field in known):  # positions are gone: any op keeps them gone
            return [pooled(max(field.field for field in known))] * len(eqn.outvars)
        layer = scope_path(stack)
        spatial = next(i for i, field in enumerate(ins) if field is not None and not field.pooled)
        shape = tuple(eqn.invars[spatial].aval.shape)
        out_shape = tuple(eqn.outvars[0].aval.shape)
        rule = RULES.get(name)
        if rule is None and name in ELEMENTWISE:
            rule = FieldTracer.merge
        if rule is None:
            raise SummaryError(
                f"the summary cannot follow the receptive field through `{name}` "
                f"(input {shape}, output {out_shape}) in {layer or 'the top-level module'}; "
                "use convolutions, pooling, jnp.mean over H and W, or strided slices"
            )
        return rule(self, eqn, ins, layer, shape, out_shape)

    def add_row(self, layer: str, kind: str, before: Field, after: Field, **window: Any) -> Field:
        label = layer or kind
        if any(row.layer == label for row in self.rows):
            label = f"{label} ({kind})"
        self.rows.append(
            FieldRow(
                label,
                kind,
                before.size,
                window.get("kernel"),
                window.get("padding"),
                window.get("stride"),
                window.get("dilation"),
                after.size,
                before.jump,
                after.jump,
                before.field,
                after.field,
                window.get("groups", 1),
                window.get("in_features", 0),
            )
        )
        return after

    def window(self, layer: str, kind: str, field: Field, size_out: int, **window: Any) -> Field:
        effective = window["dilation"] * (window["kernel"] - 1)
        after = Field(size_out, field.jump * window["stride"], field.field + effective * field.jump)
        return self.add_row(layer, kind, field, after, **window)

    def conv(self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape) -> Fields:
        rhs = eqn.invars[1]
        numbers = eqn.params["dimension_numbers"]
        if ins[1] is not None or tuple(numbers.lhs_spec) != (0, 3, 1, 2):
            raise SummaryError(f"{layer}: only NHWC convolutions of the image are understood")
        if tuple(eqn.params["lhs_dilation"]) != (1, 1):
            raise SummaryError(
                f"{layer}: transposed (input-dilated) convolutions are not understood"
            )
        kernel = rhs.aval.shape[numbers.rhs_spec[2]], rhs.aval.shape[numbers.rhs_spec[3]]
        stride, dilation = eqn.params["window_strides"], eqn.params["rhs_dilation"]
        padding = tuple(tuple(int(p) for p in pair) for pair in eqn.params["padding"])
        return [
            self.window(
                layer,
                "conv",
                ins[0],
                out_shape[1],
                **square(layer, kernel, stride, dilation, padding),
                groups=eqn.params["feature_group_count"],
                in_features=shape[3],
            )
        ]

    def pool(self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape) -> Fields:
        params = eqn.params
        if tuple(params["base_dilation"]) != (1, 1, 1, 1):
            raise SummaryError(f"{layer}: input-dilated pooling is not understood")
        padding = tuple(tuple(int(p) for p in pair) for pair in params["padding"][1:3])
        return [
            self.window(
                layer,
                WINDOWS[eqn.primitive.name],
                ins[0],
                out_shape[1],
                **square(
                    layer,
                    params["window_dimensions"][1:3],
                    params["window_strides"][1:3],
                    params["window_dilation"][1:3],
                    padding,
                ),
            )
        ]

    def strided_slice(
        self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape
    ) -> Fields:
        strides = eqn.params["strides"] or (1,) * len(shape)
        field = ins[0]
        if tuple(strides[1:3]) == (1, 1):
            return [Field(out_shape[1], field.jump, field.field)] if len(shape) == 4 else [field]
        stride = square(layer, (1, 1), strides[1:3], (1, 1), ((0, 0), (0, 0)))
        return [self.window(layer, "slice", field, out_shape[1], **stride)]

    def pad(self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape) -> Fields:
        config = eqn.params["padding_config"]
        if any(interior for _, _, interior in config[1:3]) or ins[1] is not None:
            raise SummaryError(f"{layer}: interior padding of the image is not understood")
        field = ins[0]
        return [Field(out_shape[1], field.jump, field.field)]

    def reduce(self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape) -> Fields:
        axes = set(eqn.params["axes"])
        field = ins[0]
        if not axes & {1, 2}:
            return [field]
        kind = SPATIAL_REDUCTIONS.get(eqn.primitive.name)
        if kind is None or not {1, 2} <= axes:
            raise SummaryError(
                f"{layer}: `{eqn.primitive.name}` over axes {sorted(axes)} of the image is not "
                "understood; reduce over both H and W (jnp.mean(x, axis=(1, 2)))"
            )
        return [self.spread(layer, kind, field)]

    def spread(self, layer: str, kind: str, field: Field) -> Field:
        """Every remaining position mixed into one: global pooling, or flattening for a Dense."""
        after = Field(1, field.jump * field.size, field.field + (field.size - 1) * field.jump, True)
        window = dict(kernel=field.size, stride=field.size, dilation=1, padding=0)
        return self.add_row(layer, kind, field, after, **window)

    def reshape(self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape) -> Fields:
        field = ins[0]
        if len(out_shape) >= 3 and out_shape[1:3] == shape[1:3]:
            return [field]
        if shape[1:3] == (1, 1):
            return [pooled(field.field)]
        if len(out_shape) == 2:
            return [self.spread(layer, "flatten", field)]
        raise SummaryError(f"{layer}: reshaping the image {shape} -> {out_shape} is not understood")

    def broadcast(
        self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape
    ) -> Fields:
        field = ins[0]
        if len(out_shape) == 4 and shape[1:3] == out_shape[1:3]:
            return [field]
        if shape[1:3] == (1, 1):
            return [pooled(field.field)]
        raise SummaryError(
            f"{layer}: broadcasting the image {shape} -> {out_shape} is not understood"
        )

    def dot(self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape) -> Fields:
        (lhs_contract, rhs_contract), _ = eqn.params["dimension_numbers"]
        side = 0 if ins[0] is not None and not ins[0].pooled else 1
        contracted = set(lhs_contract if side == 0 else rhs_contract)
        if contracted & {1, 2} or side == 1 or ins[1 - side] is not None:
            raise SummaryError(
                f"{layer}: a matrix product over positions of the image is not understood"
            )
        return [ins[0]]

    def transpose(
        self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape
    ) -> Fields:
        if tuple(eqn.params["permutation"][:3]) not in ((0, 1, 2), (0, 2, 1)):
            raise SummaryError(f"{layer}: a transpose that moves H or W is not understood")
        return [ins[0]]

    def concatenate(
        self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape
    ) -> Fields:
        if eqn.params["dimension"] in (1, 2):
            raise SummaryError(f"{layer}: concatenating along H or W is not understood")
        return self.merge(eqn, ins, layer, shape, out_shape)

    def merge(self, eqn: Any, ins: Fields, layer: str, shape: Shape, out_shape: Shape) -> Fields:
        """Positions combined with positions (or with pooled values): keep the larger field."""
        spatial = [field for field in ins if field is not None and not field.pooled]
        if len({(field.size, field.jump) for field in spatial}) != 1 or (
            len(out_shape) == 4 and out_shape[1] != spatial[0].size
        ):
            raise SummaryError(f"{layer}: paths of different sizes or strides meet: {spatial}")
        fields = [field.field for field in ins if field is not None]
        out = Field(spatial[0].size, spatial[0].jump, max(fields))
        if len(set(fields)) > 1:
            before = dataclasses.replace(out, field=min(fields))
            self.add_row(f"{layer} ({eqn.primitive.name})", "merge", before, out)
        return [out] * len(eqn.outvars)


RULES: dict[str, Callable[..., Fields]] = {
    "conv_general_dilated": FieldTracer.conv,
    **dict.fromkeys(WINDOWS, FieldTracer.pool),
    "slice": FieldTracer.strided_slice,
    "pad": FieldTracer.pad,
    **dict.fromkeys(
        ("reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin"), FieldTracer.reduce
    ),
    "reshape": FieldTracer.reshape,
    "squeeze": FieldTracer.reshape,
    "expand_dims": FieldTracer.reshape,
    "broadcast_in_dim": FieldTracer.broadcast,
    "dot_general": FieldTracer.dot,
    "transpose": FieldTracer.transpose,
    "concatenate": FieldTracer.concatenate,
}


def pooled(field: int) -> Field:
    return Field(1, 1, field, pooled=True)


def is_literal(var: Any) -> bool:
    return type(var).__name__ == "Literal"


def square(
    layer: str,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> dict[str, Any]:
    """A window's settings, the same along H and W (the summary's H = W sizes need it)."""
    if (
        kernel[0] != kernel[1]
        or stride[0] != stride[1]
        or (dilation[0] != dilation[1] or padding[0] != padding[1])
    ):
        raise SummaryError(
            f"{layer}: kernel {tuple(kernel)}, stride {tuple(stride)}, dilation "
            f"{tuple(dilation)}, padding {padding}: the summary needs them equal along H and W"
        )
    low, high = padding[0]
    return dict(
        kernel=int(kernel[0]),
        stride=int(stride[0]),
        dilation=int(dilation[0]),
        padding=int(low) if low == high else f"{low},{high}",
    )


def summarize(model: nn.Module, model_name: str, image_size: int = 32) -> Summary:
    """Trace `model` on a batch of one RGB image and compute its summary."""
    root, closed = trace(model, (1, image_size, image_size, 3))
    tracer = FieldTracer()
    image = Field(image_size, 1, 1)
    fields = [None] * (len(closed.jaxpr.invars) - 1) + [image]
    (out,) = tracer.run(closed.jaxpr, fields)
    if out is None:
        raise SummaryError("the model's output does not depend on its input image")
    rows = tracer.rows
    final = out.field
    spatial = [row for row in rows if row.kind != "merge"]
    ends_pooled = bool(spatial) and spatial[-1].n_out == 1 and spatial[-1].kind != "conv"
    return Summary(
        model_name=model_name,
        root=root,
        field_rows=rows,
        receptive_field=spatial[-1].r_in if ends_pooled else final,
        receptive_field_with_pooling=final,
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


def layer_rows(summary: Summary) -> list[list[str]]:
    """A row per leaf module: its window (read off the jaxpr), output shape and parameters."""
    windows = {row.layer: row for row in summary.field_rows if row.kernel is not None}
    rows = []
    for call in summary.leaves():
        window = windows.get(call.path)
        rows.append(
            [
                call.path,
                type(call.module).__name__,
                f"{window.kernel}x{window.kernel}" if window else "-",
                window.stride if window else "-",
                window.dilation if window else "-",
                window.groups if window and window.kind == "conv" else "-",
                "x".join(map(str, call.out_shape[1:])),
                f"{call.num_params:,}",
            ]
        )
    return rows


def format_summary(summary: Summary) -> str:
    """The text `--mode=summary` prints; it ends with the totals and the PASS/FAIL checks."""
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
    headers = [
        "layer",
        "type",
        "kernel",
        "stride",
        "dilation",
        "groups",
        "output (HxWxC)",
        "params",
    ]
    return "\n".join(
        [
            f"Model: {summary.model_name}",
            "",
            _table(headers, layer_rows(summary)),
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
