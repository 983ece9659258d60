"""TimmBackbone's ViTs (plain, DINOv2, DINOv2 with registers, DINOv3) against timm's features_only models with
`dynamic_img_size=True`, through timm's hub layout, every tensor randomized."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
import transformers
from flax import nnx
from helpers import assert_parity, randomize_torch_module, write_to_hub_cache
from timm.models._hub import save_for_hf

from jaxbackbones import AutoBackbone, TimmBackbone, TimmBackboneConfig, cli, trainable_filter
from jaxbackbones.auto import FAMILIES, export_pretrained
from jaxbackbones.checkpoint import flat_state
from jaxbackbones.convert.rules import convert_state_dict

SMALL = dict(depth=2, embed_dim=64, num_heads=2)


class Checkpoint:
    """A randomized timm model saved with timm's `save_for_hf` into the offline hub cache."""

    def __init__(self, root: Path, name: str, repo: str, seed: int, model_args: dict):
        model = randomize_torch_module(timm.create_model(name, **model_args).eval(), seed)
        self.name, self.repo, self.model_args = name, repo, model_args
        self.folder = root / repo.replace("/", "--")
        save_for_hf(model, self.folder, safe_serialization=True)
        self.weights = self.folder / "model.safetensors"
        write_to_hub_cache(self.folder, repo)

    def reference(self, out_indices, **overrides):
        """timm's features_only model with these weights, any input size."""
        return timm.create_model(self.name, features_only=True, out_indices=tuple(out_indices), pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(self.weights)),
                                 **{**self.model_args, "dynamic_img_size": True, **overrides}).eval()

    def features(self, pixels_nchw, out_indices, **overrides) -> list[np.ndarray]:
        with torch.no_grad():
            maps = self.reference(out_indices, **overrides)(torch.from_numpy(pixels_nchw))
        return [m.numpy().transpose(0, 2, 3, 1) for m in maps]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, hub_cache):
    root, made = tmp_path_factory.mktemp("timm-vit"), {}

    def get(name: str, repo: str | None = None, seed: int = 0, **model_args) -> Checkpoint:
        repo = repo or f"timm/{name}"
        if repo not in made:
            made[repo] = Checkpoint(root, name, repo, seed, model_args)
        return made[repo]

    return get


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


forward = nnx.jit(lambda model, x: model(x, output_hidden_states=True))

PARITY = [
    # name, hub repo, model_args, input sizes, out_indices. Full-size ViT-S/16, ViT-S/14 DINOv2 and DINOv3 S/16 at their
    # size and others (resampled with antialiasing, non-square); small ones for every option.
    ("vit_small_patch16_224", "timm/vit_small_patch16_224.augreg_in21k_ft_in1k", {}, [(224, 224), (160, 272)],
     [2, 5, 8, 11]),
    ("vit_small_patch14_dinov2", "timm/vit_small_patch14_dinov2.lvd142m", {}, [(224, 294)], [2, 5, 8, 11]),
    ("vit_small_patch16_dinov3", "timm/vit_small_patch16_dinov3.lvd1689m", {}, [(256, 256), (192, 128)], [-1]),
    ("vit_base_patch14_reg4_dinov2", "test-org/reg4-small", SMALL, [(518, 518), (70, 42)], [0, 1]),  # no_embed_class
    ("vit_giant_patch14_dinov2", "test-org/giant-small", {**SMALL, "embed_dim": 96}, [(70, 98)], [0, 1]),  # SwiGLU
    ("vit_small_plus_patch16_dinov3_qkvb", "test-org/dinov3-plus-small", SMALL, [(96, 160)], [0, 1]),  # fc1_g/x
    # no class token, registers embedded with the patches, qkv without bias, padded inputs
    ("vit_tiny_patch16_384", "test-org/vit-options", {**SMALL, "class_token": False, "global_pool": "avg",
                                                     "reg_tokens": 2, "qkv_bias": False, "dynamic_img_pad": True},
     [(384, 384), (100, 75)], [0, 1]),
]


