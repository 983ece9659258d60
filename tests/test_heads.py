"""Backbones out of head checkpoints: a tiny randomized torch head (every tensor randomized) saved with
`save_pretrained` into the hub cache, loaded by repo id, against the head's own backbone forward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from helpers import check_maps, nhwc, randomize_torch_module, write_to_hub_cache

from jaxbackbones import AutoBackbone, AutoConfig, SwinBackbone, TimmBackbone
from jaxbackbones.heads import HEAD_KEY

SWIN = dict(embed_dim=32, depths=[1, 1, 1], num_heads=[1, 2, 2], window_size=4,
            out_features=["stage1", "stage2", "stage3"])


def mask2former():
    config = transformers.Mask2FormerConfig(
        backbone_config=transformers.SwinConfig(**SWIN), hidden_dim=32, mask_feature_size=32, feature_size=32,
        num_queries=4, encoder_layers=1, decoder_layers=2, dim_feedforward=32, num_attention_heads=2,
        encoder_feedforward_dim=32, common_stride=4, num_labels=3)
    model = transformers.Mask2FormerForUniversalSegmentation(config)
    return model, lambda m: m.model.pixel_level_module.encoder


def upernet():
    config = transformers.UperNetConfig(
        backbone_config=transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                                    out_features=["stage1", "stage2", "stage3", "stage4"]),
        hidden_size=16, auxiliary_channels=8, num_labels=3)
    return transformers.UperNetForSemanticSegmentation(config), lambda m: m.backbone


def depth_anything():
    backbone = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                         intermediate_size=64, patch_size=7, image_size=56,
                                         out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = transformers.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                              neck_hidden_sizes=[8, 16, 24, 32], fusion_hidden_size=16,
                                              head_hidden_size=8, patch_size=7)
    return transformers.DepthAnythingForDepthEstimation(config), lambda m: m.backbone


def detr():
    # the hub's older layout: a timm backbone named by use_timm_backbone + backbone
    config = transformers.DetrConfig(use_timm_backbone=True, backbone="resnet18", d_model=16, encoder_layers=1,
                                     decoder_layers=1, encoder_ffn_dim=16, decoder_ffn_dim=16,
                                     encoder_attention_heads=2, decoder_attention_heads=2, num_queries=4,
                                     num_labels=3)
    return transformers.DetrForObjectDetection(config), lambda m: m.model.backbone.model


HEADS = {"mask2former": mask2former, "upernet": upernet, "depth_anything": depth_anything, "detr": detr}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_checkpoint_gives_the_heads_backbone(name, tmp_path, hub_cache):
    jax.config.update("jax_default_matmul_precision", "highest")
    torch_model, backbone_of = HEADS[name]()
    torch_model = randomize_torch_module(torch_model.eval(), seed=3)
    repo = f"test-org/{name}-head"
    torch_model.save_pretrained(tmp_path / repo)
    write_to_hub_cache(tmp_path / repo, repo)
    model, report = AutoBackbone.from_pretrained(repo, output_loading_info=True)
    assert report.ok and report.loaded
    # the head's own keys are reported, never silently dropped
    head_keys = [key for key in report.ignored if key.startswith(HEAD_KEY)]
    assert head_keys and len(head_keys) + len(report.loaded) <= len(torch_model.state_dict())
    reference_backbone = backbone_of(torch_model)
    size = (56, 63) if name == "depth_anything" else (45, 61)
    x = np.random.RandomState(1).randn(1, 3, *size).astype(np.float32)
    with torch.no_grad():
        expected = reference_backbone(torch.from_numpy(x))
    expected = expected.feature_maps if hasattr(expected, "feature_maps") else expected
    ours = model(jnp.asarray(nhwc(x))).feature_maps
    assert len(ours) == len(expected) == len(model.out_features)
    if name == "depth_anything":  # flat tokens, as the head sees them (reshape_hidden_states=False)
        for reference, mine in zip(expected, ours):
            reference = reference.numpy()
            assert mine.shape == reference.shape
            assert np.abs(reference - np.asarray(mine)).max() / np.abs(reference).max() <= 1e-5
    else:
        check_maps(expected, ours, model.out_features)
    if name == "detr":
        assert isinstance(model, TimmBackbone) and model.config.freeze_batch_norm_2d
        assert model.out_indices == [1, 2, 3, 4]
        # keyword arguments override the head's defaults
        overridden = AutoBackbone.from_pretrained(repo, out_indices=[4], freeze_batch_norm_2d=False)
        assert overridden.out_indices == [4] and not overridden.config.freeze_batch_norm_2d
    if name == "mask2former":
        assert isinstance(model, SwinBackbone) and model.out_features == SWIN["out_features"]


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
