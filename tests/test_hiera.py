"""Hiera and SAM2's HieraDet: configs, conversion and feature-map parity with transformers' HieraBackbone / HieraModel
(full-size Hiera-T through the hub cache; small configs covering mask units, query pooling, strides), timm's Hiera
and HieraDet (`features_only`), transformers' SAM2 vision encoder with its FPN neck, export, errors, and training
(gradients and SGD steps against torch, drop path, remat)."""

from __future__ import annotations

import contextlib
import json

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
                    patch_stride=[2, 2], patch_padding=[1, 1], masked_unit_size=[4, 4], num_channels=2,
                    num_query_pool=2,
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
    assert report.ok and sorted(report.ignored) == ["classifier.bias", "classifier.weight",
                                                    "hiera.pooler.layernorm.bias", "hiera.pooler.layernorm.weight"]
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


def test_mae_pretraining_checkpoint_loads_its_encoder():
    """HieraForPreTraining (the -mae-hf repos): the encoder under `hiera.`, the decoder, fusion heads and encoder
    norm ignored; every encoder tensor lands where HieraModel's does (the same arrays as from HieraModel)."""
    kwargs = dict(SMALL["default"], decoder_hidden_size=8, decoder_depth=1, decoder_num_heads=1)
    source = hf_model(kwargs, cls="HieraForPreTraining", seed=17)
    config = HieraConfig(**kwargs)
    model, report = convert(source, config)
    assert report.ok and len(report.initialized) == 2 * len(ALL)
    assert {key.split(".")[0] for key in report.ignored} == {"decoder", "multiscale_fusion", "encoder_norm"}
    encoder, _ = convert(source.hiera, config)
    for path, variable in flat_state(encoder).items():
        assert np.array_equal(np.asarray(variable[...]), np.asarray(flat_state(model)[path][...])), path


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


# --------------------------------------------------------------------------------------------------------------
# timm's layouts: Hiera (plain and abswin) and HieraDet (SAM2's trunk), features_only parity through the hub cache

TIMM_SMALL = {
    "hiera_tiny_224": (dict(embed_dim=8, stages=(1, 2, 1, 1), img_size=(64, 96)), [(64, 96)]),
    # abswin position embedding (antialiased bicubic + tiled window), layer scale, max+mean widening, no pooling at
    # the last stage
    "hiera_small_abswin_256": (dict(embed_dim=8, stages=(1, 1, 2, 1), img_size=(96, 64), global_pos_size=(5, 7),
                                    q_pool=2, mask_unit_attn=(True, False, True, False)), [(96, 64)]),
    # per-stage windows (padded: 6 does not divide the third stage's map), a global block, layer scale, drop path
    # off in eval; any size timm accepts, non-square
    "sam2_hiera_tiny": (dict(embed_dim=8, stages=(1, 2, 2, 1), global_att_blocks=(4,), window_spec=(4, 2, 6, 3),
                             global_pos_size=(5, 3), init_values=0.1, drop_path_rate=0.2), [(160, 32)]),
}


def timm_pair(name, kwargs, tmp_path, seed):
    """A randomized timm model saved by `save_for_hf` into the hub cache and loaded by repo id; timm's features_only
    model with the same weights."""
    import timm
    from timm.models._hub import save_for_hf

    full = randomize_torch_module(timm.create_model(name, **kwargs).eval(), seed=seed)
    features = timm.create_model(name, features_only=True, **kwargs).eval()
    features.load_state_dict({f"model.{k}": v for k, v in full.state_dict().items() if not k.startswith("head.")})
    save_for_hf(full, tmp_path / name, safe_serialization=True)
    repo = f"timm/{name}.test"
    write_to_hub_cache(tmp_path / name, repo)
    model, report = AutoBackbone.from_pretrained(repo, out_indices=[0, 1, 2, 3], output_loading_info=True)
    assert report.ok and not report.initialized and all(key.startswith("head.") for key in report.ignored)
    assert model.stage_names == [info["module"] for info in features.feature_info.get_dicts()]
    return full, features, model


forward_features = nnx.jit(lambda model, x: model(x).feature_maps)


