"""timm's HGNet and HGNetV2 (`timm/models/hgnet.py`, `HighPerfGpuNet`) on jaxbackbones' HGNetV2 modules.

Stages are timm's `feature_info` modules `stages.0` ... `stages.3` (the stem is not a feature). v2 models
(`hgnetv2_b0` ... `b6`) have the PP-HGNetV2 stem and "se" aggregation; v1 models (`hgnet_tiny`, `_small`, `_base`)
a 3x3 conv stem with a 3x3/2 max-pool and ESE aggregation (see `models/hgnet_v2.py`). timm options: `use_lab` (the
learnable affine blocks; on for b0-b3), `drop_path_rate` (stochastic depth, per block linear over all blocks, as
`calculate_drop_path_rates`), and `head_hidden_size`, which only shapes what export writes back. A stage
downsamples with stride 2. `stem_chs` and `stages` (timm's `model_cfgs` entry) may be restated in model_args. State paths are `HGNetV2Backbone`'s (`stem`, `stages.i.downsample`, `stages.i.blocks.j`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from flax import nnx

from ...layers import drop_path_rates
from ..hgnet_v2 import HGNetStage, HGNetStem
from .spec import TimmSpec

# timm's model_cfgs: the stem type and channels, and per stage (in, mid, out, blocks, downsample, light block,
# kernel size, layers per block).
_CONFIGS = {
    "hgnet_tiny": ("v1", (48, 48, 96), ((96, 96, 224, 1, False, False, 3, 5), (224, 128, 448, 1, True, False, 3, 5),
                                       (448, 160, 512, 2, True, False, 3, 5), (512, 192, 768, 1, True, False, 3, 5))),
    "hgnet_small": ("v1", (64, 64, 128), ((128, 128, 256, 1, False, False, 3, 6),
                                         (256, 160, 512, 1, True, False, 3, 6), (512, 192, 768, 2, True, False, 3, 6),
                                         (768, 224, 1024, 1, True, False, 3, 6))),
    "hgnet_base": ("v1", (96, 96, 160), ((160, 192, 320, 1, False, False, 3, 7),
                                        (320, 224, 640, 2, True, False, 3, 7), (640, 256, 960, 3, True, False, 3, 7),
                                        (960, 288, 1280, 2, True, False, 3, 7))),
    "hgnetv2_b0": ("v2", (16, 16), ((16, 16, 64, 1, False, False, 3, 3), (64, 32, 256, 1, True, False, 3, 3),
                                   (256, 64, 512, 2, True, True, 5, 3), (512, 128, 1024, 1, True, True, 5, 3))),
    "hgnetv2_b1": ("v2", (24, 32), ((32, 32, 64, 1, False, False, 3, 3), (64, 48, 256, 1, True, False, 3, 3),
                                   (256, 96, 512, 2, True, True, 5, 3), (512, 192, 1024, 1, True, True, 5, 3))),
    "hgnetv2_b2": ("v2", (24, 32), ((32, 32, 96, 1, False, False, 3, 4), (96, 64, 384, 1, True, False, 3, 4),
                                   (384, 128, 768, 3, True, True, 5, 4), (768, 256, 1536, 1, True, True, 5, 4))),
    "hgnetv2_b3": ("v2", (24, 32), ((32, 32, 128, 1, False, False, 3, 5), (128, 64, 512, 1, True, False, 3, 5),
                                   (512, 128, 1024, 3, True, True, 5, 5), (1024, 256, 2048, 1, True, True, 5, 5))),
    "hgnetv2_b4": ("v2", (32, 48), ((48, 48, 128, 1, False, False, 3, 6), (128, 96, 512, 1, True, False, 3, 6),
                                   (512, 192, 1024, 3, True, True, 5, 6), (1024, 384, 2048, 1, True, True, 5, 6))),
    "hgnetv2_b5": ("v2", (32, 64), ((64, 64, 128, 1, False, False, 3, 6), (128, 128, 512, 2, True, False, 3, 6),
                                   (512, 256, 1024, 5, True, True, 5, 6), (1024, 512, 2048, 2, True, True, 5, 6))),
    "hgnetv2_b6": ("v2", (48, 96), ((96, 96, 192, 2, False, False, 3, 6), (192, 192, 512, 3, True, False, 3, 6),
                                   (512, 384, 1024, 6, True, True, 5, 6), (1024, 768, 2048, 3, True, True, 5, 6))),
}
_WITH_LAB = ("hgnetv2_b0", "hgnetv2_b1", "hgnetv2_b2", "hgnetv2_b3")

# name -> what timm's entrypoint gives `HighPerfGpuNet` (its `cfg`, spelled out, and `use_lab`).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    name: dict(stem_type=stem_type, stem_chs=stem_chs, stages=stages, use_lab=name in _WITH_LAB)
    for name, (stem_type, stem_chs, stages) in _CONFIGS.items()
}


@dataclasses.dataclass(frozen=True)
class HGNetSpec(TimmSpec):
    """A timm HGNet, resolved: `timm.models.hgnet.HighPerfGpuNet`'s arguments that shape the backbone (and its head,
    for export)."""

    stem_type: str
    stem_chs: tuple[int, ...]
    stages: tuple[tuple, ...]
    use_lab: bool = False
    drop_path_rate: float = 0.0
    head_hidden_size: int | None = 2048

    family: ClassVar[str] = "hgnet"

    def __post_init__(self):
        if self.stem_type not in ("v1", "v2"):
            raise ValueError(f"stem_type must be 'v1' or 'v2', got {self.stem_type!r}")
        if len(self.stages) != 4 or any(len(stage) != 8 for stage in self.stages):
            raise ValueError(f"timm's HGNet has 4 stages of 8 values (in, mid, out, blocks, downsample, light, "
                             f"kernel size, layers), got {self.stages}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        args["stem_chs"] = tuple(int(value) for value in args["stem_chs"])
        args["stages"] = tuple((*(int(value) for value in stage[:4]), bool(stage[4]), bool(stage[5]),
                                int(stage[6]), int(stage[7])) for stage in args["stages"])
        return args

    @property
    def stage_names(self) -> list[str]:
        return [f"stages.{i}" for i in range(4)]

    @property
    def num_features(self) -> tuple[int, ...]:
        return tuple(stage[2] for stage in self.stages)

    @property
    def reductions(self) -> tuple[int, ...]:
        current, reductions = 4, []
        for stage in self.stages:
            current *= 2 if stage[4] else 1
            reductions.append(current)
        return tuple(reductions)

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
        options = dict(lab=self.use_lab, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        rates = drop_path_rates(self.drop_path_rate, [stage[3] for stage in self.stages])
        aggregation = "ese" if self.stem_type == "v1" else "se"
        return {
            # timm's v1 stem has no learnable affine blocks
            "stem": HGNetStem((num_channels, *self.stem_chs), version=self.stem_type,
                              **{**options, "lab": self.use_lab and self.stem_type == "v2"}),
            "stages": nnx.List([
                HGNetStage(in_chs, mid_chs, out_chs, blocks, layers, downsample=downsample, stride=2,
                           light=light, kernel_size=kernel_size, drop_path=rates[i], aggregation=aggregation,
                           **options)
                for i, (in_chs, mid_chs, out_chs, blocks, downsample, light, kernel_size, layers)
                in enumerate(self.stages)
            ]),
        }

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        x = backbone.stem(x)
        hidden_states = []
        for stage in backbone.stages:
            x = stage(x, rngs)
            hidden_states.append(x)
        return hidden_states

    def stage_paths(self) -> dict[str, list[tuple]]:
        """`stages.0` is the stem and the first stage, `stages.{k}` stage k."""
        paths = {name: [("stages", i)] for i, name in enumerate(self.stage_names)}
        paths["stages.0"].append(("stem",))
        return paths

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bicubic", crop_pct=0.965, first_conv="stem.stem1.conv" if self.stem_type == "v2"
                    else "stem.stem.0.conv", classifier="head.fc")
