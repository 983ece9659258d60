"""jaxbackbones.catalog: architectures known without the network, and the stage listing of `jaxbackbones models`."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx
from helpers import SMALL_CONFIGS
from test_image_processing import DINOV2_PREPROCESSOR, DINOV3_PREPROCESSOR, hf_pixels, random_images

from jaxbackbones import AutoBackbone, AutoConfig, TimmBackboneConfig, catalog, registry
from jaxbackbones.auto import FAMILIES, TIMM_TABLES
from jaxbackbones.models.timm import supported_architectures

# transformers' config class of each model type.
TRANSFORMERS_CONFIGS = {
    "resnet": transformers.ResNetConfig, "swin": transformers.SwinConfig, "convnext": transformers.ConvNextConfig,
    "convnextv2": transformers.ConvNextV2Config, "dinov3_convnext": transformers.DINOv3ConvNextConfig,
    "dinov2": transformers.Dinov2Config, "dinov2_with_registers": transformers.Dinov2WithRegistersConfig,
    "dinov3_vit": transformers.DINOv3ViTConfig, "hgnet_v2": transformers.HGNetV2Config,
    "rt_detr_resnet": transformers.RTDetrResNetConfig,
    "segformer": transformers.SegformerConfig, "pvt_v2": transformers.PvtV2Config,
    "timm_backbone": transformers.TimmBackboneConfig,
    "vitdet": transformers.VitDetConfig,
    # a SamModel config; its encoder's fields are the vision_config's
    "sam": lambda **vision: transformers.SamConfig(vision_config=vision),
    "hiera": transformers.HieraConfig, "sam2": transformers.Sam2Config, "sam2_video": transformers.Sam2VideoConfig,
}
# model types no hub checkpoint has: transformers publishes SAM as SamModel (`sam`) only
WITHOUT_HUB_CHECKPOINTS = {"sam_vision_model"}
# The timm architecture of the same network as a hub repo (timm's entrypoints state its shape independently of
# transformers' conversion scripts). DINOv3: the `_qkvb` variants have the query and value biases of the checkpoints
# (all but 7B).
_DINOV3_TIMM = {"vits16": "vit_small_patch16_dinov3_qkvb", "vits16plus": "vit_small_plus_patch16_dinov3_qkvb",
                "vitb16": "vit_base_patch16_dinov3_qkvb", "vitl16": "vit_large_patch16_dinov3_qkvb",
                "vith16plus": "vit_huge_plus_patch16_dinov3_qkvb", "vit7b16": "vit_7b_patch16_dinov3"}


def timm_equivalent(name: str) -> str | None:
    if name == "ustc-community/hgnet-v2":  # HGNetV2Config's defaults: B4
        return "hgnetv2_b4"
    if name.startswith("ustc-community/dfine-"):  # D-FINE's HGNetV2 sizes (its paper: B0, B0, B2, B4, B5)
        return {"nano": "hgnetv2_b0", "small": "hgnetv2_b0", "medium": "hgnetv2_b2", "large": "hgnetv2_b4",
                "xlarge": "hgnetv2_b5"}[name.split("-")[2]]
    if name.startswith(("LiheYoung/depth-anything-", "depth-anything/Depth-Anything-V2-")):  # DINOv2 backbones
        return f"vit_{name.split('-')[-2].lower()}_patch14_dinov2"
    repo = name.removeprefix("facebook/").removeprefix("openmmlab/upernet-").removeprefix("dpt-")
    for prefix, template in (("convnext-", "convnext_{}"), ("convnextv2-", "convnextv2_{}"),
                             ("dinov3-convnext-", "convnext_{}"),
                             ("dinov2-with-registers-", "vit_{}_patch14_reg4_dinov2"),
                             ("dinov2-", "vit_{}_patch14_dinov2")):
        if repo.startswith(prefix):
            return template.format(repo.removeprefix(prefix).split("-")[0])
    if repo.startswith("dinov3-vit"):
        return _DINOV3_TIMM[repo.removeprefix("dinov3-").split("-")[0]]
    if repo.startswith("sam-vit-"):
        return f"samvit_{repo.removeprefix('sam-vit-')}_patch16"
    if name.startswith(("nvidia/mit-", "OpenGVLab/pvt_v2_")):  # MiT has PVTv2's shape (its MLP ratios aside)
        return "pvt_v2_" + name.replace("-", "_").split("_")[-1]
    if name.startswith("nvidia/segformer-"):  # the fine-tuned MiTs
        return "pvt_v2_" + name.split("-")[1]
    if repo.startswith("hiera-"):
        size = repo.removeprefix("hiera-").removesuffix("-hf").removesuffix("-mae").removesuffix("-224")
        return f"hiera_{size.replace('-', '_')}_224"
    if repo.startswith(("sam2.1-hiera-", "sam2-hiera-")):
        return f"sam2_hiera_{repo.split('-hiera-')[1].removesuffix('-hf').replace('-', '_')}"
    return None


NEW_FAMILIES = sorted(name for name, known in catalog.KNOWN_CHECKPOINTS.items()
                      if known.model_type not in ("resnet", "swin", "rt_detr_resnet", "timm_backbone",
                                                  "vitdet"))  # (timm has no ViTMatte)
# The smallest checkpoint of each family, built in full (abstractly) and run.
SMALLEST = ["facebook/convnext-tiny-224", "facebook/convnextv2-atto-1k-224",
            "facebook/dinov3-convnext-tiny-pretrain-lvd1689m", "facebook/dinov2-small",
            "facebook/dinov2-with-registers-small", "facebook/dinov3-vits16-pretrain-lvd1689m",
            "ustc-community/hgnet-v2", "ustc-community/dfine-nano-coco", "PekingU/rtdetr_r18vd", "nvidia/mit-b0",
            "OpenGVLab/pvt_v2_b0", "facebook/hiera-tiny-224-hf", "facebook/sam2.1-hiera-tiny"]
# What the ViT layouts of the two sources must agree on (the others are initial values, train-mode options or the
# layouts' own quirks: timm's class token without position embedding in DINOv2 with registers, its antialiased
# position resampling).
VIT_FIELDS = ("embed_dim", "depth", "num_heads", "patch_size", "mlp_hidden", "num_channels", "mlp_activation",
              "gated_mlp", "qkv_bias", "proj_bias", "mlp_bias", "class_token", "register_tokens", "position_grid",
              "rope_theta", "norm_eps")


@pytest.mark.parametrize("family", sorted(SMALL_CONFIGS))
def test_listed_stages_are_the_modules_stages(family):
    """`stages` builds one block per stage (one layer for ViTs), or reads a timm spec: it must agree with the full
    module."""
    config = SMALL_CONFIGS[family]()
    assert catalog.stages(config) == catalog._traced_stages(config)


def test_configs_that_differ_in_their_stage_selection_share_one_trace(monkeypatch):
    traced = []
    monkeypatch.setattr(catalog, "_STAGES", {})
    monkeypatch.setattr(catalog, "_stages", lambda config: traced.append(config) or [("stem", 8, 4)])
    config = SMALL_CONFIGS["swin"]()
    listed = [catalog.stages(type(config).from_dict(config.to_dict(), out_indices=indices)) for indices in ([1], [2])]
    assert listed == [[("stem", 8, 4)]] * 2 and len(traced) == 1
    catalog.stages(type(config).from_dict(config.to_dict(), window_size=2))  # another network: traced
    assert len(traced) == 2


def test_every_model_type_and_timm_family_has_an_example():
    """The every-family tests (Linen, Orbax, the stages above) reach every model type and timm family the registry
    lists, through the families' `examples`."""
    configs = [make() for make in SMALL_CONFIGS.values()]
    assert {config.model_type for config in configs} == set(FAMILIES)
    assert {config.timm_spec.family for config in configs if isinstance(config, TimmBackboneConfig)} == set(TIMM_TABLES)