@pytest.mark.parametrize("name", sorted(TIMM_SMALL))
def test_timm_features_only_parity(name, tmp_path, hub_cache):
    kwargs, sizes = TIMM_SMALL[name]
    full, features, model = timm_pair(name, kwargs, tmp_path, seed=6)
    for height, width in sizes:
        x = pixels(2, height, width, seed=7)
        with torch.no_grad():
            expected = [nhwc(f.numpy()) for f in features(torch.from_numpy(x))]
        errors = check_all(expected, forward_features(model, nhwc(x)), model.stage_names)
        print(f"\ntimm {name} {height}x{width}: worst relative error {max(errors):.2e}")
    if name.startswith("sam2"):
        with pytest.raises(ValueError, match=r"grid must be a multiple of 4 in both directions; this input gives "
                                             r"15x16.*multiples of 16x16 pixels"):
            forward_features(model, jnp.zeros((1, 60, 64, 3)))
    else:
        with pytest.raises(ValueError, match="runs at"):
            model(jnp.zeros((1, 32, 32, 3)))


def test_timm_export_round_trip(tmp_path, hub_cache):
    import timm
    from safetensors.numpy import load_file

    kwargs, _ = TIMM_SMALL["hiera_small_abswin_256"]
    full, _, model = timm_pair("hiera_small_abswin_256", kwargs, tmp_path, seed=8)
    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    original = load_file(tmp_path / "hiera_small_abswin_256" / "model.safetensors")
    exported = load_file(tmp_path / "torch" / "model.safetensors")
    assert original.keys() == exported.keys()
    assert all(np.array_equal(original[key], exported[key]) for key in original if not key.startswith("head."))
    timm.create_model("hiera_small_abswin_256", **kwargs).load_state_dict(
        {key: torch.from_numpy(value) for key, value in exported.items()})  # strict


def test_full_size_sam2_hiera_tiny_timm_parity_non_square(tmp_path, hub_cache):
    """timm's sam2_hiera_tiny at full size, its position embedding resized to a 128x160 input's 32x40 token grid."""
    _, features, model = timm_pair("sam2_hiera_tiny", {}, tmp_path, seed=9)
    x = pixels(1, 128, 160, seed=9)
    with torch.no_grad():
        expected = [nhwc(f.numpy()) for f in features(torch.from_numpy(x))]
    errors = check_all(expected, forward_features(model, nhwc(x)), model.stage_names)
    assert model.channels == [96, 192, 384, 768] and model.reductions == (4, 8, 16, 32)
    print(f"\nsam2_hiera_tiny 128x160: worst relative error {max(errors):.2e}")


# --------------------------------------------------------------------------------------------------------------
# transformers' SAM2: the vision encoder of Sam2Model, trunk and FPN neck

SAM2_TRUNK = dict(model_type="sam2_hiera_det_model", hidden_size=8, blocks_per_stage=[1, 2, 2, 1],
                  embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 2, 2],
                  window_size_per_stage=[4, 2, 6, 3], global_attention_blocks=[4],
                  window_positional_embedding_background_size=[5, 3])
SAM2_VISION = dict(backbone_config=SAM2_TRUNK, backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=16)
SAM2_STAGES = ["stage1", "stage2", "stage3", "stage4", "fpn1", "fpn2", "fpn3"]


