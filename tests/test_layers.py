"""Shared building blocks against the torch ops they stand for, and their backend-dependent code paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import assert_parity

from jaxbackbones import layers


def test_gelu_matches_torch():
    x = np.random.default_rng(0).standard_normal((4, 1000)).astype(np.float32) * 4
    reference = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    assert_parity(reference, layers.get_activation("gelu")(jnp.asarray(x)), rtol=1e-6, name="gelu")
    # bfloat16 in, bfloat16 out (no silent promotion to float32)
    assert layers.get_activation("gelu")(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("as_matmul", [True, False, None])
@pytest.mark.parametrize("stride", [1, 2])
def test_1x1_convolution_either_way_equals_the_convolution(monkeypatch, as_matmul, stride):
    monkeypatch.setattr(layers, "CONV1X1_AS_MATMUL", as_matmul)
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (2, 9, 7, 16))
    kernel = jax.random.normal(keys[1], (1, 1, 16, 24))
    dimension_numbers = ("NHWC", "HWIO", "NHWC")
    expected = jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((0, 0), (0, 0)),
                                            dimension_numbers=dimension_numbers,
                                            precision=jax.lax.Precision.HIGHEST)
    ours = jax.jit(lambda x, k: layers.conv_general_dilated(x, k, (stride, stride), ((0, 0), (0, 0)),
                                                            dimension_numbers=dimension_numbers,
                                                            precision=jax.lax.Precision.HIGHEST))
    assert_parity(expected, ours(x, kernel), name="1x1 convolution")
    uses_matmul = "convolution(" not in ours.lower(x, kernel).as_text(dialect="hlo")
    assert uses_matmul == (as_matmul if as_matmul is not None else jax.default_backend() == "cpu")