def test_a_model_type_registered_twice_is_refused(monkeypatch):
    families = registry.families()
    twice = registry.Family(model_types={"resnet": families["resnet"].model_types["resnet"]})
    monkeypatch.setattr(registry, "families", lambda: {**families, "copy": twice})
    with pytest.raises(ValueError, match=r"family 'copy' registers model_types \['resnet'\]"):
        registry.model_types()


def test_every_family_and_timm_architecture_is_listed():
    listing = {model_type: names for model_type, _, names in catalog.models()}
    assert set(listing) == set(FAMILIES)
    assert set(listing["timm_backbone"]) >= set(supported_architectures())
    for model_type, names in listing.items():
        assert (names == [model_type]) == (model_type in WITHOUT_HUB_CHECKPOINTS), f"{model_type}: {names}"
        for name in names:
            assert catalog.config_of_listing(model_type, name).model_type == model_type


def _settings(processor) -> dict:
    """What a transformers processor (ours or theirs) does, comparably."""
    def size(value):
        return None if value is None else {key: value for key, value in dict(value).items() if value is not None}

    return dict(size=size(processor.size), resample=int(processor.resample), crop=bool(processor.do_center_crop),
                crop_size=size(processor.crop_size) if processor.do_center_crop else None,
                crop_pct=getattr(processor, "crop_pct", None), mean=list(processor.image_mean),
                std=list(processor.image_std))


