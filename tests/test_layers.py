"""Shared building blocks against the torch ops they stand for, and their backend-dependent code paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import assert_parity, compiled_as_users_compile

from jaxbackbones import layers


def test_gelu_matches_torch():
    x = np.random.default_rng(0).standard_normal((4, 1000)).astype(np.float32) * 4
    reference = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    assert_parity(reference, layers.get_activation("gelu")(jnp.asarray(x)), rtol=1e-6, name="gelu")
    # bfloat16 in, bfloat16 out (no silent promotion to float32)
    assert layers.get_activation("gelu")(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("as_matmul", [True, False, None])
@pytest.mark.parametrize("kernel,stride", [((1, 1), (1, 1)), ((1, 1), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)),
                                           ((2, 3), (2, 3)), ((3, 3), (2, 2))])
def test_1x1_and_patch_convolutions_either_way_equal_the_convolution(as_matmul, kernel, stride):
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (2, 9, 7, 16))  # sizes no patch divides: the rest is dropped, as torch does
    kernel = jax.random.normal(keys[1], (*kernel, 16, 24))
    dimension_numbers = ("NHWC", "HWIO", "NHWC")
    expected = jax.lax.conv_general_dilated(x, kernel, stride, ((0, 0), (0, 0)), dimension_numbers=dimension_numbers,
                                            precision=jax.lax.Precision.HIGHEST)
    with layers.rewrites.override("conv_as_matmul", as_matmul):
        ours = jax.jit(lambda x, k: layers.conv_general_dilated(x, k, stride, ((0, 0), (0, 0)),
                                                                dimension_numbers=dimension_numbers,
                                                                precision=jax.lax.Precision.HIGHEST))
        assert_parity(expected, ours(x, kernel), name="convolution")
        uses_matmul = "convolution(" not in ours.lower(x, kernel).as_text(dialect="hlo")
    rewritable = kernel.shape[:2] == (1, 1) or kernel.shape[:2] == stride
    as_matmul = as_matmul if as_matmul is not None else jax.default_backend() == "cpu"
    assert uses_matmul == (rewritable and as_matmul)


def test_fusion_fence_is_the_identity_in_value_and_derivative():
    x = jnp.array([0.0, -0.0, 1.5, -2.0, 3e38, -3e38, 1e-45, np.inf, -np.inf, np.nan], jnp.float32)
    for dtype in (jnp.float32, jnp.bfloat16):
        fenced = compiled_as_users_compile(jax.jit(layers.fusion_fence), x.astype(dtype))(x.astype(dtype))
        assert fenced.dtype == dtype
        np.testing.assert_array_equal(np.asarray(fenced, np.float32), np.asarray(x.astype(dtype), np.float32))
        assert np.signbit(np.asarray(fenced, np.float32)[1])  # -0.0 stays -0.0
    finite = x[:7]
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(layers.fusion_fence(x) * x))(finite), 2 * finite)
    _, tangent = jax.jvp(layers.fusion_fence, (finite,), (jnp.ones_like(finite),))
    np.testing.assert_array_equal(tangent, np.ones(7, np.float32))


def _ynn_fusions(compiled_text: str) -> list[set[str]]:
    """The HLO opcodes inside each YNNPACK fusion of a compiled CPU program's text."""
    bodies, name = {}, None
    for line in compiled_text.splitlines():
        if line.endswith("{") and not line.startswith(" "):
            name = line.split()[0]
            bodies[name] = set()
        elif name and "=" in line:
            bodies[name].add(line.split("=", 1)[1].split("(")[0].split()[-1])
    called = [line.split("calls=")[1].split(",")[0] for line in compiled_text.splitlines()
              if "__ynn_fusion" in line and "calls=" in line]
    return [bodies[name] for name in called]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="how XLA:CPU partitions the work")
def test_layer_norm_keeps_xla_cpu_fusions_apart():
    """XLA:CPU's YNNPACK fusions neither take a LayerNorm's producer (the depthwise sum) nor run the LayerNorm
    inside the next matrix product: either made the ConvNeXt-T block 2x slower (see `fusion_fence`)."""
    from flax import nnx

    from jaxbackbones.models.convnext import ConvNeXtBlock

    # ConvNeXt-T's first stage: XLA decides by size, and smaller shapes never had the trouble
    block = ConvNeXtBlock(96, layer_scale=0.5, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    graph, state = nnx.split(block)
    x = jnp.ones((2, 56, 56, 96))
    text = jax.jit(lambda state, x: nnx.merge(graph, state)(x)).lower(state, x).compile().as_text()
    fusions = _ynn_fusions(text)
    for opcodes in fusions:
        assert not ("reduce" in opcodes and opcodes & {"dot", "pad", "slice"}), opcodes
    if fusions:  # this XLA hands work to YNNPACK: the two products and the norm's statistics
        assert sum("dot" in opcodes for opcodes in fusions) == 2


@pytest.mark.parametrize("rewrite", [True, False])
@pytest.mark.parametrize("groups, dilation", [(1, 2), (8, 2), (8, 4), (1, 1)])
def test_dilated_conv2d_matches_torch_with_or_without_the_cpu_rewrites(rewrite, groups, dilation):
    """conv2d's dilation pads by dilation * (k - 1) // 2 as timm's get_padding; the CPU rewrites (forced on or off)
    leave a dilated convolution a convolution, depthwise ones included."""
    from flax import nnx

    conv = layers.conv2d(8, 8, 3, dilation=dilation, groups=groups, dtype=jnp.float32, param_dtype=jnp.float32,
                         rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).standard_normal((2, 13, 10, 8)).astype(np.float32)
    kernel = np.asarray(conv.kernel[...])
    reference = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                           torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()), padding=dilation,
                                           dilation=dilation, groups=groups).numpy().transpose(0, 2, 3, 1)
    with layers.rewrites.override("conv_as_matmul", rewrite), layers.rewrites.override("depthwise_shifted_sum",
                                                                                       rewrite):
        with jax.default_matmul_precision("highest"):
            assert_parity(reference, jax.jit(lambda x: conv(x))(x), name=f"dilation {dilation}")


def test_avg_pool_same_2x2_matches_timm():
    from timm.layers import AvgPool2dSame

    x = np.random.default_rng(2).standard_normal((2, 4, 7, 10)).astype(np.float32)
    reference = AvgPool2dSame(2, 1, ceil_mode=True, count_include_pad=False)(torch.from_numpy(x)).numpy()
    assert_parity(reference.transpose(0, 2, 3, 1), layers.avg_pool_same_2x2(jnp.asarray(x.transpose(0, 2, 3, 1))),
                  rtol=1e-6, name="AvgPool2dSame")
