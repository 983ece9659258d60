"""Hiera and SAM2's HieraDet: configs, conversion and feature-map parity with transformers' HieraBackbone / HieraModel
(full-size Hiera-T through the hub cache; small configs covering mask units, query pooling, strides), timm's Hiera
and HieraDet (`features_only`), transformers' SAM2 vision encoder with its FPN neck, export, errors, and training
(gradients and SGD steps against torch, drop path, remat)."""

from __future__ import annotations

import contextlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import assert_parity, nhwc, randomize_torch_module, state_dict_numpy, write_to_hub_cache
from jaxbackbones.convert.rules import convert_state_dict

from jaxbackbones import AutoBackbone, AutoConfig, CheckpointMismatchError, HieraBackbone, HieraConfig
from jaxbackbones.auto import FAMILIES, export_pretrained
from jaxbackbones.checkpoint import flat_state, load_converted

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.models.hiera import modeling_hiera  # noqa: E402

ALL = ["stem", "stage1", "stage2", "stage3", "stage4"]
TINY = dict(depths=[1, 2, 7, 2])  # facebook/hiera-tiny-224-hf
# Small configs, every option away from its default somewhere: mask units in other stages, fewer pooling stages
# (a pending unroll step at the last stage), non-default patch stride / kernel / padding and widths, a 3-stage model,
# non-square images, channels, activation, norm eps.
SMALL = {
    "default": dict(embed_dim=8, depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4], image_size=[64, 96]),
    "q_pool_2": dict(embed_dim=8, depths=[1, 1, 2, 1], num_heads=[2, 2, 3, 3], image_size=[96, 64], num_query_pool=2,
                     masked_unit_attention=[False, True, True, False], embed_dim_multiplier=1.5, mlp_ratio=2.0),
    "strides": dict(embed_dim=6, depths=[2, 1, 1], num_heads=[1, 2, 3], image_size=[32, 48], patch_size=[3, 3],
                    patch_stride=[2, 2], patch_padding=[1, 1], masked_unit_size=[4, 4], num_channels=2, num_query_pool=2,
                    masked_unit_attention=[True, False, True], hidden_act="gelu_new", layer_norm_eps=1e-3),
}


def pixels(batch, height, width, channels=3, seed=0):
    return np.random.RandomState(seed).randn(batch, channels, height, width).astype(np.float32)


def hf_model(kwargs, cls="HieraBackbone", seed=0, **extra):
    config = transformers.HieraConfig(**kwargs, **extra)
    return randomize_torch_module(getattr(transformers, cls)(config).eval(), seed=seed)


@contextlib.contextmanager
def unrolled_backbone():
    """transformers' HieraBackbone skips the `unroll` HieraModel applies (see models/hiera.py); inside this context its
    embeddings are unrolled with transformers' own `unroll`, as in HieraModel, so the backbone's norms and stage
    selection can be checked on the token order every other Hiera uses."""
    original = modeling_hiera.HieraEmbeddings.forward

    def forward(self, pixel_values, noise=None, interpolate_pos_encoding=False):
        embeddings, mask, restore = original(self, pixel_values, noise, interpolate_pos_encoding)
        return modeling_hiera.unroll(embeddings, pixel_values.shape[-2:], self.patch_stride,
                                     [self._hiera_query_stride] * (self._hiera_stages - 1)), mask, restore

    modeling_hiera.HieraEmbeddings.forward = forward
    try:
        yield
    finally:
        modeling_hiera.HieraEmbeddings.forward = original


def hf_feature_maps(model, x, unrolled=True):
    model.embeddings._hiera_stages = len(model.config.depths)
    model.embeddings._hiera_query_stride = model.config.query_stride
    with torch.no_grad(), (unrolled_backbone() if unrolled else contextlib.nullcontext()):
        return [nhwc(f.numpy()) for f in model(torch.from_numpy(x)).feature_maps]


def convert(model, config, **kwargs):
    ours, report = load_converted(lambda: HieraBackbone(config, rngs=nnx.Rngs(0), **kwargs), state_dict_numpy(model),
                                  FAMILIES["hiera"].table_for(config))
    ours.eval()
    return ours, report


def save_to_hub(model, tmp_path, repo_id):
    model.save_pretrained(tmp_path / repo_id)
    write_to_hub_cache(tmp_path / repo_id, repo_id)
    return tmp_path / repo_id