@pytest.mark.parametrize("name", sorted(catalog.KNOWN_CHECKPOINTS))
def test_known_checkpoints_are_valid_transformers_configs(name, tmp_path):
    """Each row builds our config, and the same values build transformers' config (no misspelt field, the same
    defaults for the rest); its preprocessing reads into the processor transformers reads it into."""
    known = catalog.KNOWN_CHECKPOINTS[name]
    ours = catalog.offline_config(name)
    theirs = TRANSFORMERS_CONFIGS[known.model_type](**known.config)
    # the stage selection and training switches too: head backbones state theirs (stages, frozen BatchNorm)
    fields = [*type(ours).defaults, *getattr(type(ours), "training_defaults", {}), "out_indices"]
    stated = theirs.vision_config.to_dict() if known.model_type == "sam" else theirs.to_dict()
    stated = {key: value for key, value in stated.items() if key in fields}
    assert ours == AutoConfig.for_model(known.model_type, **(
        {"vision_config": stated} if known.model_type == "sam" else stated))
    # the config.json transformers writes for these values reads into the same config
    (tmp_path / "config.json").write_text(theirs.to_json_string())
    hub = AutoConfig.from_pretrained(tmp_path)
    assert {key: getattr(hub, key) for key in fields} == {key: getattr(ours, key) for key in fields}
    assert hub.stage_names == ours.stage_names

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(known.preprocessing))
    # transformers has DINOv3's and SAM2's processors in its torchvision backend only
    backend = "torchvision" if known.model_type.startswith(("dinov3", "sam2")) else "pil"
    reference = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend=backend)
    assert _settings(catalog.offline_processor(name, ours)) == _settings(reference)


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_known_checkpoints_have_the_shape_of_timm_s_entrypoint(name):
    """timm's entrypoint of the same network states the same widths, depths and stages."""
    config = catalog.offline_config(name)
    # Hiera's MAE models pool queries in two stages (timm's `q_pool`), where the classifiers pool in three
    model_args = {"q_pool": 2} if name.endswith("-mae-hf") else None
    spec = TimmBackboneConfig(timm_equivalent(name), model_args=model_args).timm_spec
    stages = catalog.stages(config)
    if spec.family == "convnext":
        assert (config.depths, config.hidden_sizes, config.use_grn) == (list(spec.depths), list(spec.dims),
                                                                        spec.use_grn)
    elif spec.family == "hgnet":
        stage_fields = ("stage_in_channels", "stage_mid_channels", "stage_out_channels", "stage_num_blocks",
                        "stage_downsample", "stage_light_block", "stage_kernel_size", "stage_numb_of_layers")
        assert list(zip(*(getattr(config, field) for field in stage_fields))) == list(spec.stages)
        assert (config.stem_channels[1:], config.use_learnable_affine_block) == (list(spec.stem_chs), spec.use_lab)
    elif spec.family == "pvt_v2":
        assert (config.depths, config.hidden_sizes, config.num_attention_heads, config.sr_ratios) == (
            list(spec.depths), list(spec.embed_dims), list(spec.num_heads), list(spec.sr_ratios))
        if config.model_type == "pvt_v2":
            assert config.mlp_ratios == list(spec.mlp_ratios)
    elif spec.family == "samvit":  # the same windowed ViT; timm's blocks have torch's default LayerNorm eps
        ours = FAMILIES[config.model_type].backbone_class.layout_of(config)
        fields = ("embed_dim", "depth", "num_heads", "patch_size", "mlp_hidden", "window_size", "windowed", "rel_pos",
                  "rel_pos_grid", "pos_grid", "pos_antialias")
        assert {field: getattr(ours, field) for field in fields} == {field: getattr(spec.layout(), field)
                                                                     for field in fields}
        assert (config.output_channels, stages[-1][0]) == (spec.neck_chans, "neck")
        stages = stages[:-1]
    elif spec.family == "hiera":
        assert (config.depths, config.embed_dim, config.num_heads[0]) == (list(spec.stages), spec.embed_dim,
                                                                         spec.num_heads)
    elif spec.family == "hieradet":
        trunk = config.trunk
        assert (trunk["blocks_per_stage"], trunk["hidden_size"], trunk["num_attention_heads_per_stage"][0],
                trunk["window_size_per_stage"], trunk["global_attention_blocks"],
                trunk["window_positional_embedding_background_size"]) == (
            list(spec.stages), spec.embed_dim, spec.num_heads, list(spec.window_spec), list(spec.global_att_blocks),
            list(spec.global_pos_size))
    else:
        ours = FAMILIES[config.model_type].backbone_class.layout_of(config)
        assert {field: getattr(ours, field) for field in VIT_FIELDS} == {
            field: getattr(spec.layout(), field) for field in VIT_FIELDS}
    # the stem of transformers' layout is timm's first stage (ConvNeXt) or the tokens before the first block (ViT);
    # PVTv2, MiT and SAM2 have no stem (SAM2's neck levels follow its trunk's stages)
    first = 0 if spec.family in ("pvt_v2", "hieradet") else 1
    assert [stage[1:] for stage in stages[first:first + len(spec.num_features)]] == list(
        zip(spec.num_features, spec.reductions))


