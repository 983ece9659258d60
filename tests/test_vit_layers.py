"""The Vision Transformer blocks of jaxbackbones.layers, each against the torch op it replaces."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm.layers
import torch
import torch.nn.functional as F
from flax import nnx
from helpers import assert_parity, randomize_torch_module
from timm.layers import pos_embed_sincos
from transformers.models.dinov3_vit import modeling_dinov3_vit

from jaxbackbones.layers import (
    Attention,
    LayerScale,
    Mlp,
    RotaryPositions,
    apply_rotary,
    bicubic_resize_matrix,
    dot_product_attention,
    resize_bicubic,
    rope_patch_coordinates,
    rewrites,
)

# Float32 rounding of torch's own weights (its source coordinate rounds at ~4e-6 on a 37-wide grid) and sums.
RESIZE_RTOL = 2e-6


def pixels(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("source, target", [
    ((37, 37), (16, 16)),  # DINOv2 at 518 -> 224: shrinking (the antialiased kernel stretches)
    ((37, 37), (16, 22)),  # non-square
    ((16, 16), (37, 37)),  # enlarging: the two kernels still differ (a = -0.75 vs -0.5, edges)
    ((14, 14), (74, 9)),
    ((5, 7), (1, 2)),  # taps beyond both edges
    ((37, 37), (38, 36)),
    ((24, 24), (24, 24)),  # same size: the identity
])
def test_resize_bicubic_matches_torch(source, target, antialias):
    x = pixels((1, 12, *source))
    reference = F.interpolate(torch.from_numpy(x), size=target, mode="bicubic", align_corners=False,
                              antialias=antialias).numpy()[0].transpose(1, 2, 0)
    ours = resize_bicubic(jnp.asarray(x[0].transpose(1, 2, 0)), target, antialias=antialias)
    assert_parity(reference, ours, rtol=RESIZE_RTOL)
    if source == target:
        np.testing.assert_array_equal(bicubic_resize_matrix(source[0], target[0], antialias), np.eye(source[0]))


def test_resize_kernels_differ():
    """The antialiased path is not the plain one even when enlarging: a mapping that mixed them up would show."""
    plain, smooth = bicubic_resize_matrix(16, 37, False), bicubic_resize_matrix(16, 37, True)
    assert np.abs(plain - smooth).max() > 1e-2
    np.testing.assert_allclose(smooth.sum(axis=1), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Rotary positions (DINOv3)


@pytest.mark.parametrize("grid", [(14, 14), (3, 7), (1, 1), (16, 10)])
def test_rotary_positions_match_transformers_and_timm(grid):
    head_dim, theta = 64, 100.0
    config = modeling_dinov3_vit.DINOv3ViTConfig(hidden_size=head_dim * 6, num_attention_heads=6, rope_theta=theta)
    reference = modeling_dinov3_vit.DINOv3ViTRopePositionEmbedding(config).eval()
    ours = RotaryPositions(head_dim, theta, deterministic=True)
    np.testing.assert_array_equal(ours.inverse_periods(), reference.inv_freq.numpy())  # bit for bit
    height, width = grid
    with torch.no_grad():
        cos, sin = reference(torch.zeros(1, 3, height * 16 + 7, width * 16))  # a remainder the grid drops
    coords = modeling_dinov3_vit.get_patches_center_coordinates(height, width, torch.float32, "cpu").numpy()
    np.testing.assert_array_equal(rope_patch_coordinates(height, width), coords)  # exactly the same coordinates
    our_cos, our_sin = ours(height, width)
    np.testing.assert_allclose(np.asarray(our_cos), cos.numpy(), rtol=0, atol=3e-7)
    np.testing.assert_allclose(np.asarray(our_sin), sin.numpy(), rtol=0, atol=3e-7)

    timm_rope = pos_embed_sincos.RotaryEmbeddingDinoV3(head_dim, temperature=theta).eval()
    timm_sin, timm_cos = timm_rope.get_embed((height, width)).chunk(2, dim=-1)
    np.testing.assert_allclose(np.asarray(our_cos), timm_cos.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(our_sin), timm_sin.numpy(), rtol=0, atol=1e-6)


def test_apply_rotary_matches_transformers():
    ours = RotaryPositions(32, 100.0, deterministic=True)
    cos, sin = ours(3, 5)
    q, k = torch.from_numpy(pixels((2, 4, 3 + 15, 32), 1)), torch.from_numpy(pixels((2, 4, 3 + 15, 32), 2))
    expected_q, expected_k = modeling_dinov3_vit.apply_rotary_pos_emb(q, k, torch.from_numpy(np.array(cos)),
                                                                      torch.from_numpy(np.array(sin)))
    for x, expected in ((q, expected_q), (k, expected_k)):  # ours is (B, T, heads, D), theirs (B, heads, T, D)
        rotated = apply_rotary(jnp.asarray(x.numpy().transpose(0, 2, 1, 3)), cos, sin)
        assert_parity(expected.numpy().transpose(0, 2, 1, 3), rotated, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(rotated)[:, :3], x.numpy().transpose(0, 2, 1, 3)[:, :3])


def test_coordinate_augmentation_formula_matches_transformers():
    """With the same random draws, the same augmented coordinates: transformers draws shift (1, 2), jitter (1, 2),
    rescale (1,) in that order; we feed it the draws torch's seeded generator makes."""
    shift, jitter, rescale = 0.3, 1.5, 2.0
    coords = torch.from_numpy(rope_patch_coordinates(4, 6))
    torch.manual_seed(3)
    expected = modeling_dinov3_vit.augment_patches_center_coordinates(coords, shift, jitter, rescale)
    torch.manual_seed(3)
    shift_hw = torch.empty(1, 2).uniform_(-shift, shift)
    jitter_hw = torch.empty(1, 2).uniform_(-math.log(jitter), math.log(jitter)).exp()
    rescale_hw = torch.empty(1).uniform_(-math.log(rescale), math.log(rescale)).exp()
    ours = (coords.numpy() + shift_hw.numpy()) * jitter_hw.numpy() * rescale_hw.numpy()
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-6)