forward_all = nnx.jit(lambda model, x: model(x, output_hidden_states=True))


def check_all(reference, ours, names, what="feature map"):
    return [assert_parity(r, o, name=f"{what} {n}") for r, o, n in zip(reference, ours, names, strict=True)]


@pytest.fixture(scope="module")
def hiera_tiny(tmp_path_factory, hub_cache):
    """Hiera-T (HieraBackbone, every stage selected), random weights, saved by save_pretrained, loaded by repo id."""
    reference = hf_model(TINY, out_features=ALL)
    repo = "test-org/hiera-tiny-224"
    save_to_hub(reference, tmp_path_factory.mktemp("hiera"), repo)
    model, report = AutoBackbone.from_pretrained(repo, out_features=ALL, output_loading_info=True)
    assert isinstance(model, HieraBackbone) and report.ok and not report.initialized and not report.ignored
    return reference, model


# --------------------------------------------------------------------------------------------------------------
# transformers' layout


def test_config_matches_transformers(tmp_path):
    theirs, ours = transformers.HieraConfig().to_dict(), HieraConfig().to_dict()
    fields = [name for name in transformers.HieraConfig.__annotations__ if not name.startswith("_")]
    assert set(fields) == set(HieraConfig.defaults)
    for key in fields:
        assert ours[key] == (list(theirs[key]) if isinstance(theirs[key], tuple) else theirs[key]), key
    assert ours["stage_names"] == ALL and ours["out_features"] == ["stage4"] and ours["hidden_size"] == 768
    assert "transformers_backbone_token_order" not in ours

    transformers.HieraConfig(**SMALL["q_pool_2"], id2label={0: "cat"}).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, out_indices=[0, 2])
    assert type(config) is HieraConfig and config.out_features == ["stem", "stage2"]
    written = json.loads((tmp_path / "config.json").read_text())
    again = json.loads(HieraConfig(**{k: v for k, v in written.items() if k != "model_type"}).to_json_string())
    assert {k: v for k, v in again.items() if k in written} == written
    assert transformers.HieraConfig.from_dict(json.loads(config.to_json_string())).depths == [1, 1, 2, 1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(depths=[1, 1, 1]), "num_heads .* one entry per stage"),
    (dict(num_query_pool=4), "num_query_pool"),
    (dict(masked_unit_size=[4, 4]), "divisible by query_stride"),
    (dict(image_size=[224, 200]), r"multiple of patch_stride \* masked_unit_size = \[32, 32\]"),
    (dict(num_heads=[1, 2, 5, 8]), r"stage3 has 384 channels, which num_heads\[2\]=5"),
    (dict(hidden_act="nope"), "hidden_act"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
    (dict(out_features=["stage5"]), "stage_names"),
    (dict(freeze_stages=6), "freeze_stages"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HieraConfig(**kwargs)


def test_full_size_hiera_tiny_parity_through_the_hub_cache(hiera_tiny):
    reference, model = hiera_tiny
    x = pixels(1, 224, 224, seed=1)
    out = forward_all(model, nhwc(x))
    errors = check_all(hf_feature_maps(reference, x), out.feature_maps, ALL)
    assert len(reference.state_dict()) == len(flat_state(model))  # every tensor (all norms) mapped
    assert [m.shape[1:] for m in out.feature_maps] == [(56, 56, 96), (56, 56, 96), (28, 28, 192), (14, 14, 384),
                                                       (7, 7, 768)]
    assert model.channels == [96, 96, 192, 384, 768] and model.reductions == (4, 4, 8, 16, 32)
    # the maps before the norms: HieraModel's reshaped hidden states, transformers unpatched
    encoder = transformers.HieraModel(reference.config)
    encoder.load_state_dict(reference.state_dict(), strict=False)
    with torch.no_grad():
        expected = encoder.eval()(torch.from_numpy(x), output_hidden_states=True).reshaped_hidden_states
    check_all([e.numpy() for e in expected], out.hidden_states, ALL, "hidden state")
    print(f"\nhiera-tiny 224: worst relative error {max(errors):.2e}")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_parity_in_both_token_orders(name):
    kwargs = SMALL[name]
    stages = ["stem"] + [f"stage{i + 1}" for i in range(len(kwargs["depths"]))]
    reference = hf_model(kwargs, seed=2, out_features=stages)
    x = pixels(2, *kwargs["image_size"], kwargs.get("num_channels", 3), seed=3)
    for as_transformers in (False, True) if name == "default" else (False,):
        config = HieraConfig(**kwargs, out_features=stages, transformers_backbone_token_order=as_transformers)
        model, report = convert(reference, config)
        assert report.ok and not report.initialized and not report.ignored
        out = forward_all(model, nhwc(x))
        errors = check_all(hf_feature_maps(reference, x, unrolled=not as_transformers), out.feature_maps, stages)
        print(f"\n{name} (transformers_backbone_token_order={as_transformers}): worst relative error "
              f"{max(errors):.2e}")


def test_classification_checkpoint_stage_selection_and_export(tmp_path, hub_cache):
    """HieraForImageClassification through the hub (pooler and classifier ignored, the backbone norms initialised as
    transformers does), channels-first, native save / load and export back into transformers' HieraBackbone."""
    kwargs = SMALL["default"]
    source = hf_model(kwargs, cls="HieraForImageClassification", seed=4, num_labels=3)
    save_to_hub(source, tmp_path, "test-org/hiera-cls")
    model, report = AutoBackbone.from_pretrained("test-org/hiera-cls", out_features=["stage1", "stage3"],
                                                 data_format="channels_first", output_loading_info=True)
    assert report.ok and sorted(report.ignored) == ["classifier.bias", "classifier.weight", "hiera.pooler.layernorm.bias",
                                                    "hiera.pooler.layernorm.weight"]
    assert len(report.initialized) == 2 * len(ALL)
    x = pixels(1, 64, 96, seed=4)
    with torch.no_grad():
        expected = source.hiera(torch.from_numpy(x), output_hidden_states=True).reshaped_hidden_states
    for index, feature_map in zip([1, 3], nnx.jit(lambda m, x: m(x).feature_maps)(model, x), strict=True):
        norm = torch.nn.LayerNorm(expected[index].shape[-1])  # weight 1, bias 0, eps 1e-5: HieraBackbone's
        with torch.no_grad():
            assert_parity(norm(expected[index]).numpy().transpose(0, 3, 1, 2), feature_map)

    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    assert json.loads((tmp_path / "torch" / "config.json").read_text())["architectures"] == ["HieraBackbone"]
    reloaded = transformers.HieraBackbone.from_pretrained(tmp_path / "torch").eval()
    for key, tensor in source.hiera.state_dict().items():
        if not key.startswith("pooler."):
            assert torch.equal(tensor, reloaded.state_dict()[key]), key
    assert sorted(k for k in reloaded.state_dict() if k.startswith("hidden_states_norms")) == [
        "hidden_states_norms.stage1.bias", "hidden_states_norms.stage1.weight", "hidden_states_norms.stage3.bias",
        "hidden_states_norms.stage3.weight"]


def test_wrong_sizes_and_checkpoints():
    kwargs = SMALL["default"]
    reference = hf_model(kwargs, seed=5)
    model, _ = convert(reference, HieraConfig(**kwargs))
    with pytest.raises(ValueError, match="runs at 64x96 only, got a 64x64 input; resize it to 64x96"):
        model(jnp.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="2 channels but the config expects num_channels=3"):
        model(jnp.zeros((1, 64, 96, 2)))
    state = state_dict_numpy(reference)
    table = FAMILIES["hiera"].table_for(HieraConfig(**kwargs))
    missing = {k: v for k, v in state.items() if "stages.1.layers.0.proj." not in k}
    with pytest.raises(CheckpointMismatchError, match=r"(?s)missing.*trunk\.blocks\.1\.proj\.kernel"):
        load_converted(lambda: HieraBackbone(HieraConfig(**kwargs), rngs=nnx.Rngs(0)), missing, table)
    wider = HieraConfig(**{**kwargs, "embed_dim": 16})
    with pytest.raises(CheckpointMismatchError, match=r"(?s)shape mismatches.*position_embeddings"):
        load_converted(lambda: HieraBackbone(wider, rngs=nnx.Rngs(0)), state, FAMILIES["hiera"].table_for(wider))