@pytest.mark.parametrize("name", sorted(name for name, known in catalog.KNOWN_CHECKPOINTS.items()
                                         if known.model_type == "rt_detr_resnet"))
def test_rt_detr_rows_have_the_stages_of_timm_s_resnet_d(name):
    """RT-DETR's ResNet-vd is PaddleClas' ResNet-vd, timm's resnet{18,34,50,101}d: the same widths and strides."""
    depth = name.removeprefix("PekingU/rtdetr_").removeprefix("v2_").removeprefix("r").removesuffix("vd")
    spec = TimmBackboneConfig(f"resnet{depth}d").timm_spec
    config = catalog.offline_config(name)
    assert config.depths == list(spec.layers)
    assert [stage[1:] for stage in catalog.stages(config)[1:]] == list(zip(spec.num_features, spec.reductions))[1:]


@pytest.mark.parametrize("name", SMALLEST)
def test_smallest_checkpoints_build_and_run(name):
    """The full module of the stated config (abstractly: no weights drawn), run at the checkpoint's input size:
    every stage's map has the listed channels and stride."""
    config = catalog.offline_config(name, out_indices=list(range(len(catalog.offline_config(name).stage_names))))
    model = nnx.eval_shape(lambda: AutoBackbone.from_config(config))
    model.eval()
    processor = catalog.offline_processor(name, config)
    size = processor.crop_size if processor.do_center_crop else processor.size  # Hiera runs at its crop size only
    height = size.get("height", size.get("shortest_edge"))
    pixels = jax.ShapeDtypeStruct((1, height, height, 3), jnp.float32)
    outputs = nnx.eval_shape(lambda model, pixels: model(pixels), model, pixels)
    assert [feature_map.shape for feature_map in outputs.feature_maps] == [
        (1, height // reduction, height // reduction, channels) for _, channels, reduction in catalog.stages(config)]


# One head row per processor its rows use (the settings test above compares every row's options)
HEAD_PROCESSOR_ROWS = ["facebook/mask2former-swin-tiny-coco-instance", "facebook/maskformer-swin-tiny-ade",
                       "shi-labs/oneformer_ade20k_swin_tiny", "facebook/dpt-dinov2-small-nyu",
                       "LiheYoung/depth-anything-small-hf", "openmmlab/upernet-swin-tiny",
                       "IDEA-Research/grounding-dino-tiny", "microsoft/table-transformer-structure-recognition",
                       "nvidia/segformer-b0-finetuned-ade-512-512"]


@pytest.mark.parametrize("name", HEAD_PROCESSOR_ROWS)
def test_head_rows_preprocess_as_transformers_does(name, tmp_path):
    """The pixels of a head row's processor, bit for bit transformers' PIL backend's on the same file."""
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(catalog.KNOWN_CHECKPOINTS[name].preprocessing))
    theirs = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    ours = catalog.offline_processor(name, catalog.offline_config(name))
    kwargs = {"task_inputs": ["semantic"]} if "oneformer" in name else {}
    # one image a call: DPT's processors keep each image's own size, which a batch of two sizes cannot hold
    for image in random_images([(97, 311), (480, 640)], seed=23):
        expected = np.asarray(hf_pixels(theirs, [image], **kwargs))
        np.testing.assert_array_equal(ours([image], data_format="channels_first").pixel_values, expected)


def test_preprocessing_is_the_hub_files_test_image_processing_states():
    assert catalog.DINOV2_PREPROCESSING == DINOV2_PREPROCESSOR
    assert catalog.DINOV3_PREPROCESSING == DINOV3_PREPROCESSOR


def test_timm_names_with_tags_and_repo_ids():
    assert catalog.timm_architecture("timm/resnet50.a1_in1k") == "resnet50"
    assert catalog.timm_architecture("swin_tiny_patch4_window7_224.ms_in1k") == "swin_tiny_patch4_window7_224"
    assert catalog.timm_architecture("timm/vit_small_patch16_dinov3.lvd1689m") == "vit_small_patch16_dinov3"
    assert catalog.timm_architecture("someone/resnet50") is None and catalog.timm_architecture("vgg16") is None
    assert catalog.offline_config("microsoft/resnet-50", out_indices=[1, 4]).out_features == ["stage1", "stage4"]
    assert catalog.offline_config("facebook/dinov2-small", out_indices=[-1]).out_features == ["stage12"]
    assert catalog.offline_config("someone/mystery-net") is None


def _d_fine(**backbone):
    """DFineConfig as transformers' convert_d_fine_original_pytorch_checkpoint_to_hf.py edits it."""
    config = transformers.DFineConfig()
    for name, value in {"hidden_sizes": [64, 128, 256, 512], "embedding_size": 32, **backbone}.items():
        setattr(config.backbone_config, name, value)
    return config


def _swin(size: str, **options):
    """The SwinConfig a head conversion script starts from: swin-tiny's (the defaults), swin-small's depths,
    SwinConfig(embed_dim=128, window_size=12, ...) at 224 or at 384, swin-large-patch4-window12-384's."""
    sizes = {"tiny": {}, "small": dict(depths=[2, 2, 18, 2]),
             "base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12),
             "large": dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12)}
    at_384 = dict(image_size=384) if size.endswith("-384") else {}
    return transformers.SwinConfig(**sizes[size.removesuffix("-384")], **at_384, **options)


