"""Pictures of feature maps (PIL only, no plotting library)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

# Dark blue -> teal -> green -> yellow, as viridis runs.
_COLOUR_STOPS = np.array([[48, 18, 59], [40, 120, 142], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """A (H, W) array -> (H, W, 3) uint8 colours, after min-max scaling."""
    scaled = (values - values.min()) / max(float(values.max() - values.min()), 1e-12)
    position = scaled * (len(_COLOUR_STOPS) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(_COLOUR_STOPS) - 2)
    weight = (position - low)[..., None]
    return (_COLOUR_STOPS[low] * (1 - weight) + _COLOUR_STOPS[low + 1] * weight).astype(np.uint8)


def feature_map_grid(pixel_values: np.ndarray, feature_maps: Mapping[str, np.ndarray],
                     titles: Sequence[str] | None = None, tile: int = 160) -> Image.Image:
    """One row per image: the input as the model saw it, then each stage's channel-mean map laid over it.

    Args:
        pixel_values: (N, H, W, 3) model inputs (any normalisation; shown min-max scaled).
        feature_maps: stage name -> (N, h, w, C) NHWC feature maps.
        titles: a label per image (default: its index).
        tile: side of each square tile in pixels.
    """
    pixel_values = np.asarray(pixel_values)
    titles = list(titles) if titles is not None else [str(i) for i in range(len(pixel_values))]
    grid = Image.new("RGB", (tile * (1 + len(feature_maps)), (tile + 16) * len(pixel_values)), "white")
    draw = ImageDraw.Draw(grid)
    for row, (pixels, title) in enumerate(zip(pixel_values, titles)):
        scaled = (pixels - pixels.min()) / max(float(pixels.max() - pixels.min()), 1e-12)
        picture = Image.fromarray((scaled * 255).astype(np.uint8)).resize((tile, tile), Image.Resampling.BILINEAR)
        top = row * (tile + 16)
        grid.paste(picture, (0, top + 16))
        draw.text((2, top + 2), title[:24], fill="black")
        for column, (stage, maps) in enumerate(feature_maps.items(), start=1):
            maps = np.asarray(maps)
            heat = Image.fromarray(heat_colours(maps[row].mean(axis=-1))).resize((tile, tile), Image.Resampling.NEAREST)
            grid.paste(Image.blend(picture, heat, 0.6), (column * tile, top + 16))
            draw.text((column * tile + 2, top + 2), f"{stage} {maps.shape[1]}x{maps.shape[2]}", fill="black")
    return grid
