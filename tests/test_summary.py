"""The summary: receptive fields, layer table and assignment checks, read off the models."""

import flax.linen as nn
import jax.numpy as jnp
import pytest
from jax import lax

from cifar_flax.models import create_model, network
from cifar_flax.models.layers import Conv2d, ConvBlock, GlobalAvgPool, Residual
from cifar_flax.summary import SummaryError, format_summary, summarize

# The seeds' receptive field after each convolution (main path) and after the pooling.
CHAINS = {
    "s7_dwsep": ([3, 5, 7, 11, 15, 15, 19, 35, 43, 51, 67, 83, 83], 107),
    "s7_dilated_stride": ([3, 5, 9, 13, 21, 25, 25, 25, 33, 41, 49, 49, 49, 65, 81, 97], 121),
    "s9_inverted_residual": ([3, 3, 5, 5, 7, 7, 11, 11, 15, 15, 23, 23, 39, 39, 47, 47], 59),
    "s7_lite": ([3, 5, 5, 9, 13, 13, 13, 29, 37, 37, 53, 69, 69], 109),
    "s6_grouped": ([3, 5, 7, 11, 13, 15, 19, 19, 23, 27, 27, 31], 35),
}


@pytest.fixture(scope="module", params=list(CHAINS))
def summary(request):
    return summarize(create_model(request.param), request.param)


def test_receptive_field_chain_matches_spec(summary):
    chain, with_pooling = CHAINS[summary.model_name]
    main_path = [
        row.r_out
        for row in summary.field_rows
        if row.kernel is not None and "shortcut" not in row.layer and row.layer != "gap"
    ]
    # The seeds' chains list the stride-1 depthwise+pointwise pair of seed 002 once per conv.
    assert main_path == chain
    assert summary.receptive_field == chain[-1] == network(summary.model_name).receptive_field
    assert summary.receptive_field_with_pooling == with_pooling


def test_summary_text_ends_with_totals_and_checks(summary):
    record = network(summary.model_name)
    field = f"{record.receptive_field} ({CHAINS[summary.model_name][1]}"
    lines = format_summary(summary).splitlines()
    assert lines[-8] == f"Total params: {record.params:,}"
    assert lines[-7] == f"Receptive field: {field} including the final pooling)"
    checks = dict(line.split("  ", 1)[::-1] for line in lines[-6:])
    expected_fail = (
        {"receptive field > 44", "depthwise convolution"}
        if summary.model_name == "s6_grouped"
        else set()
    )
    assert {name for name, verdict in checks.items() if verdict == "FAIL"} == expected_fail
    assert set(checks) == {
        "params < 200,000",
        "receptive field > 44",
        "depthwise convolution",
        "dilated convolution",
        "no max-pooling",
        "global average pooling",
    }


def test_layer_table_lists_every_layer_with_its_params(summary):
    text = format_summary(summary)
    leaves = summary.leaves()
    assert sum(call.num_params for call in leaves) == summary.total_params
    for call in leaves:
        assert call.path in text


class _MaxPooled(nn.Module):
    """A network the assignment forbids: max-pooling, no GAP, no depthwise, no dilation."""

    @nn.compact
    def __call__(self, x, train=False):
        x = ConvBlock(8, name="conv")(x, train)
        x = nn.max_pool(x, (32, 32), (32, 32)).reshape(x.shape[0], -1)
        return nn.Dense(10, name="head")(x)


def test_checks_fail_for_max_pooling_and_no_gap():
    summary = summarize(_MaxPooled(), "max_pooled")
    verdicts = dict(summary.checks())
    assert verdicts["no max-pooling"] is False
    assert verdicts["global average pooling"] is False
    assert verdicts["depthwise convolution"] is False
    assert verdicts["dilated convolution"] is False