STAGES_1_4 = dict(out_features=["stage1", "stage2", "stage3", "stage4"])


def _dinov2(size: str, layers: list[int], apply_layernorm: bool):
    """`Dinov2Config.from_pretrained("facebook/dinov2-<size>", out_indices=..., apply_layernorm=...,
    reshape_hidden_states=False)`, from the catalog's own row of that repo (itself checked above)."""
    config = dict(catalog.KNOWN_CHECKPOINTS[f"facebook/dinov2-{size}"].config)
    return transformers.Dinov2Config(**config, out_indices=layers, apply_layernorm=apply_layernorm,
                                     reshape_hidden_states=False)


def _mit(size: str) -> transformers.SegformerConfig:
    """SegformerConfig as convert_segformer_original_to_pytorch.py sets it for a semantic segmentation model."""
    depths, hidden_sizes, decoder = {"b0": ([2, 2, 2, 2], [32, 64, 160, 256], 256),
                                     "b5": ([3, 6, 40, 3], [64, 128, 320, 512], 768)}[size]
    return transformers.SegformerConfig(depths=depths, hidden_sizes=hidden_sizes, decoder_hidden_size=decoder,
                                        num_labels=150)


def _hiera_mae(**size):
    """HieraConfig as convert_hiera_to_hf.py --mae-model sets it for HieraForPreTraining."""
    return transformers.HieraConfig(**size, num_query_pool=2, decoder_hidden_size=512, decoder_depth=8,
                                    decoder_num_heads=16, mask_ratio=0.6)