def test_coordinate_augmentation_statistics():
    """Our draws: one shift / jitter per axis and one rescale per call, in the documented ranges, uniform (in log
    space for the scales); a key gives the same draw, another key another."""
    rope = RotaryPositions(16, 100.0, shift=0.2, jitter=1.5, rescale=2.0)
    base = jnp.asarray(rope_patch_coordinates(3, 4))
    draws = jax.jit(jax.vmap(lambda key: rope.augment(base, key)))(jax.random.split(jax.random.key(0), 4000))
    # coords = (base + s) * j * r: recover s and j * r per axis from two patches of each row / column
    scale = (draws[:, 1] - draws[:, 0]) / (base[1] - base[0])[None]  # only x differs between patches 0 and 1
    scale_y = (draws[:, 4] - draws[:, 0]) / (base[4] - base[0])[None]
    scales = jnp.stack([scale_y[:, 0], scale[:, 1]], axis=1)
    shifts = draws[:, 0] / scales - base[0]
    assert float(jnp.abs(shifts).max()) <= 0.2 + 1e-5 and float(jnp.abs(shifts).mean()) == pytest.approx(0.1, abs=0.01)
    log_scales = jnp.log(scales)
    assert float(jnp.abs(log_scales).max()) <= math.log(1.5) + math.log(2.0) + 1e-5
    # the rescale is shared by both axes: the difference of the log scales is the jitters' alone
    assert float(jnp.abs(log_scales[:, 0] - log_scales[:, 1]).max()) <= 2 * math.log(1.5) + 1e-5
    assert float(jnp.std(log_scales[:, 0])) == pytest.approx(math.sqrt((math.log(1.5) ** 2 + math.log(2.0) ** 2) / 3),
                                                             rel=0.05)
    key = jax.random.key(7)
    np.testing.assert_array_equal(rope.augment(base, key), rope.augment(base, key))

    rope.deterministic = False
    with pytest.raises(ValueError, match="no rngs were given"):
        rope(3, 4)
    first, second = rope(3, 4, rngs=nnx.Rngs(dropout=0)), rope(3, 4, rngs=nnx.Rngs(dropout=1))
    assert not np.allclose(first[0], second[0])
    rope.deterministic = True
    np.testing.assert_array_equal(rope(3, 4)[0], RotaryPositions(16, 100.0, deterministic=True)(3, 4)[0])


# --------------------------------------------------------------------------------------------------------------
# Attention, MLPs, layer scale


