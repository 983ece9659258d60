"""ViTDet's simple feature pyramid (`necks.SimpleFeaturePyramid`). transformers and timm have no torch reference, so
it is checked by shape, by its gradients (finite and non-zero for every parameter), against a hand-written numpy
computation of every level, and on a one-pixel case worked out by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbackbones import AutoBackbone, AutoConfig, SimpleFeaturePyramid
from jaxbackbones.checkpoint import flat_state


def _layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _conv_transpose(x, kernel, bias):  # out[2i + a, 2j + b] = x[i, j] @ kernel[a, b] + bias, written out
    batch, height, width, _ = x.shape
    out = np.zeros((batch, 2 * height, 2 * width, kernel.shape[-1]))
    for i in range(height):
        for j in range(width):
            for a in range(2):
                for b in range(2):
                    out[:, 2 * i + a, 2 * j + b] = x[:, i, j] @ kernel[a, b] + bias
    return out


def _conv(x, kernel):  # a stride-1 convolution, zero padding kernel // 2, written out
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros((*x.shape[:3], kernel.shape[-1]))
    for a in range(k):
        for b in range(k):
            out += padded[:, a:a + x.shape[1], b:b + x.shape[2]] @ kernel[a, b]
    return out


def _gelu(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def _reference(sfp, x):
    state = {path: np.asarray(variable[...], np.float64) for path, variable in flat_state(sfp).items()}
    results = []
    for level, scale in enumerate(sfp.scales):
        def p(name):
            return state[f"{name}"]
        if scale == 4.0:
            y = _conv_transpose(x, p(f"ups.{level}.0.kernel"), p(f"ups.{level}.0.bias"))
            y = _gelu(_layer_norm(y, p(f"ups.{level}.1.scale"), p(f"ups.{level}.1.bias")))
            y = _conv_transpose(y, p(f"ups.{level}.2.kernel"), p(f"ups.{level}.2.bias"))
        elif scale == 2.0:
            y = _conv_transpose(x, p(f"ups.{level}.0.kernel"), p(f"ups.{level}.0.bias"))
        elif scale == 0.5:
            b, h, w, c = x.shape
            y = x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        else:
            y = x
        y = _layer_norm(_conv(y, p(f"laterals.{level}.0.kernel")), p(f"laterals.{level}.1.scale"),
                        p(f"laterals.{level}.1.bias"))
        results.append(_layer_norm(_conv(y, p(f"outputs.{level}.0.kernel")), p(f"outputs.{level}.1.scale"),
                                   p(f"outputs.{level}.1.bias")))
    return results


def _randomized(sfp, seed=0):
    """Every parameter drawn anew (norm scales around 1), in place; `sfp` may be abstract (`nnx.eval_shape`: building
    it eagerly would draw each initial value in an op of its own)."""
    rng = np.random.RandomState(seed)
    for path, variable in flat_state(sfp).items():
        scale = 1.0 if path.endswith("scale") else 0.3
        variable.set_value(jnp.asarray(rng.randn(*variable.shape) * scale + (1.0 if path.endswith("scale") else 0.0),
                                       jnp.float32))
    return sfp


def test_levels_shapes_and_numpy_reference():
    sfp = _randomized(nnx.eval_shape(lambda: SimpleFeaturePyramid(8, 6, rngs=nnx.Rngs(0))))
    x = np.random.RandomState(1).randn(2, 5, 7, 8)
    with jax.default_matmul_precision("highest"):
        ours = sfp(jnp.asarray(x, jnp.float32))
    assert [o.shape for o in ours] == [(2, 20, 28, 6), (2, 10, 14, 6), (2, 5, 7, 6), (2, 2, 3, 6)]
    for level, (expected, mine) in enumerate(zip(_reference(sfp, x), ours, strict=True)):
        error = np.abs(expected - np.asarray(mine)).max() / np.abs(expected).max()
        assert error < 1e-5, (level, error)
    # channels_first in and out, a subset of the levels
    first = _randomized(nnx.eval_shape(lambda: SimpleFeaturePyramid(8, 6, scales=(2.0, 0.5),
                                                                    data_format="channels_first", rngs=nnx.Rngs(0))))
    assert [o.shape for o in first(jnp.zeros((1, 8, 4, 6)))] == [(1, 6, 8, 12), (1, 6, 2, 3)]


def test_one_pixel_by_hand():
    """One channel, one pixel: the 2x level's transposed convolution spreads it over a 2x2 block as its kernel."""
    sfp = _randomized(nnx.eval_shape(lambda: SimpleFeaturePyramid(4, 1, scales=(2.0,), rngs=nnx.Rngs(0))))
    up = sfp.ups[0][0]
    up.kernel[...] = jnp.zeros((2, 2, 4, 2)).at[:, :, 0, 0].set(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    up.bias[...] = jnp.array([0.5, -1.0])
    x = jnp.zeros((1, 1, 1, 4)).at[0, 0, 0, 0].set(2.0)
    np.testing.assert_array_equal(np.asarray(up(x))[0, :, :, 0], [[2.5, 4.5], [6.5, 8.5]])
    np.testing.assert_array_equal(np.asarray(up(x))[0, :, :, 1], -np.ones((2, 2)))
    # one output channel: each LayerNorm over one channel gives its bias (the centred value is 0)
    sfp.outputs[0][1].bias[...] = jnp.array([0.25])
    np.testing.assert_allclose(np.asarray(sfp(x)[0]), np.full((1, 2, 2, 1), 0.25))


def test_gradients_reach_every_parameter_on_a_vit():
    config = AutoConfig.for_model("sam", hidden_size=16, output_channels=8, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=8, window_size=2, global_attn_indexes=[1],
                                  out_features=["stage2"])
    vit = AutoBackbone.from_config(config, rngs=nnx.Rngs(0))
    vit.eval()
    sfp = _randomized(nnx.eval_shape(lambda: SimpleFeaturePyramid(vit.channels[0], 8, rngs=nnx.Rngs(1))), seed=2)
    features = vit(jnp.asarray(np.random.RandomState(3).randn(2, 32, 32, 3), jnp.float32))

    def loss(sfp):
        weights = jnp.arange(1.0, 5.0)
        return sum(w * jnp.mean(jnp.sin(3.0 * y)) for w, y in zip(weights, sfp(features)))

    grads = nnx.jit(nnx.grad(loss))(sfp)
    for path, gradient in nnx.to_flat_state(grads):
        value = np.asarray(gradient[...])
        assert np.all(np.isfinite(value)) and np.abs(value).max() > 0, path


def test_errors():
    with pytest.raises(ValueError, match="scales must be distinct values"):
        SimpleFeaturePyramid(8, 4, scales=(3.0,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="divisible by 4"):
        SimpleFeaturePyramid(6, 4, rngs=nnx.Rngs(0))
    sfp = nnx.eval_shape(lambda: SimpleFeaturePyramid(8, 4, rngs=nnx.Rngs(0)))  # the checks come before any compute
    with pytest.raises(ValueError, match="built for a map of 8 channels"):
        sfp(jnp.zeros((1, 4, 4, 6)))
    with pytest.raises(ValueError, match="takes one map"):
        sfp([jnp.zeros((1, 4, 4, 8))] * 2)
