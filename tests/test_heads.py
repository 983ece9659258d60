"""Backbones out of head checkpoints: a tiny randomized torch head (every tensor randomized) saved with
`save_pretrained` into the hub cache, loaded by repo id, against the head's own backbone forward."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from helpers import check_maps, nhwc, randomize_torch_module, write_to_hub_cache

from jaxbackbones import (AutoBackbone, AutoConfig, ConvNextBackbone, Dinov2Backbone, HGNetV2Backbone,
                          ResNetBackbone, SwinBackbone, TimmBackbone, VitDetBackbone, cli, heads, training)
from jaxbackbones.heads import HEAD_KEY

SWIN = dict(embed_dim=32, depths=[1, 1, 1], num_heads=[1, 2, 2], window_size=4,
            out_features=["stage1", "stage2", "stage3"])
# MaskFormer reads four stages
SWIN4 = dict(SWIN, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 2], out_features=None)
DINOV2_TOKENS = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=7,
                     image_size=56, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
RESNET = dict(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic")
HGNET = dict(stem_channels=[3, 8, 8], stage_in_channels=[8, 16, 24, 32], stage_mid_channels=[8, 8, 8, 8],
             stage_out_channels=[16, 24, 32, 40], stage_num_blocks=[1, 1, 1, 1],
             stage_downsample=[False, True, True, True], stage_light_block=[False, False, True, True],
             stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[2, 2, 2, 2], hidden_sizes=[16, 24, 32, 40],
             out_indices=[2, 3, 4])
DETR = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=16, decoder_ffn_dim=16,
            encoder_attention_heads=2, decoder_attention_heads=2, num_queries=4, num_labels=3)
# deformable attention's GroupNorm needs d_model a multiple of 32; tied box heads need two decoder layers
DEFORMABLE = dict(DETR, d_model=32, decoder_layers=2, encoder_n_points=1, decoder_n_points=1)
RT_DETR = dict(d_model=16, encoder_hidden_dim=16, encoder_ffn_dim=16, decoder_ffn_dim=16, encoder_layers=1,
               decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=4, num_labels=3,
               decoder_n_points=1)


def mask2former():
    config = transformers.Mask2FormerConfig(
        backbone_config=transformers.SwinConfig(**SWIN), hidden_dim=32, mask_feature_size=32, feature_size=32,
        num_queries=4, encoder_layers=1, decoder_layers=2, dim_feedforward=32, num_attention_heads=2,
        encoder_feedforward_dim=32, common_stride=4, num_labels=3)
    return transformers.Mask2FormerForUniversalSegmentation(config)


def maskformer():
    # a `swin` backbone_config, which MaskFormer builds as MaskFormerSwinBackbone with all four stages
    config = transformers.MaskFormerConfig(
        backbone_config=transformers.SwinConfig(**SWIN4), fpn_feature_size=32, mask_feature_size=32, num_labels=3,
        decoder_config=dict(model_type="detr", **DETR))
    return transformers.MaskFormerForInstanceSegmentation(config)


def oneformer():
    config = transformers.OneFormerConfig(
        backbone_config=transformers.SwinConfig(**SWIN), hidden_dim=32, conv_dim=32, mask_dim=32, num_queries=4,
        encoder_layers=1, decoder_layers=2, dim_feedforward=32, num_attention_heads=2, encoder_feedforward_dim=32,
        common_stride=4, text_encoder_width=32, text_encoder_num_layers=1, text_encoder_context_length=8,
        text_encoder_vocab_size=50, text_encoder_proj_layers=1, text_encoder_n_ctx=2, task_seq_len=8, max_seq_len=8,
        num_labels=3)
    return transformers.OneFormerForUniversalSegmentation(config)


def upernet():
    config = transformers.UperNetConfig(
        backbone_config=transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                                    out_features=["stage1", "stage2", "stage3", "stage4"]),
        hidden_size=16, auxiliary_channels=8, num_labels=3)
    return transformers.UperNetForSemanticSegmentation(config)


def dpt():
    config = transformers.DPTConfig(
        backbone_config=transformers.Dinov2Config(**DINOV2_TOKENS), neck_hidden_sizes=[8, 16, 24, 32],
        fusion_hidden_size=16, head_hidden_size=8, hidden_size=32, patch_size=7, image_size=56, is_hybrid=False)
    return transformers.DPTForDepthEstimation(config)


def depth_anything():
    config = transformers.DepthAnythingConfig(
        backbone_config=transformers.Dinov2Config(**DINOV2_TOKENS), reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 24, 32], fusion_hidden_size=16, head_hidden_size=8, patch_size=7)
    return transformers.DepthAnythingForDepthEstimation(config)


def grounding_dino():
    config = transformers.GroundingDinoConfig(
        backbone_config=transformers.SwinConfig(**SWIN), use_timm_backbone=False, num_feature_levels=3,
        text_config=dict(model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, vocab_size=50), **DEFORMABLE)
    return transformers.GroundingDinoForObjectDetection(config)


def detr():
    # the hub's older layout: a timm backbone named by use_timm_backbone + backbone
    return transformers.DetrForObjectDetection(
        transformers.DetrConfig(use_timm_backbone=True, backbone="resnet18", **DETR))


def conditional_detr():
    # a transformers ResNet as backbone_config
    backbone = transformers.ResNetConfig(**RESNET, out_features=["stage1", "stage2", "stage3", "stage4"])
    return transformers.ConditionalDetrForObjectDetection(
        transformers.ConditionalDetrConfig(use_timm_backbone=False, backbone_config=backbone, **DETR))


def deformable_detr():
    return transformers.DeformableDetrForObjectDetection(transformers.DeformableDetrConfig(
        use_timm_backbone=True, backbone="resnet18", num_feature_levels=4, **DEFORMABLE))


def table_transformer():
    return transformers.TableTransformerForObjectDetection(
        transformers.TableTransformerConfig(use_timm_backbone=True, backbone="resnet18", **DETR))


def rt_detr():
    backbone = transformers.RTDetrResNetConfig(**RESNET, out_indices=[2, 3, 4])
    return transformers.RTDetrForObjectDetection(transformers.RTDetrConfig(backbone_config=backbone, **RT_DETR))


def rt_detr_v2():
    backbone = transformers.RTDetrResNetConfig(**RESNET, out_indices=[2, 3, 4])
    return transformers.RTDetrV2ForObjectDetection(transformers.RTDetrV2Config(backbone_config=backbone, **RT_DETR))


def d_fine():
    return transformers.DFineForObjectDetection(
        transformers.DFineConfig(backbone_config=transformers.HGNetV2Config(**HGNET), **RT_DETR))


def deimv2():
    return transformers.Deimv2ForObjectDetection(
        transformers.Deimv2Config(backbone_config=transformers.HGNetV2Config(**HGNET), **RT_DETR))


def vitmatte():
    # hustvl/vitmatte-*'s layout: image + trimap in, windowed blocks with relative positions and residual blocks
    backbone = transformers.VitDetConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_channels=4, image_size=48,
        pretrain_image_size=32, window_size=3, window_block_indices=[0, 2], residual_block_indices=[1, 3],
        use_relative_position_embeddings=True, out_features=["stage4"])
    return transformers.VitMatteForImageMatting(transformers.VitMatteConfig(
        backbone_config=backbone, hidden_size=32, convstream_hidden_sizes=[8, 16, 24],
        fusion_hidden_sizes=[16, 8, 8, 8]))


HEADS = {build.__name__: build for build in (
    mask2former, maskformer, oneformer, upernet, dpt, depth_anything, grounding_dino, detr, conditional_detr,
    deformable_detr, table_transformer, rt_detr, rt_detr_v2, d_fine, deimv2, vitmatte)}
# what each head gives by default: its backbone class, and whether it freezes the backbone's BatchNorm
EXPECTED = {"mask2former": (SwinBackbone, False), "maskformer": (SwinBackbone, False),
            "oneformer": (SwinBackbone, False), "upernet": (ConvNextBackbone, False),
            "dpt": (Dinov2Backbone, False), "depth_anything": (Dinov2Backbone, False),
            "grounding_dino": (SwinBackbone, False), "detr": (TimmBackbone, True),
            "conditional_detr": (ResNetBackbone, True), "deformable_detr": (TimmBackbone, True),
            "table_transformer": (TimmBackbone, True), "rt_detr": (ResNetBackbone, True),
            "rt_detr_v2": (ResNetBackbone, True), "d_fine": (HGNetV2Backbone, True),
            "deimv2": (HGNetV2Backbone, True), "vitmatte": (VitDetBackbone, False)}


def torch_backbone(torch_model) -> torch.nn.Module:
    """The head's backbone module, found at the first of the head's prefixes that is a module path of the model
    (the prefixes are where `save_pretrained` writes the backbone, so this also checks them)."""
    modules = dict(torch_model.named_modules())
    path = next(prefix[:-1] for prefix in heads.HEADS[torch_model.config.model_type].prefixes if prefix[:-1] in modules)
    return modules[path]


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_checkpoint_gives_the_heads_backbone(name, tmp_path, hub_cache):
    jax.config.update("jax_default_matmul_precision", "highest")
    torch_model = randomize_torch_module(HEADS[name]().eval(), seed=3)
    repo = f"test-org/{name}-head"
    torch_model.save_pretrained(tmp_path / repo)
    write_to_hub_cache(tmp_path / repo, repo)
    model, report = AutoBackbone.from_pretrained(repo, output_loading_info=True)
    assert report.ok and report.loaded
    # only the norms of stages the head does not select may be missing (initialised as transformers does)
    assert all(path.split(".")[:1] == ["hidden_states_norms"] and path.split(".")[1] not in model.out_features
               for path in report.initialized), report.initialized
    # the head's own keys are reported, never silently dropped
    head_keys = [key for key in report.ignored if key.startswith(HEAD_KEY)]
    assert head_keys and len(head_keys) + len(report.loaded) <= len(torch_model.state_dict())
    backbone_class, frozen = EXPECTED[name]
    assert type(model) is backbone_class and training._freeze_batch_norm(model.config) is frozen
    reference_backbone = torch_backbone(torch_model)
    size = (56, 63) if isinstance(model, Dinov2Backbone) else (45, 61)
    x = np.random.RandomState(1).randn(1, model.config.num_channels, *size).astype(np.float32)
    with torch.no_grad():
        expected = reference_backbone(torch.from_numpy(x))
    expected = expected.feature_maps if hasattr(expected, "feature_maps") else expected
    ours = model(jnp.asarray(nhwc(x))).feature_maps
    assert len(ours) == len(expected) == len(model.out_features)
    if isinstance(model, Dinov2Backbone):  # flat tokens, as the head sees them (reshape_hidden_states=False)
        for reference, mine in zip(expected, ours):
            reference = reference.numpy()
            assert mine.shape == reference.shape
            assert np.abs(reference - np.asarray(mine)).max() / np.abs(reference).max() <= 1e-5
    else:
        check_maps(expected, ours, model.out_features)
    if name == "detr":
        assert model.out_indices == [1, 2, 3, 4]
        # keyword arguments override the head's defaults
        overridden = AutoBackbone.from_pretrained(repo, out_indices=[4], freeze_batch_norm_2d=False)
        assert overridden.out_indices == [4] and not overridden.config.freeze_batch_norm_2d
    if name == "mask2former":
        assert model.out_features == SWIN["out_features"]
    if name == "maskformer":
        assert model.config.model_type == "swin" and model.out_features == [f"stage{i}" for i in range(1, 5)]


def test_rt_detr_style_heads_freeze_batch_norm_as_their_config_says(tmp_path):
    folder = tmp_path / "rt-detr"
    folder.mkdir()
    backbone = transformers.RTDetrResNetConfig(**RESNET, out_indices=[2, 3, 4]).to_dict()
    for stated, frozen in ((None, True), (True, True), (False, False)):
        config = {"model_type": "rt_detr", "backbone_config": backbone}
        if stated is not None:
            config["freeze_backbone_batch_norms"] = stated
        (folder / "config.json").write_text(json.dumps(config))
        assert AutoConfig.from_pretrained(folder).freeze_batch_norm is frozen


def test_head_errors(tmp_path):
    folder = tmp_path / "no-backbone"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "detr", "use_timm_backbone": false, "backbone": null}')
    with pytest.raises(ValueError, match="detr config states no backbone.*default 'resnet'"):
        AutoConfig.from_pretrained(folder)
    (folder / "config.json").write_text(
        '{"model_type": "zoedepth", "backbone_config": {"model_type": "beit"}}')
    with pytest.raises(ValueError, match="zoedepth checkpoint with a 'beit' backbone"):
        AutoConfig.from_pretrained(folder)
    (folder / "config.json").write_text('{"model_type": "mystery"}')
    with pytest.raises(ValueError, match="head checkpoints"):
        AutoConfig.from_pretrained(folder)


def test_detr_style_timm_configs_as_transformers_converts_them():
    """`use_timm_backbone` + `backbone` (the hub's facebook/detr-* layout) becomes a timm_backbone config with the
    head's out_indices; `dilation` (DC5) asks for output stride 16."""
    from jaxbackbones.heads import backbone_config_dict

    legacy = {"model_type": "detr", "use_timm_backbone": True, "backbone": "resnet50", "backbone_config": None,
              "num_channels": 3}
    backbone, head = backbone_config_dict(legacy, "detr", None)
    assert backbone == {"model_type": "timm_backbone", "backbone": "resnet50", "num_channels": 3,
                        "features_only": True, "use_pretrained_backbone": False, "out_indices": [1, 2, 3, 4]}
    assert head.freeze_batch_norm
    expected = transformers.DetrConfig(**legacy).backbone_config
    assert (expected.backbone, list(expected.out_indices)) == (backbone["backbone"], backbone["out_indices"])
    dc5, _ = backbone_config_dict({**legacy, "dilation": True, "backbone_kwargs": {"in_chans": 3}}, "detr", None)
    assert dc5["output_stride"] == 16 and dc5["num_channels"] == 3 and "in_chans" not in dc5
    deformable, _ = backbone_config_dict({**legacy, "model_type": "deformable_detr", "num_feature_levels": 4},
                                         "deformable_detr", None)
    assert deformable["out_indices"] == [2, 3, 4]


@pytest.mark.parametrize("name", ["upernet", "detr"])
def test_tools_on_a_head_repo(name, tmp_path, hub_cache, capsys):
    """convert --verify (against the head's own backbone), info, and export: the backbone alone, in its own layout
    (a transformers ConvNextBackbone; DETR's timm ResNet in timm's), giving the head's backbone's maps."""
    torch_model = randomize_torch_module(HEADS[name]().eval(), seed=5)
    repo = f"test-org/{name}-tools"
    torch_model.save_pretrained(tmp_path / repo)
    write_to_hub_cache(tmp_path / repo, repo)
    native, exported = tmp_path / "native", tmp_path / "exported"
    assert cli.main(["convert", repo, str(native), "--verify"]) == 0
    output = capsys.readouterr().out
    assert "OK: worst relative difference" in output and HEAD_KEY in output
    assert cli.main(["info", str(native)]) == 0
    assert f"model_type   {'convnext' if name == 'upernet' else 'timm_backbone'}" in capsys.readouterr().out
    assert cli.main(["export", str(native), str(exported)]) == 0
    x = torch.from_numpy(np.random.RandomState(2).randn(1, 3, 45, 61).astype(np.float32))
    with torch.no_grad():
        expected = torch_backbone(torch_model)(x)
        if name == "upernet":
            expected = expected.feature_maps
            found = transformers.ConvNextBackbone.from_pretrained(exported).eval()(x).feature_maps
        else:
            import timm

            found = timm.create_model("resnet18", pretrained=True, features_only=True, out_indices=(1, 2, 3, 4),
                                      pretrained_cfg_overlay=dict(file=str(exported / "model.safetensors"))).eval()(x)
    for want, got in zip(expected, found, strict=True):  # DETR's FrozenBatchNorm2d rounds unlike BatchNorm2d
        assert (want - got).abs().max() <= 1e-6 * want.abs().max()


def test_timm_wrapper_checkpoint_gives_its_timm_backbone(tmp_path, hub_cache, capsys):
    """transformers' TimmWrapper (`timm_wrapper`: timm's config, weights under `timm_model.`) gives the timm
    architecture's backbone, equal to timm's `features_only` model with the wrapped weights; convert --verify too."""
    import timm

    jax.config.update("jax_default_matmul_precision", "highest")
    config = transformers.TimmWrapperConfig(architecture="resnet18", num_labels=3)
    torch_model = randomize_torch_module(transformers.TimmWrapperForImageClassification(config).eval(), seed=6)
    repo = "test-org/timm-wrapper"
    torch_model.save_pretrained(tmp_path / repo)
    write_to_hub_cache(tmp_path / repo, repo)
    assert json.loads((tmp_path / repo / "config.json").read_text())["model_type"] == "timm_wrapper"

    model, report = AutoBackbone.from_pretrained(repo, output_loading_info=True)
    assert type(model) is TimmBackbone and model.config.backbone == "resnet18" and report.ok
    assert not report.initialized and {"fc.weight", "fc.bias"} <= set(report.ignored)
    reference = timm.create_model("resnet18", features_only=True, out_indices=tuple(model.out_indices)).eval()
    wrapped = {key: value for key, value in torch_model.timm_model.state_dict().items() if not key.startswith("fc.")}
    reference.load_state_dict(wrapped)  # strict: every tensor of the features_only model
    x = np.random.RandomState(1).randn(1, 3, 45, 61).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x))
    check_maps(expected, model(jnp.asarray(nhwc(x))).feature_maps, model.out_features)

    assert cli.main(["convert", repo, str(tmp_path / "native"), "--verify"]) == 0
    assert "OK: worst relative difference" in capsys.readouterr().out