# The detector configs of head repos with catalog rows, as transformers' conversion scripts build them.
HEAD_CONFIGS = {
    "PekingU/rtdetr_r50vd": lambda: transformers.RTDetrConfig(),
    "PekingU/rtdetr_v2_r18vd": lambda: transformers.RTDetrV2Config(backbone_config=dict(
        model_type="rt_detr_resnet", hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic",
        out_indices=[2, 3, 4])),
    "ustc-community/dfine-nano-coco": lambda: _d_fine(
        hidden_sizes=[128, 256, 512, 1024], stem_channels=[3, 16, 16], stage_in_channels=[16, 64, 256, 512],
        stage_mid_channels=[16, 32, 64, 128], stage_out_channels=[64, 256, 512, 1024], stage_num_blocks=[1, 1, 2, 1],
        stage_numb_of_layers=[3, 3, 3, 3], out_indices=[3, 4], use_learnable_affine_block=True),
    "ustc-community/dfine-xlarge-coco": lambda: _d_fine(
        hidden_sizes=[256, 512, 1024, 2048], stage_in_channels=[64, 128, 512, 1024],
        stage_mid_channels=[64, 128, 256, 512], stage_out_channels=[128, 512, 1024, 2048],
        stage_num_blocks=[1, 2, 5, 2], stage_numb_of_layers=[6, 6, 6, 6], stem_channels=[3, 32, 64]),
    "facebook/detr-resnet-50": lambda: transformers.DetrConfig(use_timm_backbone=True, backbone="resnet50"),
    "facebook/detr-resnet-50-dc5": lambda: transformers.DetrConfig(use_timm_backbone=True, backbone="resnet50",
                                                                   dilation=True),
    "microsoft/conditional-detr-resnet-50": lambda: transformers.ConditionalDetrConfig(use_timm_backbone=True,
                                                                                       backbone="resnet50"),
    "SenseTime/deformable-detr": lambda: transformers.DeformableDetrConfig(use_timm_backbone=True,
                                                                           backbone="resnet50"),
    **{f"facebook/mask2former-swin-{size.removesuffix('-384')}-{task}": (lambda size=size: transformers.Mask2FormerConfig(
        backbone_config=_swin(size, drop_path_rate=0.3, **STAGES_1_4), feature_strides=[4, 8, 16, 32]))
       for size, task in (("tiny", "coco-instance"), ("small", "ade-semantic"), ("base", "coco-panoptic"),
                          ("large-384", "cityscapes-semantic"))},
    "facebook/mask2former-swin-base-IN21k-coco-instance": lambda: transformers.Mask2FormerConfig(
        backbone_config=_swin("base", drop_path_rate=0.3, **STAGES_1_4)),
    # MaskFormer selects stages 1-4 whatever its backbone_config says
    **{f"facebook/maskformer-swin-{size.removesuffix('-384')}-{dataset}": (
        lambda size=size: transformers.MaskFormerConfig(backbone_config=_swin(size)))
       for size, dataset in (("tiny", "ade"), ("small", "coco"), ("base-384", "ade"), ("large-384", "coco"))},
    **{f"shi-labs/oneformer_{dataset}_swin_{size.removesuffix('-384')}": (
        lambda size=size: transformers.OneFormerConfig(backbone_config=_swin(size, drop_path_rate=0.3, **STAGES_1_4)))
       for dataset, size in (("ade20k", "tiny"), ("coco", "large-384"), ("cityscapes", "large-384"))},
    **{f"openmmlab/upernet-swin-{size}": (lambda size=size: transformers.UperNetConfig(
        backbone_config=_swin(size, **STAGES_1_4))) for size in ("tiny", "small", "base", "large")},
    "openmmlab/upernet-convnext-tiny": lambda: transformers.UperNetConfig(
        backbone_config=transformers.ConvNextConfig(hidden_sizes=[96, 192, 384, 768], **STAGES_1_4)),
    "openmmlab/upernet-convnext-xlarge": lambda: transformers.UperNetConfig(backbone_config=transformers.ConvNextConfig(
        depths=[3, 3, 27, 3], hidden_sizes=[256, 512, 1024, 2048], **STAGES_1_4)),
    **{f"IDEA-Research/grounding-dino-{size.removesuffix('-384')}": (
        lambda size=size: transformers.GroundingDinoConfig(backbone_config=_swin(size, out_indices=[2, 3, 4])))
       for size in ("tiny", "base-384")},
    **{f"facebook/dpt-dinov2-{size}-{dataset}": (lambda size=size, layers=layers: transformers.DPTConfig(
        backbone_config=_dinov2(size, layers, apply_layernorm=False), use_bias_in_fusion_residual=False,
        add_projection=True))
       for size, dataset, layers in (("small", "nyu", [3, 6, 9, 12]), ("giant", "kitti", [10, 20, 30, 40]))},
    **{repo: (lambda size=size, layers=layers: transformers.DepthAnythingConfig(
        backbone_config=_dinov2(size, layers, apply_layernorm=True)))
       for repo, size, layers in (("LiheYoung/depth-anything-small-hf", "small", [9, 10, 11, 12]),
                                  ("LiheYoung/depth-anything-large-hf", "large", [21, 22, 23, 24]),
                                  ("depth-anything/Depth-Anything-V2-Base-hf", "base", [3, 6, 9, 12]),
                                  ("depth-anything/Depth-Anything-V2-Large-hf", "large", [5, 12, 18, 24]))},
    **{f"microsoft/table-transformer-{task}": (lambda queries=queries: transformers.TableTransformerConfig(
        backbone="resnet18", use_timm_backbone=True, num_queries=queries))
       for task, queries in (("detection", 15), ("structure-recognition", 125))},
    "nvidia/segformer-b0-finetuned-ade-512-512": lambda: _mit("b0"),
    "nvidia/segformer-b5-finetuned-cityscapes-1024-1024": lambda: _mit("b5"),
    "facebook/hiera-tiny-224-mae-hf": lambda: _hiera_mae(depths=[1, 2, 7, 2]),
    "facebook/hiera-huge-224-mae-hf": lambda: _hiera_mae(embed_dim=256, num_heads=[4, 8, 16, 32],
                                                         depths=[2, 6, 36, 4]),
}


@pytest.mark.parametrize("name", sorted(HEAD_CONFIGS))
def test_head_rows_are_the_backbone_loading_the_head_gives(name, tmp_path):
    """A head repo's row states the backbone `AutoConfig` reads from the detector's config.json: its stages, its
    frozen BatchNorm, its dilation."""
    (tmp_path / "config.json").write_text(HEAD_CONFIGS[name]().to_json_string())
    loaded, ours = AutoConfig.from_pretrained(tmp_path), catalog.offline_config(name)
    assert type(loaded) is type(ours)
    fields = [*type(ours).defaults, *getattr(type(ours), "training_defaults", {}), "out_features", "stage_names"]
    assert {field: getattr(loaded, field) for field in fields} == {field: getattr(ours, field) for field in fields}
