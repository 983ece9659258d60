"""Input checks and layout conversion at the edges of every backbone (inside, everything is NHWC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

DATA_FORMATS = ("channels_last", "channels_first")


def validate_data_format(data_format: str) -> str:
    """`data_format` if it is "channels_last" or "channels_first", else a `ValueError` naming it."""
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    return data_format


def validate_pixel_values(pixel_values, num_channels: int, data_format: str) -> jax.Array:
    """`pixel_values` as an array, or a `ValueError` naming a wrong rank or channel count."""
    pixel_values = jnp.asarray(pixel_values)
    layout = "(batch, channels, height, width)" if data_format == "channels_first" else "(batch, height, width, channels)"
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must have 4 dimensions {layout}, got shape {tuple(pixel_values.shape)}")
    channels = pixel_values.shape[1] if data_format == "channels_first" else pixel_values.shape[-1]
    if channels != num_channels:
        raise ValueError(
            f"pixel_values has {channels} channels but the config expects num_channels={num_channels} "
            f"(shape {tuple(pixel_values.shape)}, data_format={data_format!r}, layout {layout})"
        )
    return pixel_values


def from_channels_first(x: jax.Array, data_format: str) -> jax.Array:
    """NCHW -> NHWC when `data_format` is "channels_first"; NHWC passes through."""
    return jnp.transpose(x, (0, 2, 3, 1)) if data_format == "channels_first" else x


def to_channels_first(x: jax.Array, data_format: str) -> jax.Array:
    """NHWC -> NCHW when `data_format` is "channels_first"; otherwise unchanged."""
    return jnp.transpose(x, (0, 3, 1, 2)) if data_format == "channels_first" else x


def pair(value, name: str) -> tuple[int, int]:
    """An int or an (height, width) pair as a pair of positive ints; `ValueError` naming `name` otherwise."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {value!r}")
        result = int(value[0]), int(value[1])
    else:
        result = int(value), int(value)
    if min(result) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return result