@pytest.mark.parametrize("name, repo, model_args, sizes, out_indices", PARITY)
def test_hub_checkpoint_parity(checkpoints, name, repo, model_args, sizes, out_indices):
    checkpoint = checkpoints(name, repo=repo, **model_args)
    model = AutoBackbone.from_pretrained(repo, out_indices=out_indices)
    assert isinstance(model, TimmBackbone) and model.out_indices == out_indices
    every = list(range(len(model.stage_names)))
    reference = checkpoint.reference(every)
    for size in sizes:
        pixels = random_pixels((1, 3, *size), seed=1)
        outputs = forward(model, jnp.asarray(pixels.transpose(0, 2, 3, 1)))
        with torch.no_grad():
            expected = [m.numpy().transpose(0, 2, 3, 1) for m in reference(torch.from_numpy(pixels))]
        errors = [assert_parity(r, o, name=f"{name} {size} stage {i}")
                  for i, (r, o) in enumerate(zip(expected, outputs.hidden_states))]
        assert len(outputs.feature_maps) == len(out_indices)
        for index, ours in zip(out_indices, outputs.feature_maps):  # the selection, as timm's out_indices select
            np.testing.assert_array_equal(ours, outputs.hidden_states[index])
        print(f"\n{name} {size}: worst relative error {max(errors):.2e}")


