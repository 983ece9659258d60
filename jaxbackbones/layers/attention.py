"""Transformer token mixing: multi-head self-attention (through `dot_product_attention`, rewritten per head on CPU)
and the MLP (plain or gated) of ViT, DINOv2 and DINOv3."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import initializers
from . import rewrites
from .norms import get_activation
from .positions import apply_rotary


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)) v for (B, T, heads, head_dim) inputs; logits and softmax in float32.

    On GPU and TPU this is `jax.nn.dot_product_attention` (XLA may pick cuDNN's flash attention). XLA:CPU runs that
    as one unfused (B, heads, T, T) softmax, memory-bound at long sequences: there (rewrite "per_head_attention")
    the same arithmetic runs one (batch, head) pair at a time, so that each T x T block stays in cache.
    """
    return rewrites.choose("per_head_attention", _attention_per_head, jax.nn.dot_product_attention,
                           query, key, value)


def _attention_per_head(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    batch, tokens, heads, head_dim = query.shape
    scale = np.float32(head_dim**-0.5)

    def flat(x):
        return x.transpose(0, 2, 1, 3).reshape(batch * heads, *x.shape[1:2], head_dim)

    def one_head(qkv):
        q, k, v = qkv
        logits = jnp.einsum("qd,kd->qk", q, k, preferred_element_type=jnp.float32) * scale
        return jnp.einsum("qk,kd->qd", jax.nn.softmax(logits, axis=-1).astype(value.dtype), v)

    out = jax.lax.map(one_head, (flat(query), flat(key), flat(value)))
    return out.reshape(batch, heads, tokens, head_dim).transpose(0, 2, 1, 3)


class Attention(nnx.Module):
    """Multi-head self-attention over tokens (B, T, C), through `dot_product_attention` (above).

    q, k and v come from one fused (C, 3C) kernel `qkv`; each has its own optional bias (`q_bias`, `k_bias`,
    `v_bias`: DINOv3 has no key bias, timm's plain ViTs and DINOv2 all three). Logits and softmax are float32 for
    any compute dtype (XLA may pick cuDNN's flash attention on GPU). The explicit path (einsum, softmax) runs when
    the attention probabilities are asked for, or attention dropout is active: `dot_product_attention` has neither.
    `rotary`, when given, is the (cos, sin) that rotates q and k of the patch tokens (see `apply_rotary`).
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: tuple[bool, bool, bool] = (True, True, True),
                 proj_bias: bool = True, attention_dropout: float = 0.0, proj_dropout: float = 0.0,
                 init_std: float = 0.02, dtype, param_dtype, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"{dim} channels cannot be split into num_heads={num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dtype = dtype
        init = initializers.normal(init_std)
        self.qkv = nnx.Linear(dim, 3 * dim, use_bias=False, kernel_init=init, dtype=dtype, param_dtype=param_dtype,
                              rngs=rngs)
        for name, present in zip(("q_bias", "k_bias", "v_bias"), qkv_bias):
            setattr(self, name, nnx.Param(initializers.full((dim,), 0, param_dtype)) if present else None)
        self.proj = nnx.Linear(dim, dim, use_bias=proj_bias, kernel_init=init, bias_init=initializers.zeros,
                               dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attn_drop = nnx.Dropout(attention_dropout)
        self.proj_drop = nnx.Dropout(proj_dropout)

    def __call__(self, x: jax.Array, rotary: tuple[jax.Array, jax.Array] | None = None, *,
                 rngs: nnx.Rngs | None = None, output_attentions: bool = False) -> tuple[jax.Array, jax.Array | None]:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x)
        biases = (self.q_bias, self.k_bias, self.v_bias)
        if any(bias is not None for bias in biases):
            qkv = qkv + jnp.concatenate([jnp.zeros((channels,), qkv.dtype) if bias is None else
                                         bias[...].astype(qkv.dtype) for bias in biases])
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, heads, head_dim)
        if rotary is not None:
            query, key = apply_rotary(query, *rotary), apply_rotary(key, *rotary)
        dropout_active = self.attn_drop.rate > 0 and not self.attn_drop.deterministic
        probs = None
        if output_attentions or dropout_active:
            logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
            probs = jax.nn.softmax(logits * np.float32(self.head_dim**-0.5), axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", self.attn_drop(probs, rngs=rngs).astype(self.dtype), value)
        else:
            out = dot_product_attention(query, key, value)
        out = self.proj_drop(self.proj(out.reshape(batch, tokens, channels)), rngs=rngs)
        return out, (probs if output_attentions else None)


class Mlp(nnx.Module):
    """fc1, activation, fc2 (timm's `Mlp`, transformers' `Dinov2MLP` / `DINOv3ViTMLP`); dropout after the
    activation and after fc2.

    `gated=True`: `fc2(act(gate) * value)` (SwiGLU with silu), gate and value from one fused (C, 2H) kernel `fc1`
    ([gate | value]: timm's packed `SwiGLUPacked` / DINOv2's `weights_in`; the split `gate_proj` / `up_proj`,
    `fc1_g` / `fc1_x` of other layouts are fused by the conversion tables).
    """

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu", *, gated: bool = False,
                 use_bias: bool = True, dropout: float = 0.0, init_std: float = 0.02, dtype, param_dtype,
                 rngs: nnx.Rngs):
        init = initializers.normal(init_std)
        self.gated = gated
        options = dict(use_bias=use_bias, kernel_init=init, bias_init=initializers.zeros, dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(dim, 2 * hidden_dim if gated else hidden_dim, **options)
        self.fc2 = nnx.Linear(hidden_dim, dim, **options)
        self.act = get_activation(activation)
        self.drop = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.fc1(x)
        if self.gated:
            gate, value = jnp.split(x, 2, axis=-1)
            x = self.act(gate) * value
        else:
            x = self.act(x)
        return self.drop(self.fc2(self.drop(x, rngs=rngs)), rngs=rngs)
