"""Backend-specific rewrites: the one place that says which ops run differently on which platform, and why.

Each rewrite computes what the op it replaces computes (the same values up to float rounding, checked against the
plain op in tests/test_layers.py and tests/test_vit_layers.py), in a form the platform's compiler runs faster. A use
site asks `choose(name, rewritten, plain, *operands)`; with the rewrite's `enabled` left None the choice is made
when the program is lowered, for the platform it is lowered for (`lax.platform_dependent`: a program lowered for
CPU holds only the rewritten form, one lowered for GPU only the plain one). Turning a rewrite off (or on
everywhere) is one edit of its line below (`enabled=False` / `True`); `override` does it for a while (tests,
benchmarks/gpu_session.py), for functions traced inside it (a jitted function already traced keeps its choice).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import jax


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """platform: where the rewritten form runs (a `lax.platform_dependent` name); reason: the measurement that
    justifies it; enabled: None to rewrite on `platform` only, True or False to rewrite everywhere or nowhere."""

    platform: str
    reason: str
    enabled: bool | None = None


REWRITES: dict[str, Rewrite] = {
    # layers.conv_general_dilated: 1x1 and patch (kernel = stride) unpadded convolutions as matrix products
    "conv_as_matmul": Rewrite("cpu", "XLA:CPU ran 1x1 convolutions 1.5-2.5x slower than the same product (ResNet-50's "
                              "shapes), ConvNeXt's 4x4 stem and 2x2 downsampling 1.3-2.3x slower than the product on "
                              "their patches (ConvNeXt-T and Swin-T forward 3-5% faster)"),
    # layers.conv_general_dilated: stride-1 depthwise convolutions as sums of shifted, scaled copies
    "depthwise_shifted_sum": Rewrite("cpu", "XLA:CPU's grouped convolution ran ConvNeXt's 7x7 depthwise shapes ~10x "
                                     "slower than the shifted sum"),
    # layers.fusion_fence (every layers.LayerNorm): a clamp to +-inf that YNNPACK cannot fuse across
    "fusion_fence": Rewrite("cpu", "XLA:CPU's YNNPACK fusions pulled the depthwise sum into LayerNorm and LayerNorm "
                            "into the next product: ConvNeXt-T's block at 56x56 took 2x as long as its parts"),
    # layers.dot_product_attention: one (batch, head) pair at a time instead of jax.nn.dot_product_attention
    "per_head_attention": Rewrite("cpu", "XLA:CPU runs jax.nn.dot_product_attention as one unfused (B, heads, T, T) "
                                  "softmax; per head it is 4.2x faster at 1370 tokens (DINOv2 at 518), 2.2x at 197 "
                                  "(2 EPYC cores)"),
}

_overridden: dict[str, bool | None] = {}


@contextlib.contextmanager
def override(name: str, enabled: bool | None) -> Iterator[None]:
    """Within the block, rewrite `name` is on everywhere (True), off everywhere (False) or as its line says (None)."""
    if name not in REWRITES:
        raise ValueError(f"no rewrite {name!r}; expected one of {sorted(REWRITES)}")
    previous = _overridden.get(name, REWRITES[name].enabled)
    _overridden[name] = enabled
    try:
        yield
    finally:
        _overridden[name] = previous


def choose(name: str, rewritten: Callable, plain: Callable, *operands):
    """`rewritten(*operands)` where rewrite `name` is on, `plain(*operands)` elsewhere (both give the same shapes)."""
    rewrite = REWRITES[name]
    enabled = _overridden.get(name, rewrite.enabled)
    if enabled is not None:
        return (rewritten if enabled else plain)(*operands)
    return jax.lax.platform_dependent(*operands, **{rewrite.platform: rewritten}, default=plain)