def test_input_not_a_multiple_of_the_patch(checkpoints):
    """timm refuses it (without dynamic_img_pad), and so do we, saying what to do."""
    checkpoint = checkpoints("vit_base_patch14_reg4_dinov2", repo="test-org/reg4-small", **SMALL)
    model = AutoBackbone.from_pretrained("test-org/reg4-small")
    pixels = random_pixels((1, 3, 70, 45))
    with pytest.raises(AssertionError, match="divisible by patch size"):
        checkpoint.features(pixels, [1])
    with pytest.raises(ValueError, match="not a multiple of the 14x14 patch.*dynamic_img_pad=True"):
        model(pixels.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(backbone="vit_small_patch16_224", model_args={"num_heads": 5}), "embed_dim divisible by num_heads"),
    (dict(backbone="vit_small_patch16_224", model_args={"drop_path_rate": 1.0}), "drop_path_rate must be in"),
    (dict(backbone="vit_small_patch16_224", model_args={"qk_norm": True}), "qk_norm=True is not supported"),
    (dict(backbone="vit_small_patch16_224", model_args={"mlp_layer": "glu"}), "mlp_layer 'glu' is not supported"),
    (dict(backbone="vit_small_patch16_dinov3", model_args={"rope_type": "cat"}), "rope_type='cat' is not supported"),
    (dict(backbone="vit_small_patch16_dinov3", model_args={"embed_dim": 40, "num_heads": 4}), "divisible by 4"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimmBackboneConfig(**kwargs)


def test_transformers_timm_backbone_checkpoint(tmp_path, hub_cache):
    """What transformers' TimmBackbone.save_pretrained writes: timm's FeatureGetterNet under `_backbone.model.`."""
    reference = transformers.TimmBackbone(transformers.TimmBackboneConfig(
        backbone="vit_small_patch16_224", out_indices=[1, -1]))
    randomize_torch_module(reference.eval(), seed=3).save_pretrained(tmp_path / "hf")
    write_to_hub_cache(tmp_path / "hf", "test-org/transformers-vit")
    model = AutoBackbone.from_pretrained("test-org/transformers-vit")
    assert model.out_indices == list(reference.out_indices) and model.out_features == ["blocks.1", "blocks.11"]
    pixels = random_pixels((1, 3, 224, 224), seed=4)
    with torch.no_grad():
        expected = [m.numpy().transpose(0, 2, 3, 1) for m in reference(torch.from_numpy(pixels)).feature_maps]
    for r, o in zip(expected, model(pixels.transpose(0, 2, 3, 1)).feature_maps):
        assert_parity(r, o)


# ---------------------------------------------------------------------------------------------------------------
# Training


def test_gradients_match_timm_in_train_mode(checkpoints):
    checkpoint = checkpoints("vit_small_patch16_dinov3_qkvb", repo="test-org/dinov3-qkvb-small", seed=5, **SMALL)
    model = AutoBackbone.from_pretrained("test-org/dinov3-qkvb-small", out_indices=[0, 1])
    reference = checkpoint.reference([0, 1]).train()
    model.train()  # timm's DINOv3 does not augment its rotary coordinates unless asked to: deterministic here
    pixels = random_pixels((2, 3, 48, 80), seed=6)
    reference.zero_grad()
    sum(m.mean() for m in reference(torch.from_numpy(pixels))).backward()
    grads = {name: p.grad.numpy() for name, p in reference.named_parameters() if p.grad is not None}
    expected, report = convert_state_dict(grads, FAMILIES["timm_backbone"].table_for(model.config),
                                          {path: v.shape for path, v in flat_state(model).items()})
    assert not report.unexpected and not report.mismatched

    def loss(model, x):
        return sum(jnp.mean(m) for m in model(x).feature_maps)

    ours = nnx.grad(loss)(model, jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    ours = {".".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(ours)}
    assert set(ours) == set(expected)
    for path in ours:
        assert_parity(expected[path], ours[path], rtol=1e-4, name=path)


def test_train_mode_drop_path_rope_augmentation_and_frozen_stages(checkpoints):
    checkpoints("vit_small_patch16_dinov3_qkvb", repo="test-org/dinov3-qkvb-small", seed=5, **SMALL)
    model = AutoBackbone.from_pretrained("test-org/dinov3-qkvb-small", out_indices=[1],
                                         model_args={**SMALL, "rope_rescale_coords": 2.0}, freeze_stages=1)
    x = jnp.asarray(random_pixels((2, 48, 48, 3), seed=7))
    evaluated = model(x).feature_maps[0]
    model.train()
    with pytest.raises(ValueError, match="no rngs were given"):
        model(x)
    first = model(x, rngs=nnx.Rngs(dropout=0)).feature_maps[0]
    assert not np.allclose(first, model(x, rngs=nnx.Rngs(dropout=1)).feature_maps[0])
    assert not np.allclose(first, evaluated)
    frozen = {path[:2] if path[0] == "blocks" else path[:1] for path in trainable_filter(model).frozen}
    assert frozen == {("patch_embed",), ("cls_token",), ("reg_token",), ("blocks", 0)}


# ---------------------------------------------------------------------------------------------------------------
# The command line and export back to timm


@pytest.mark.parametrize("name, repo, model_args", [
    ("vit_small_patch16_224", "test-org/export-vit", {**SMALL, "qkv_bias": True}),
    ("vit_small_plus_patch16_dinov3_qkvb", "test-org/dinov3-plus-small", SMALL),
])
def test_convert_verify_and_export_to_timm(checkpoints, name, repo, model_args, tmp_path, capsys):
    checkpoint = checkpoints(name, repo=repo, **model_args)
    assert cli.main(["convert", repo, str(tmp_path / "flax"), "--verify"]) == 0
    output = capsys.readouterr().out
    assert "OK: worst relative difference" in output
    assert cli.main(["export", str(tmp_path / "flax"), str(tmp_path / "torch"), "--layout", "timm"]) == 0
    exported = json.loads((tmp_path / "torch" / "config.json").read_text())
    assert exported["architecture"] == name
    reloaded = timm.create_model(name, pretrained=True, **model_args,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "torch" / "model.safetensors")))
    original = timm.create_model(name, pretrained=True, **model_args,
                                 pretrained_cfg_overlay=dict(file=str(checkpoint.weights)))
    before, after = original.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys()  # timm loaded strictly: placeholders where its head and norm are
    for key, tensor in before.items():
        if not key.startswith(("head.", "norm.", "fc_norm.")):
            assert torch.equal(tensor, after[key]), key
    features = timm.create_model(f"local-dir:{tmp_path / 'torch'}", pretrained=True, features_only=True,
                                 out_indices=(0, 1)).eval()
    pixels = random_pixels((1, 3, *checkpoint.reference([0]).model.patch_embed.img_size), seed=8)
    with torch.no_grad():
        for expected, got in zip(checkpoint.features(pixels, [0, 1]), features(torch.from_numpy(pixels))):
            assert np.array_equal(expected, got.numpy().transpose(0, 2, 3, 1))
    export_pretrained(tmp_path / "flax", tmp_path / "again")  # the layout defaults to the family's
    assert (tmp_path / "again" / "model.safetensors").is_file()