class _Gathered(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = Conv2d(4, padding=1, name="a")(x)
        x = jnp.take(x, jnp.arange(0, 32, 2), axis=1)  # a gather: no window the summary knows
        return GlobalAvgPool()(Conv2d(4, padding=1, name="b")(x))


def test_an_operation_the_summary_cannot_follow_is_one_line():
    with pytest.raises(SummaryError, match="cannot follow the receptive field through `gather`"):
        summarize(_Gathered(), "gathered")
    with pytest.raises(SummaryError) as error:
        summarize(_Gathered(), "gathered")
    assert "\n" not in str(error.value)


class _PlainLinen(nn.Module):
    """A user's network in plain flax.linen: nothing of cifar_flax, a branch without Residual."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3), padding="SAME", name="stem")(x)  # 32, r 3
        x = nn.Conv(8, (3, 3), strides=2, padding="SAME", name="down")(x)  # 16, j 2, r 5
        skip = x
        x = nn.Conv(8, (3, 3), padding=2, kernel_dilation=2, name="dilated")(x)  # r 13
        x = nn.Conv(8, (3, 3), padding=1, feature_group_count=8, name="depthwise")(x)  # r 17
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        x = nn.relu(x) + skip  # the branches meet: r 17
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # 8, j 4, r 19
        x = lax.slice(x, (0, 0, 0, 0), x.shape, (1, 2, 2, 1))  # 4, j 8, r 19
        x = nn.Dropout(0.1, deterministic=not train)(x)
        x = jnp.mean(x, axis=(1, 2))  # r 19 + 3 * 8 = 43
        return nn.Dense(10, name="head")(x)


def test_summary_of_plain_linen_layers():
    summary = summarize(_PlainLinen(), "plain")
    by_layer = {row.layer: row for row in summary.field_rows}
    assert [by_layer[name].r_out for name in ("stem", "down", "dilated", "depthwise")] == [
        3,
        5,
        13,
        17,
    ]
    assert by_layer["down"].padding == "0,1"  # SAME at stride 2 pads one side
    merge = next(row for row in summary.field_rows if row.kind == "merge")
    assert (merge.r_in, merge.r_out, merge.n_out) == (5, 17, 16)
    assert [row.kind for row in summary.field_rows[-3:]] == ["avg_pool", "slice", "global_avg"]
    assert (summary.receptive_field, summary.receptive_field_with_pooling) == (19, 43)
    verdicts = dict(summary.checks())
    assert verdicts["depthwise convolution"] and verdicts["dilated convolution"]
    assert verdicts["global average pooling"] and verdicts["no max-pooling"]
    assert not verdicts["receptive field > 44"]
    leaves = {call.path: call for call in summary.leaves()}
    assert leaves["head"].num_params == 8 * 10 + 10
    assert sum(call.num_params for call in leaves.values()) == summary.total_params
    text = format_summary(summary)
    assert "depthwise" in text and "Conv" in text and "BatchNorm" in text


class _Branch(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = ConvBlock(4, post=(), name="a")(x, train)
        return ConvBlock(4, stride=2, post=(), name="b")(x, train)


class _TwoPaths(nn.Module):
    """A strided shortcut: the merge keeps the larger field, not the sum of both paths."""

    @nn.compact
    def __call__(self, x, train=False):
        skip = ConvBlock(4, kernel_size=1, stride=2, padding=0, post=(), name="skip")
        x = Residual(_Branch(name="branch"), skip, name="merge")(x, train)
        return GlobalAvgPool()(x)


def test_residual_merge_takes_the_larger_branch():
    summary = summarize(_TwoPaths(), "two_paths")
    assert summary.receptive_field == 5
    add = next(row for row in summary.field_rows if row.layer.endswith("(add)"))
    assert (add.n_out, add.j_out, add.r_out) == (16, 2, 5)


def test_summary_of_any_input_size():
    summary = summarize(create_model("s7_lite"), "s7_lite", image_size=64)
    assert summary.receptive_field == 69  # the field does not depend on the image size
    assert summary.field_rows[-1].n_in == 10
    assert jnp.isclose(summary.total_params, 97_284)