def _load_linear(linear: nnx.Linear, weight: torch.Tensor, bias: torch.Tensor | None = None):
    linear.kernel[...] = jnp.asarray(weight.detach().numpy().T)
    if bias is not None:
        linear.bias[...] = jnp.asarray(bias.detach().numpy())


@pytest.mark.parametrize("output_attentions", [False, True])
def test_attention_matches_timm(output_attentions):
    reference = randomize_torch_module(timm.layers.Attention(48, num_heads=4, qkv_bias=True).eval(), seed=1)
    ours = Attention(48, 4, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    _load_linear(ours.qkv, reference.qkv.weight)
    for role, bias in zip("qkv", reference.qkv.bias.detach().numpy().reshape(3, 48)):
        getattr(ours, f"{role}_bias")[...] = jnp.asarray(bias)
    _load_linear(ours.proj, reference.proj.weight, reference.proj.bias)
    x = pixels((2, 11, 48), seed=2)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    out, probs = ours(jnp.asarray(x), output_attentions=output_attentions)
    assert_parity(expected, out)
    assert (probs is not None) == output_attentions
    if output_attentions:
        assert probs.shape == (2, 4, 11, 11)
        np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attention_implementations_agree(dtype):
    """The per-head path (XLA:CPU) and `jax.nn.dot_product_attention` (GPU, TPU) compute the same."""
    q, k, v = (jnp.asarray(pixels((2, 19, 3, 16), seed), dtype) for seed in (1, 2, 3))
    with rewrites.override("per_head_attention", False):
        fused = dot_product_attention(q, k, v)
    with rewrites.override("per_head_attention", True):
        split = dot_product_attention(q, k, v)
    assert fused.dtype == split.dtype == dtype
    assert_parity(fused.astype(jnp.float32), split.astype(jnp.float32), rtol=1e-6 if dtype == jnp.float32 else 1e-2)


def test_attention_without_key_bias_and_in_bfloat16():
    """DINOv3's biases (q and v, no k); bf16 compute keeps float32 logits and softmax (checked against float32)."""
    full = Attention(32, 2, qkv_bias=(True, False, True), dtype=jnp.float32, param_dtype=jnp.float32,
                     rngs=nnx.Rngs(0))
    assert full.k_bias is None and full.q_bias is not None
    full.q_bias[...] = jnp.asarray(pixels((32,), 3))
    half = Attention(32, 2, qkv_bias=(True, False, True), dtype=jnp.bfloat16, param_dtype=jnp.float32,
                     rngs=nnx.Rngs(0))
    nnx.update(half, nnx.state(full))
    x = jnp.asarray(pixels((2, 9, 32), 4))
    out32, _ = full(x)
    out16, probs = half(x, output_attentions=True)
    assert out16.dtype == jnp.bfloat16 and probs.dtype == jnp.float32
    assert_parity(out32, out16.astype(jnp.float32), rtol=2e-2)


def test_mlps_and_layer_scale_match_timm():
    x = pixels((2, 5, 24), seed=5)
    mlp = randomize_torch_module(timm.layers.Mlp(24, 40).eval(), seed=6)
    ours = Mlp(24, 40, "gelu", dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    _load_linear(ours.fc1, mlp.fc1.weight, mlp.fc1.bias)
    _load_linear(ours.fc2, mlp.fc2.weight, mlp.fc2.bias)
    with torch.no_grad():
        assert_parity(mlp(torch.from_numpy(x)).numpy(), ours(jnp.asarray(x)))

    packed = randomize_torch_module(timm.layers.SwiGLUPacked(24, 80, act_layer=torch.nn.SiLU).eval(), seed=7)
    gated = Mlp(24, 40, "silu", gated=True, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    _load_linear(gated.fc1, packed.fc1.weight, packed.fc1.bias)
    _load_linear(gated.fc2, packed.fc2.weight, packed.fc2.bias)
    with torch.no_grad():
        assert_parity(packed(torch.from_numpy(x)).numpy(), gated(jnp.asarray(x)))

    scale = randomize_torch_module(timm.layers.LayerScale(24).eval(), seed=8)
    ours_scale = LayerScale(24)
    ours_scale.gamma[...] = jnp.asarray(scale.gamma.detach().numpy())
    with torch.no_grad():
        assert_parity(scale(torch.from_numpy(x)).numpy(), ours_scale(jnp.asarray(x)))