def test_sam2_vision_encoder_parity_and_export(tmp_path, hub_cache):
    """A randomized Sam2Model through the hub: the default output is the vision encoder's `fpn_hidden_states`; the
    trunk's stages are its `intermediate_hidden_states`; export reloads into Sam2Model's vision encoder bit for bit."""
    source = randomize_torch_module(transformers.Sam2Model(transformers.Sam2Config(vision_config=SAM2_VISION)).eval(),
                                    seed=10)
    save_to_hub(source, tmp_path, "test-org/sam2-tiny")
    model, report = AutoBackbone.from_pretrained("test-org/sam2-tiny", output_loading_info=True)
    assert report.ok and not report.initialized and report.ignored
    assert all(not key.startswith(("vision_encoder.backbone.", "vision_encoder.neck.")) for key in report.ignored)
    assert model.out_features == ["fpn1", "fpn2", "fpn3"] and model.channels == [16, 16, 16]
    for height, width in [(160, 64)]:
        x = pixels(2, height, width, seed=11)
        with torch.no_grad():
            vision = source.vision_encoder(torch.from_numpy(x))
            trunk = source.vision_encoder.backbone(torch.from_numpy(x)).intermediate_hidden_states
        out = forward_all(model, nhwc(x))
        check_all([nhwc(f.numpy()) for f in vision.fpn_hidden_states], out.feature_maps, model.out_features)
        check_all([nhwc(p.numpy())[0] for p in vision.fpn_position_encoding], model.position_encodings(height, width),
                  model.out_features, "position encoding")
        errors = check_all([t.numpy() for t in trunk] + [nhwc(f.numpy()) for f in vision.fpn_hidden_states],
                           out.hidden_states, SAM2_STAGES, "hidden state")
        print(f"\nsam2 {height}x{width}: worst relative error {max(errors):.2e}")
    trunk_only, _ = AutoBackbone.from_pretrained("test-org/sam2-tiny", out_features=["stage2", "stage4"],
                                                 output_loading_info=True)
    assert trunk_only.channels == [16, 64] and trunk_only.reductions[:4] == (4, 8, 16, 32)
    with pytest.raises(ValueError, match="multiple of 4 in both directions"):
        forward_features(model, jnp.zeros((1, 64, 72, 3)))
    with pytest.raises(ValueError, match=r"stage3's 4x5 map .* stage4's 2x2 map.*multiples of 32"):
        forward_features(model, jnp.zeros((1, 64, 80, 3)))  # traced, not run

    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    assert json.loads((tmp_path / "torch" / "config.json").read_text())["architectures"] == ["Sam2Model"]
    reloaded = transformers.Sam2Model.from_pretrained(tmp_path / "torch").eval()
    for key, tensor in source.vision_encoder.state_dict().items():
        assert torch.equal(tensor, reloaded.vision_encoder.state_dict()[key]), key


def test_sam2_video_checkpoint_the_hub_layout(tmp_path, hub_cache):
    """The hub's SAM2 repos are Sam2VideoModel checkpoints (model_type "sam2_video"): the same vision encoder, the
    memory modules ignored."""
    source = randomize_torch_module(transformers.Sam2VideoModel(transformers.Sam2VideoConfig(
        vision_config=dict(SAM2_VISION, model_type="sam2_vision_model"))).eval(), seed=16)
    save_to_hub(source, tmp_path, "test-org/sam2.1-video")
    model, report = AutoBackbone.from_pretrained("test-org/sam2.1-video", output_loading_info=True)
    assert report.ok and not report.initialized and any(key.startswith("memory_attention.") for key in report.ignored)
    assert type(model.config).__name__ == "Sam2VideoVisionConfig"
    x = pixels(1, 64, 96, seed=16)
    with torch.no_grad():
        expected = source.vision_encoder(torch.from_numpy(x)).fpn_hidden_states
    check_all([nhwc(f.numpy()) for f in expected], forward_features(model, nhwc(x)), model.out_features)


def test_sam2_config_reads_and_writes_transformers_config_json(tmp_path):
    theirs = transformers.Sam2Config(vision_config=SAM2_VISION, mask_decoder_config=dict(num_multimask_outputs=2))
    theirs.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, out_indices=[1, -1])
    assert config.out_features == ["stage2", "fpn3"] and config.trunk["window_size_per_stage"] == [4, 2, 6, 3]
    written = json.loads(config.to_json_string())
    assert written["mask_decoder_config"]["num_multimask_outputs"] == 2  # kept as it is
    again = transformers.Sam2Config.from_dict(written)
    for key, value in again.vision_config.backbone_config.to_dict().items():
        if key in config.trunk:
            assert config.trunk[key] == (list(value) if isinstance(value, tuple) else value), key
    assert again.vision_config.backbone_channel_list == [64, 32, 16, 8]
    default = type(config)()  # facebook/sam2.1-hiera-tiny
    assert default.out_features == ["fpn1", "fpn2", "fpn3"] and default.trunk["blocks_per_stage"] == [1, 2, 7, 2]


