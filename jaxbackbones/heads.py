"""Backbones out of head checkpoints: a detection, segmentation or depth checkpoint (Mask2Former, UperNet, DPT, Depth
Anything, DETR...) is one more source layout of the backbone family its config names.

A head's `config.json` states its backbone as `backbone_config` (a backbone `config.json` dict, with the head's
`out_features` / `out_indices` and other options) or, in DETR's older layout, as `use_timm_backbone` + `backbone`
(a timm architecture; transformers' head configs turn that into a `timm_backbone` config, as `_timm_backbone_config`
does here) or `backbone` (a hub repo id, whose `config.json` is read). The head's weights hold the backbone under a
prefix (`HEADS`); `backbone_table` maps those keys with the backbone family's own table and reports every other key
as `head:<key>` in the loading report's `ignored`. Heads that freeze their backbone's BatchNorm (DETR's
`replace_batch_norm`) load with `freeze_batch_norm` on (a keyword argument overrides it).

Nothing here imports torch or the modules: `auto` reads a head config through `backbone_config_dict`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from .convert.rules import Table

HEAD_KEY = "head:"  # how the head's own keys (not the backbone's) appear in the loading report


@dataclasses.dataclass(frozen=True)
class Head:
    """One head `model_type`: where its checkpoints keep the backbone, and what it changes about it.

    prefixes: the backbone's key prefixes in the head's checkpoints (each class's: `ForX` nests the model under
        `model.`), the one transformers' `save_pretrained` writes first. They are also the torch module paths of the
        backbone inside the head (`verify` takes the reference from there).
    default_backbone: the backbone transformers builds when the config names none (said in the error, never guessed).
    timm_out_indices: the `out_indices` transformers gives a timm backbone named by `use_timm_backbone` + `backbone`
        (DETR's older layout), as a function of the head config; None where the head has no such layout.
    freeze_batch_norm: the head runs its backbone's BatchNorm frozen (DETR-style `replace_batch_norm`): True, or the
        head config's key that says so (RT-DETR's `freeze_backbone_batch_norms`, true unless the config says false).
    adapt: what the head does to the backbone config it states before building it (MaskFormer's Swin), or None.
    tables: backbone model_type -> the mapping table (a `registry.resolve` reference) of the layout the head saves
        that backbone in, where it is not the family's own (MaskFormer's MaskFormerSwinBackbone).
    wraps_timm: the head config is the timm model's own config (`architecture`, `pretrained_cfg`, ...), as
        transformers' TimmWrapper writes it; the backbone is that timm architecture.
    """

    prefixes: tuple[str, ...]
    default_backbone: str
    timm_out_indices: object = None
    freeze_batch_norm: bool | str = False
    adapt: object = None
    tables: Mapping[str, str] = dataclasses.field(default_factory=dict)
    wraps_timm: bool = False

    def freezes_batch_norm(self, config: Mapping) -> bool:
        if isinstance(self.freeze_batch_norm, str):
            return bool(config.get(self.freeze_batch_norm, True))
        return self.freeze_batch_norm


def _detr_out_indices(config: Mapping) -> list[int]:
    return [1, 2, 3, 4]


def _deformable_detr_out_indices(config: Mapping) -> list[int]:
    return [2, 3, 4] if config.get("num_feature_levels", 4) > 1 else [4]


def _maskformer_swin(backbone: dict) -> dict:
    """MaskFormer builds a `swin` backbone_config as MaskFormerSwinBackbone (the same model; its weights in another
    layout, `hf_swin.MASKFORMER_SWIN_TABLE`) with stages 1-4 selected, as `MaskFormerPixelLevelModule` does; its
    `save_pretrained` then writes that config, `maskformer-swin`, which reads as the `swin` it is."""
    if backbone.get("model_type") not in ("swin", "maskformer-swin"):
        return backbone
    backbone = {key: value for key, value in backbone.items() if key not in ("out_indices", "_out_indices")}
    return {**backbone, "model_type": "swin", "out_features": ["stage1", "stage2", "stage3", "stage4"]}


_PIXEL_LEVEL = ("model.pixel_level_module.encoder.", "pixel_level_module.encoder.")
# DETR-style detectors: transformers 5 saves `backbone.conv_encoder.model.` (the hub's layout), and its own modules sit
# at `backbone.model.`; both are read.
_CONV_ENCODER = ("model.backbone.conv_encoder.model.", "backbone.conv_encoder.model.", "model.backbone.model.",
                 "backbone.model.")

# RT-DETR-style detectors keep theirs at `model.backbone.model.` (DEIMv2: `model.conv_encoder.model.` for HGNetV2,
# `model.conv_encoder.backbone.` for DINOv3).
_RT_DETR = ("model.backbone.model.", "backbone.model.")
_DEIMV2 = ("model.conv_encoder.model.", "model.conv_encoder.backbone.", "conv_encoder.model.",
           "conv_encoder.backbone.")
_FREEZE_KEY = "freeze_backbone_batch_norms"

HEADS: dict[str, Head] = {
    "mask2former": Head(_PIXEL_LEVEL, "swin"),
    "maskformer": Head(_PIXEL_LEVEL, "swin", adapt=_maskformer_swin,
                       tables={"swin": "convert.hf_swin:MASKFORMER_SWIN_TABLE"}),
    "oneformer": Head(_PIXEL_LEVEL, "swin"),
    "upernet": Head(("backbone.",), "resnet"),
    # DPT's backbone_config variants (DPT-DINOv2...), not its hybrid ViT
    "dpt": Head(("backbone.",), "bit"),
    "depth_anything": Head(("backbone.",), "dinov2"),
    "zoedepth": Head(("backbone.",), "beit"),
    "grounding-dino": Head(_CONV_ENCODER, "swin", freeze_batch_norm=True),
    "detr": Head(_CONV_ENCODER, "resnet", _detr_out_indices, freeze_batch_norm=True),
    "conditional_detr": Head(_CONV_ENCODER, "resnet", _detr_out_indices, freeze_batch_norm=True),
    "table-transformer": Head(_CONV_ENCODER, "resnet", _detr_out_indices, freeze_batch_norm=True),
    "deformable_detr": Head(_CONV_ENCODER, "resnet", _deformable_detr_out_indices, freeze_batch_norm=True),
    "rt_detr": Head(_RT_DETR, "rt_detr_resnet", freeze_batch_norm=_FREEZE_KEY),
    "rt_detr_v2": Head(_RT_DETR, "rt_detr_resnet", freeze_batch_norm=_FREEZE_KEY),
    "d_fine": Head(_RT_DETR, "hgnet_v2", freeze_batch_norm=_FREEZE_KEY),
    "deimv2": Head(_DEIMV2, "hgnet_v2", freeze_batch_norm=_FREEZE_KEY),
    # TimmWrapperModel / TimmWrapperForImageClassification's save_pretrained: timm's config with this model_type, its
    # weights under `timm_model.` (the classifier's among them, ignored as timm's layout ignores it).
    "timm_wrapper": Head(("timm_model.",), "resnet50", wraps_timm=True),
    # ViTMatte (hustvl/vitmatte-*): a ViTDet over image + trimap (4 channels)
    "vitmatte": Head(("backbone.",), "vitdet"),
}


def _timm_backbone_config(head: Head, config: Mapping) -> dict:
    """transformers' conversion of `use_timm_backbone` + `backbone` (+ `backbone_kwargs`) into a `timm_backbone`
    config. `dilation` (DETR-DC5) is `output_stride=16`, with or without `backbone_kwargs` (transformers 5 keeps it
    only without them)."""
    backbone_kwargs = dict(config.get("backbone_kwargs") or {})
    channels = backbone_kwargs.pop("in_chans", backbone_kwargs.pop("num_channels", config.get("num_channels", 3)))
    backbone_config = {"model_type": "timm_backbone", "backbone": config["backbone"], "num_channels": channels,
                       "features_only": True, "use_pretrained_backbone": False,
                       "out_indices": head.timm_out_indices(config), **backbone_kwargs}
    if config.get("dilation"):
        backbone_config.setdefault("output_stride", 16)
    return backbone_config


def backbone_config_dict(config: Mapping, where: str, load_config_dict) -> tuple[dict, Head]:
    """The backbone's `config.json` dict that head config `config` states, and the head's entry.

    `load_config_dict(repo_id_or_path)` reads a named backbone's config (a hub repo id in `backbone`). Raises
    `ValueError` naming the head type when the config states no backbone.
    """
    head_type = config["model_type"]
    head = HEADS[head_type]
    timm_layout = head.timm_out_indices is not None and config.get("use_timm_backbone", True)
    if head.wraps_timm:
        # without model_type, `architecture` makes it a timm config; timm's own keys are kept as timm's are
        backbone = {key: value for key, value in config.items()
                    if key not in ("model_type", "architectures", "transformers_version")}
    elif config.get("backbone_config") is not None:
        backbone = dict(config["backbone_config"])
    elif config.get("backbone") and timm_layout:
        backbone = _timm_backbone_config(head, config)
    elif config.get("backbone"):
        backbone = {**load_config_dict(config["backbone"]), **(config.get("backbone_kwargs") or {})}
    else:
        raise ValueError(
            f"{where}: this {head_type} config states no backbone (backbone_config and backbone are both unset); "
            f"transformers would build a default {head.default_backbone!r} backbone with random weights, which is "
            "not what the checkpoint holds: give backbone_config or backbone")
    return (head.adapt(backbone) if head.adapt else backbone), head


def backbone_table(table: Table, head: Head) -> Table:
    """`table` (the backbone family's) for a head's checkpoint: keys under one of the head's prefixes are the
    backbone's, with the prefix removed; every other key is the head's, reported as ignored (`head:<key>`)."""
    prefixes = head.prefixes

    def split(key: str) -> str:
        prefix = next((prefix for prefix in prefixes if key.startswith(prefix)), None)
        return HEAD_KEY + key if prefix is None else key[len(prefix):]

    def prepare(state_dict):
        backbone = {split(key): array for key, array in state_dict.items()}
        return table.prepare(backbone) if table.prepare is not None else backbone

    groups = None
    if table.prepare_groups is not None:
        def groups(key: str):
            name = split(key)
            return None if name.startswith(HEAD_KEY) else table.prepare_groups(name)

    return dataclasses.replace(table, ignore=(*table.ignore, re.escape(HEAD_KEY) + ".*"), prepare=prepare,
                               prepare_groups=groups)