def test_freeze_stages_owns_what_each_stage_computes():
    from jaxbackbones import training

    model = nnx.eval_shape(lambda: AutoBackbone.from_config(HieraConfig(**SMALL["default"], freeze_stages=2)))
    frozen = {path[:3] for path in training.frozen_parameter_paths(model)}
    assert frozen == {("trunk", "patch_embed", "proj"), ("trunk", "pos_embed"), ("trunk", "blocks", 0),
                      ("hidden_states_norms", "stem", "scale"), ("hidden_states_norms", "stem", "bias"),
                      ("hidden_states_norms", "stage1", "scale"), ("hidden_states_norms", "stage1", "bias")}
    from jaxbackbones.models.hieradet import Sam2VisionConfig

    sam2 = nnx.eval_shape(lambda: AutoBackbone.from_config(Sam2VisionConfig(vision_config=SAM2_VISION,
                                                                            freeze_stages=1)))
    assert {path[:3] for path in training.frozen_parameter_paths(sam2)} == {
        ("backbone", "patch_embed", "proj"), ("backbone", "pos_embed"), ("backbone", "pos_embed_window"),
        ("backbone", "blocks", 0)}


@pytest.mark.parametrize("vision, match", [
    (dict(SAM2_VISION, backbone_channel_list=[8, 16, 32, 64]), "backbone_channel_list"),
    (dict(SAM2_VISION, num_feature_levels=5), "num_feature_levels"),
    (dict(SAM2_VISION, backbone_config=dict(SAM2_TRUNK, num_attention_heads_per_stage=[1, 3, 2, 2])),
     r"stage2 has 16 channels, which num_attention_heads_per_stage\[1\]=3"),
    (dict(SAM2_VISION, backbone_config=dict(SAM2_TRUNK, model_type="hiera")), "sam2_hiera_det_model trunk only"),
])
def test_sam2_config_rejects_bad_values(vision, match):
    from jaxbackbones.models.hieradet import Sam2VisionConfig

    with pytest.raises(ValueError, match=match):
        Sam2VisionConfig(vision_config=vision)


# --------------------------------------------------------------------------------------------------------------
# Training

TRAIN = dict(embed_dim=8, depths=[1, 2], num_heads=[1, 2], image_size=[16, 16], masked_unit_size=[2, 2],
             num_query_pool=1, masked_unit_attention=[True, False], out_features=["stem", "stage1", "stage2"])
# One stage of two blocks (stochastic depth's rate rises from 0 at the first): for the compile-bound train-mode tests.
ONE_STAGE = dict(embed_dim=8, depths=[2], num_heads=[2], image_size=[16, 16], masked_unit_size=[2, 2],
                 num_query_pool=0, masked_unit_attention=[True], out_features=["stem", "stage1"])
GRAD_RTOL = 1e-4


def sum_of_squares(model, x, rngs=None):
    return sum(jnp.mean(jnp.square(f)) for f in model(x, **({} if rngs is None else {"rngs": rngs})).feature_maps)


def _step(model, optimizer, x):
    loss, grads = nnx.value_and_grad(sum_of_squares)(model, x)
    optimizer.update(model, grads)
    return loss


def test_gradients_and_two_sgd_steps_match_torch():
    """A tiny randomized Hiera in train mode (no drop path: deterministic): every parameter's gradient, then the
    losses and weights of two SGD steps, as torch computes them (HieraBackbone on unrolled tokens)."""
    reference = hf_model(TRAIN, seed=12).train()
    reference.embeddings._hiera_stages, reference.embeddings._hiera_query_stride = 2, [2, 2]
    config = HieraConfig(**TRAIN)
    model, _ = convert(reference, config)
    model.train()
    table = FAMILIES["hiera"].table_for(config)
    shapes = {path: v.shape for path, v in flat_state(model).items() if isinstance(v, nnx.Param)}

    def torch_loss(batch):
        with unrolled_backbone():
            return sum(torch.mean(torch.square(f)) for f in reference(torch.from_numpy(batch)).feature_maps)

    x = pixels(2, 16, 16, seed=12)
    reference.zero_grad()
    torch_loss(x).backward()
    expected, report = convert_state_dict({n: p.grad.numpy() for n, p in reference.named_parameters()}, table, shapes)
    assert report.ok and not report.ignored
    ours = nnx.jit(nnx.grad(sum_of_squares))(model, jnp.asarray(nhwc(x)))
    ours = {".".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(ours)}
    assert set(ours) == set(expected)
    for path in ours:
        assert_parity(expected[path], ours[path], rtol=GRAD_RTOL, name=path)

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    nnx_optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)
    step = nnx.jit(_step)
    for i in range(2):
        batch = pixels(2, 16, 16, seed=13 + i)
        optimizer.zero_grad()
        loss = torch_loss(batch)
        loss.backward()
        optimizer.step()
        assert_parity(loss.item(), step(model, nnx_optimizer, jnp.asarray(nhwc(batch))), name=f"loss at step {i}")
    after, _ = convert_state_dict(state_dict_numpy(reference), table, shapes)
    for path, variable in flat_state(model).items():
        assert_parity(after[path], variable[...], rtol=GRAD_RTOL, name=f"{path} after two steps")


def test_drop_path_in_train_mode_only_and_remat_keeps_gradients():
    config = HieraConfig(**{**ONE_STAGE, "drop_path_rate": 0.5})
    model = AutoBackbone.from_config(config, rngs=nnx.Rngs(0))
    assert model.random_layers() == ["DropPath(1 layer, rate <= 0.5)"]
    x = jnp.asarray(nhwc(pixels(4, 16, 16, seed=14)))
    run = nnx.jit(lambda m, x, rngs: m(x, rngs=rngs).feature_maps[-1])
    first = run(model, x, nnx.Rngs(dropout=1))
    assert not np.allclose(first, run(model, x, nnx.Rngs(dropout=2)))
    np.testing.assert_array_equal(run(model, x, nnx.Rngs(dropout=1)), first)
    with pytest.raises(ValueError, match="no rngs were given"):
        model(x)
    model.eval()
    np.testing.assert_array_equal(run(model, x, nnx.Rngs(dropout=1)), run(model, x, nnx.Rngs(dropout=2)))

    grads = []
    for remat in (False, True):
        model = AutoBackbone.from_config(HieraConfig(**{**ONE_STAGE, "drop_path_rate": 0.5},
                                                     gradient_checkpointing=remat), rngs=nnx.Rngs(0))
        assert model.trunk.gradient_checkpointing == remat
        grads.append(nnx.to_flat_state(nnx.jit(nnx.grad(sum_of_squares))(model, x, nnx.Rngs(dropout=7))))
    for (path, a), (_, b) in zip(*grads, strict=True):
        np.testing.assert_allclose(np.asarray(b[...]), np.asarray(a[...]), rtol=1e-5, atol=1e-7, err_msg=str(path))


# --------------------------------------------------------------------------------------------------------------
# SAM2's image processor


def test_sam2_image_processor_is_bit_exact(tmp_path):
    """Against transformers' Sam2ImageProcessor (torchvision backend, the only one it has), through the catalog's
    preprocessor_config.json: enlarged and shrunk images (torch's fixed-point uint8 resize differs from PIL's when
    shrinking), gray and RGBA inputs, a uint8 array, and float pixels (torch's float interpolation)."""
    from PIL import Image

    from jaxbackbones.families.hiera import SAM2_PREPROCESSING
    from jaxbackbones.image_processing import AutoImageProcessor, Sam2ImageProcessor

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(SAM2_PREPROCESSING))
    ours = AutoImageProcessor.from_pretrained(tmp_path)
    theirs = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    assert type(ours) is Sam2ImageProcessor and type(theirs).__name__ == "Sam2ImageProcessor"
    rng = np.random.RandomState(15)
    images = [Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(300, 470), (1400, 1100)]]
    images += [Image.fromarray(rng.randint(0, 256, (90, 2100), dtype=np.uint8)),
               Image.fromarray(rng.randint(0, 256, (200, 150, 4), dtype=np.uint8), "RGBA"),
               rng.randint(0, 256, (1030, 640, 3), dtype=np.uint8)]
    for image in images:
        expected = theirs(image, return_tensors="np").pixel_values
        got = ours(image, data_format="channels_first").pixel_values
        assert got.dtype == np.float32 and np.array_equal(got, expected), np.abs(got - expected).max()
    floats = rng.rand(120, 90, 3).astype(np.float32)
    assert_parity(theirs(floats, do_rescale=False, return_tensors="np").pixel_values,
                  ours(floats, do_rescale=False, data_format="channels_first").pixel_values, rtol=1e-6)
    small = ours(images[0], size={"height": 64, "width": 96}, do_normalize=False).pixel_values
    assert small.shape == (1, 64, 96, 3) and np.array_equal(
        small, theirs(images[0], size={"height": 64, "width": 96}, do_normalize=False,
                      return_tensors="np").pixel_values.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="resample=0"):
        Sam2ImageProcessor(resample=0)
