"""ConvNeXt v1, V2 and DINOv3-ConvNeXt: configs, conversion and feature-map parity with transformers' backbones at any
input size, training (gradients against torch, drop path, remat, frozen stages), export and the native format."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    assert_parity,
    check_maps,
    nhwc,
    randomize_torch_module,
    state_dict_numpy,
    torch_forward,
    write_to_hub_cache,
)
from jaxbackbones.convert.rules import convert_state_dict

from jaxbackbones import (
    AutoBackbone,
    AutoConfig,
    CheckpointMismatchError,
    ConvNextBackbone,
    ConvNextConfig,
    ConvNextV2Config,
    DINOv3ConvNextConfig,
    TimmBackboneConfig,
    load_backbone,
    trainable_filter,
    training,
)
from jaxbackbones.auto import FAMILIES, export_pretrained
from jaxbackbones.checkpoint import flat_state, load_converted
from jaxbackbones.layers import (
    GlobalResponseNorm,
    LayerScale,
    conv_general_dilated,
    depthwise_conv_shifted,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

OURS = {"convnext": ConvNextConfig, "convnextv2": ConvNextV2Config, "dinov3_convnext": DINOv3ConvNextConfig}
THEIRS = {"convnext": ("ConvNextConfig", "ConvNextBackbone", "ConvNextForImageClassification"),
          "convnextv2": ("ConvNextV2Config", "ConvNextV2Backbone", "ConvNextV2ForImageClassification"),
          "dinov3_convnext": ("DINOv3ConvNextConfig", "DINOv3ConvNextBackbone", "DINOv3ConvNextModel")}

# facebook/convnext-tiny-224's layout (the default config; lists, as the hub's config.json has them: transformers 5's
# ConvNextBackbone fails on its own tuple default), every stage selected.
TINY = dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3], out_indices=[0, 1, 2, 3, 4])
# Small configs: every family, and every option away from its default.
SMALL = {
    "convnext": dict(hidden_sizes=[8, 16, 24], depths=[1, 2, 1], num_stages=3),
    "convnextv2": dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1]),
    "dinov3_convnext": dict(hidden_sizes=[8, 16, 24], depths=[2, 1, 1], layer_norm_eps=1e-3),
}
OPTIONS = {
    # no layer scale, a non-square patch, a stage without blocks, two input channels, another activation
    "convnext": dict(hidden_sizes=[8, 12, 16], depths=[2, 0, 1], num_stages=3, patch_size=[2, 3], num_channels=2,
                     layer_scale_init_value=0.0, hidden_act="gelu_new"),
    "convnextv2": dict(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2, patch_size=2, hidden_act="silu"),
    # layer scale initialised at 0 still exists in DINOv3 (and is randomized here)
    "dinov3_convnext": dict(hidden_sizes=[8, 16], depths=[1, 1], layer_scale_init_value=0.0, layer_norm_eps=1e-4,
                            hidden_act="gelu_new", num_channels=1),
}
# Two stages (a downsampling between), the least that covers every parameter kind: for the compile-bound training tests.
TWO_STAGES = {family: dict(hidden_sizes=[8, 16], depths=[1, 2], **({} if family == "dinov3_convnext" else
                                                                   {"num_stages": 2})) for family in OURS}
GRAD_RTOL = 1e-4
REMAT_RTOL = 1e-5
# bf16 compute vs fp32, max |bf16 - fp32| / max |fp32| per map, measured at 224x224 with the tiny layouts (randomized):
# ConvNeXt 1.2e-2, V2 1.6e-2, DINOv3 1.4e-2 (torch's bf16 autocast: 0.7e-2, 1.4e-2, 0.6e-2; it keeps the residual
# stream in float32). The small v1 config tested here: 0.8e-2.
BF16_RTOL = 3e-2


def torch_backbone(family, kwargs, *, seed=0, cls_index=1):
    config_name, *classes = THEIRS[family]
    cls = getattr(transformers, classes[cls_index - 1])
    return randomize_torch_module(cls(getattr(transformers, config_name)(**kwargs)).eval(), seed=seed)


def convert(torch_model, config, **kwargs):
    model, report = load_converted(lambda: ConvNextBackbone(config, rngs=nnx.Rngs(0), **kwargs),
                                   state_dict_numpy(torch_model), FAMILIES[config.model_type].table_for(config))
    model.eval()
    return model, report


def pixels(batch, height, width, channels=3, seed=0):
    """NCHW float32 pixels."""
    return np.random.RandomState(seed).randn(batch, channels, height, width).astype(np.float32)


forward_all = nnx.jit(lambda model, x: model(x, output_hidden_states=True))
forward_features = nnx.jit(lambda model, x: model(x).feature_maps)


def save_to_hub(torch_model, tmp_path, repo_id):
    torch_model.save_pretrained(tmp_path / repo_id)
    write_to_hub_cache(tmp_path / repo_id, repo_id)
    return tmp_path / repo_id


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, hub_cache):
    """convnext-tiny (random weights) saved by ConvNextBackbone.save_pretrained, loaded by repo id."""
    torch_model = torch_backbone("convnext", TINY)
    save_to_hub(torch_model, tmp_path_factory.mktemp("tiny"), "test-org/convnext-tiny")
    model, report = AutoBackbone.from_pretrained("test-org/convnext-tiny", output_loading_info=True)
    assert isinstance(model, ConvNextBackbone) and report.ok and not report.initialized and not report.ignored
    return torch_model, model


# --------------------------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize("family", sorted(OURS))
def test_config_matches_transformers(family, tmp_path):
    theirs_class = getattr(transformers, THEIRS[family][0])
    theirs, ours = theirs_class().to_dict(), OURS[family]().to_dict()
    fields = [name for name in theirs_class.__annotations__ if not name.startswith("_")]
    assert set(fields) == set(OURS[family].defaults)
    for key in [*fields, "stage_names", "out_features", "out_indices", "model_type"]:
        assert ours[key] == theirs[key], key
    assert set(ours) <= set(theirs)

    # config.json written by transformers reads back and writes out unchanged, unknown keys kept
    theirs_class(**SMALL[family], out_features=["stem", "stage2"], id2label={0: "cat"}).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is OURS[family] and config.out_indices == [0, 2] and config.id2label == {"0": "cat"}
    written = json.loads((tmp_path / "config.json").read_text())
    assert json.loads(config.to_json_string()) == written
    assert theirs_class.from_dict(json.loads(config.to_json_string())).to_dict()["depths"] == SMALL[family]["depths"]
    assert AutoConfig.for_model(family, depths=[1, 1], hidden_sizes=[4, 8], **(
        {"num_stages": 2} if family != "dinov3_convnext" else {})).stage_names == ["stem", "stage1", "stage2"]


@pytest.mark.parametrize("family, kwargs, match", [
    ("convnext", dict(depths=[1, 1, 1]), "hidden_sizes .* and depths .* must have one entry per stage"),
    ("convnext", dict(depths=[1, 1, 1], hidden_sizes=[4, 8, 16]), "num_stages=4 but depths .* set num_stages=3"),
    ("convnextv2", dict(hidden_act="nope"), "hidden_act"),
    ("convnextv2", dict(patch_size=0), "patch_size must be positive"),
    ("dinov3_convnext", dict(drop_path_rate=1.0), "drop_path_rate"),
    ("dinov3_convnext", dict(depths=[1, -1, 1, 1]), "depths"),
    ("convnext", dict(out_features=["stage5"]), "stage_names"),
])
def test_config_rejects_bad_values(family, kwargs, match):
    with pytest.raises(ValueError, match=match):
        OURS[family](**kwargs)


# --------------------------------------------------------------------------------------------------------------
# Parity with transformers (fp32, max |ours - torch| / max |torch| <= 1e-5 per map)


@pytest.mark.parametrize("batch, height, width", [(2, 224, 224), (1, 225, 161)])
def test_tiny_parity(tiny, batch, height, width):
    torch_model, model = tiny
    x = pixels(batch, height, width)
    reference = torch_forward(torch_model, x, output_hidden_states=True)
    out = forward_all(model, nhwc(x))
    errors = check_maps(reference.feature_maps, out.feature_maps, model.stage_names)
    errors += check_maps(reference.hidden_states, out.hidden_states, model.stage_names, "hidden state")
    assert out.feature_maps[-1].shape == (batch, height // 32, width // 32, 768)
    print(f"\nconvnext-tiny {height}x{width}: worst relative error {max(errors):.2e}")


@pytest.mark.parametrize("options", ["small", "options"])
@pytest.mark.parametrize("family", sorted(OURS))
def test_family_parity(family, options):
    kwargs = (SMALL if options == "small" else OPTIONS)[family]
    stages = list(range(len(kwargs["depths"]) + 1))
    torch_model = torch_backbone(family, {**kwargs, "out_indices": stages}, seed=1)
    model, report = convert(torch_model, OURS[family](**kwargs, out_indices=stages))
    assert report.ok and not report.initialized
    x = pixels(2, 37, 53, kwargs.get("num_channels", 3), seed=2)
    reference = torch_forward(torch_model, x, output_hidden_states=True)
    out = forward_all(model, nhwc(x))
    errors = check_maps(reference.feature_maps, out.feature_maps, model.stage_names)
    errors += check_maps(reference.hidden_states, out.hidden_states, model.stage_names, "hidden state")
    assert model.channels == list(torch_model.channels)
    if family == "dinov3_convnext":  # the stem stage is the input itself, at stride 1
        np.testing.assert_array_equal(np.asarray(out.feature_maps[0]), nhwc(x))
        assert model.reductions[:2] == (1, 4) and model.hidden_states_norms is None
    print(f"\n{family} {options}: worst relative error {max(errors):.2e}")


@pytest.mark.parametrize("family, selection", [
    ("convnext", dict(out_features=["stem", "stage2"])),
    ("convnextv2", dict(out_indices=[-1])),
    ("dinov3_convnext", dict(out_indices=[1, -1])),
])
def test_stage_selection(family, selection):
    kwargs = {**SMALL[family], **selection}
    torch_model = torch_backbone(family, kwargs, seed=3)
    config = OURS[family](**kwargs)
    model, report = convert(torch_model, config)
    if family == "dinov3_convnext":
        assert not report.initialized
    else:  # transformers creates norms for the selected stages only; ours has one per stage
        unselected = [name for name in config.stage_names if name not in config.out_features]
        assert sorted(report.initialized) == sorted(f"hidden_states_norms.{n}.{p}" for n in unselected
                                                    for p in ("bias", "scale"))
    x = pixels(1, 45, 39)
    check_maps(torch_forward(torch_model, x).feature_maps, forward_features(model, nhwc(x)), config.out_features)
    assert model.channels == list(torch_model.channels) and model.out_features == torch_model.out_features


def test_channels_first():
    torch_model = torch_backbone("convnextv2", {**SMALL["convnextv2"], "out_indices": [0, 2, 4]}, seed=4)
    model, _ = convert(torch_model, ConvNextV2Config(**SMALL["convnextv2"], out_indices=[0, 2, 4]),
                       data_format="channels_first")
    x = pixels(1, 41, 33)
    reference = torch_forward(torch_model, x, output_hidden_states=True)
    out = forward_all(model, x)
    for r, o in zip((*reference.feature_maps, *reference.hidden_states), (*out.feature_maps, *out.hidden_states)):
        assert_parity(r.numpy(), o)
    with pytest.raises(ValueError, match="channels"):
        model(nhwc(x))
    with pytest.raises(ValueError, match="no attentions"):
        model(x, output_attentions=True)


def test_bfloat16_close_to_float32():
    config = ConvNextConfig(**SMALL["convnext"], out_indices=[0, 1, 2, 3])
    torch_model = torch_backbone("convnext", config.to_dict(), seed=5)
    full, _ = convert(torch_model, config)
    half, _ = convert(torch_model, config, dtype=jnp.bfloat16)
    x = nhwc(pixels(1, 64, 48))
    for name, a, b in zip(config.out_features, forward_features(full, x), forward_features(half, x)):
        assert b.dtype == jnp.bfloat16
        assert_parity(np.asarray(a), np.asarray(b.astype(jnp.float32)), rtol=BF16_RTOL, name=f"bf16 {name}")


# --------------------------------------------------------------------------------------------------------------
# The shared layers, against the torch ops


def test_global_response_norm_matches_transformers_and_timm():
    from timm.layers.grn import GlobalResponseNorm as TimmGRN
    from transformers.models.convnextv2.modeling_convnextv2 import ConvNextV2GRN

    x = nhwc(pixels(2, 9, 7, 16, seed=6))
    hf = randomize_torch_module(ConvNextV2GRN(16), seed=6)
    ours = GlobalResponseNorm(16)
    ours.weight[...] = jnp.asarray(hf.weight.detach().numpy().reshape(-1))
    ours.bias[...] = jnp.asarray(hf.bias.detach().numpy().reshape(-1))
    assert_parity(hf(torch.from_numpy(x)).detach().numpy(), ours(x), name="transformers GRN")
    timm_grn = TimmGRN(16, channels_last=False)
    with torch.no_grad():
        timm_grn.weight.copy_(hf.weight.reshape(-1))
        timm_grn.bias.copy_(hf.bias.reshape(-1))
    assert_parity(nhwc(timm_grn(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy()), ours(x),
                  name="timm GRN (channels first)")
    np.testing.assert_array_equal(GlobalResponseNorm(16)(x), x)  # zero-initialised: the identity


NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("kernel, padding", [(7, ((3, 3), (3, 3))), (3, ((0, 2), (1, 0)))])
def test_depthwise_convolution_matches_torch_and_lax(kernel, padding):
    """The shifted-sum depthwise convolution (CPU) against torch's grouped Conv2d, and its hand-written gradients
    against autodiff of XLA's grouped convolution (what other platforms run)."""
    x = nhwc(pixels(2, 11, 9, 6, seed=8))
    w = np.random.RandomState(8).randn(kernel, kernel, 1, 6).astype(np.float32)
    (top, bottom), (left, right) = padding
    padded = torch.nn.functional.pad(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), (left, right, top, bottom))
    reference = torch.nn.functional.conv2d(padded, torch.from_numpy(w.transpose(3, 2, 0, 1).copy()), groups=6)
    ours = jax.jit(lambda x, w: conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC,
                                                     feature_group_count=6))
    assert "convolution" not in ours.lower(x, w).as_text()  # on CPU the shifted sum replaces the convolution
    assert_parity(nhwc(reference.numpy()), ours(x, w))

    def lax_conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC, feature_group_count=6)

    probe = jnp.asarray(np.random.RandomState(9).randn(*lax_conv(x, w).shape).astype(np.float32))
    expected = jax.grad(lambda x, w: jnp.sum(lax_conv(x, w) * probe), argnums=(0, 1))(x, w)
    got = jax.jit(jax.grad(lambda x, w: jnp.sum(ours(x, w) * probe), argnums=(0, 1)))(x, w)
    for name, a, b in zip(("input", "kernel"), expected, got):
        assert_parity(a, b, name=f"gradient of the {name}")
    half = depthwise_conv_shifted(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), padding)
    assert half.dtype == jnp.bfloat16  # accumulated in float32, rounded once
    assert_parity(np.asarray(ours(x, w)), np.asarray(half, np.float32), rtol=2e-2)


def test_layer_scale_matches_timm():
    from timm.layers import LayerScale as TimmLayerScale

    x = nhwc(pixels(2, 5, 4, 12, seed=7))
    reference = randomize_torch_module(TimmLayerScale(12), seed=7)
    ours = LayerScale(12)
    ours.gamma[...] = jnp.asarray(reference.gamma.detach().numpy())
    assert_parity(reference(torch.from_numpy(x)).detach().numpy(), ours(x))
    np.testing.assert_array_equal(LayerScale(3, 1e-6).gamma[...], np.full(3, 1e-6, np.float32))


# --------------------------------------------------------------------------------------------------------------
# Hub checkpoints, conversion reports, export and the native format


@pytest.mark.parametrize("family", sorted(OURS))
def test_hub_model_checkpoint(family, tmp_path, hub_cache):
    """The classification model of v1/V2 (no hidden_states_norms: initialised and reported) and DINOv3's model."""
    source = torch_backbone(family, {**SMALL[family], "num_labels": 5}, seed=8, cls_index=2)
    save_to_hub(source, tmp_path, f"test-org/{family}-model")
    stages = list(range(len(SMALL[family]["depths"]) + 1))
    model, report = AutoBackbone.from_pretrained(f"test-org/{family}-model", out_indices=stages,
                                                 output_loading_info=True)
    assert report.ok
    if family == "dinov3_convnext":
        assert not report.initialized and sorted(report.ignored) == ["layer_norm.bias", "layer_norm.weight"]
    else:
        prefix = "convnext" if family == "convnext" else "convnextv2"
        assert len(report.initialized) == 2 * len(stages)
        assert {"classifier.weight", "classifier.bias", f"{prefix}.layernorm.weight"} <= set(report.ignored)
    reference = getattr(transformers, THEIRS[family][1]).from_pretrained(tmp_path / f"test-org/{family}-model",
                                                                         out_indices=stages).eval()
    x = pixels(1, 50, 34)
    check_maps(torch_forward(reference, x).feature_maps, forward_features(model, nhwc(x)), model.out_features)


@pytest.mark.parametrize("family", sorted(OURS))
def test_export_round_trip_is_bit_exact(family, tmp_path, hub_cache):
    kwargs = {**OPTIONS[family], "out_features": ["stem", "stage2"]}
    original = torch_backbone(family, kwargs, seed=9)
    save_to_hub(original, tmp_path, f"test-org/{family}-round-trip")
    model = AutoBackbone.from_pretrained(f"test-org/{family}-round-trip")
    model.save_pretrained(tmp_path / "native")
    native = AutoBackbone.from_pretrained(tmp_path / "native")
    for path, variable in flat_state(model).items():  # native save -> load is bit-exact
        assert np.array_equal(np.asarray(variable[...]), np.asarray(flat_state(native)[path][...])), path
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    assert json.loads((tmp_path / "torch" / "config.json").read_text())["architectures"] == [THEIRS[family][1]]
    reloaded = getattr(transformers, THEIRS[family][1]).from_pretrained(tmp_path / "torch").eval()
    before, after = original.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys()
    for key, tensor in before.items():
        assert torch.equal(tensor, after[key]), key
    x = pixels(1, 40, 44, kwargs.get("num_channels", 3))
    for a, b in zip(torch_forward(original, x).feature_maps, torch_forward(reloaded, x).feature_maps):
        assert torch.equal(a, b)


def test_dinov3_in_memory_names_and_a_wrong_checkpoint():
    torch_model = torch_backbone("dinov3_convnext", SMALL["dinov3_convnext"], seed=10)
    in_memory = {key: value.numpy() for key, value in torch_model.state_dict().items()}
    assert all(key.startswith("model.stages.") for key in in_memory)  # transformers 5 in memory; saved without
    config = DINOv3ConvNextConfig(**SMALL["dinov3_convnext"])
    model, report = load_converted(lambda: ConvNextBackbone(config, rngs=nnx.Rngs(0)), in_memory,
                                   FAMILIES["dinov3_convnext"].table_for(config))
    assert report.ok and len(report.loaded) == len(in_memory)

    # a ConvNeXt v1 checkpoint declared as V2: the GRN is missing, the layer scale unexpected
    v1 = torch_backbone("convnext", SMALL["convnext"], seed=11)
    v2 = ConvNextV2Config(**SMALL["convnext"])
    with pytest.raises(CheckpointMismatchError, match=r"(?s)missing.*mlp\.grn\.weight.*unexpected.*"
                                                      r"layer_scale_parameter"):
        convert(v1, v2)


# --------------------------------------------------------------------------------------------------------------
# Training: gradients against torch, drop path, remat, frozen stages, load_backbone


def sum_of_means(model, x, rngs=None):
    return sum(jnp.mean(f) for f in model(x, **({} if rngs is None else {"rngs": rngs})).feature_maps)


def sum_of_squares(model, x, rngs=None):
    return sum(jnp.mean(jnp.square(f)) for f in model(x, **({} if rngs is None else {"rngs": rngs})).feature_maps)


def param_grads(model, x, *args, loss=sum_of_means):
    grads = nnx.jit(nnx.grad(loss))(model, jnp.asarray(x), *args)
    return {".".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(grads)}


@pytest.mark.parametrize("family", sorted(OURS))
def test_gradients_match_torch(family):
    kwargs = {**TWO_STAGES[family], "out_indices": [0, 1, 2]}
    torch_model = torch_backbone(family, kwargs, seed=12).train()
    config = OURS[family](**kwargs)
    model, _ = convert(torch_model, config)
    model.train()  # drop_path_rate 0: train mode is deterministic
    x = pixels(2, 37, 45, seed=12)
    torch_model.zero_grad()
    sum(f.mean() for f in torch_model(torch.from_numpy(x)).feature_maps).backward()
    torch_grads = {name: p.grad.numpy() for name, p in torch_model.named_parameters() if p.grad is not None}
    shapes = {path: v.shape for path, v in flat_state(model).items() if isinstance(v, nnx.Param)}
    expected, report = convert_state_dict(torch_grads, FAMILIES[family].table_for(config), shapes)
    assert report.ok and not report.ignored, report.summary()
    ours = param_grads(model, nhwc(x))
    assert set(ours) == set(expected) and len(ours) == len(list(torch_model.parameters()))
    for path in ours:
        assert_parity(expected[path], ours[path], rtol=GRAD_RTOL, name=path)


def test_drop_path_is_stochastic_in_train_mode_only_and_remat_keeps_gradients():
    kwargs = {**TWO_STAGES["convnext"], "drop_path_rate": 0.5, "out_indices": [1, 2]}
    torch_model = torch_backbone("convnext", kwargs, seed=13)
    config = ConvNextConfig(**kwargs)
    model, _ = convert(torch_model, config)
    model.train()
    x = jnp.asarray(nhwc(pixels(4, 32, 32, seed=13)))
    run = nnx.jit(lambda m, x, rngs: m(x, rngs=rngs).feature_maps[-1])
    first, second = run(model, x, nnx.Rngs(dropout=1)), run(model, x, nnx.Rngs(dropout=2))
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(run(model, x, nnx.Rngs(dropout=1)), first)
    with pytest.raises(ValueError, match="no rngs were given"):
        model(x)
    model.eval()
    np.testing.assert_array_equal(run(model, x, nnx.Rngs(dropout=1)), run(model, x, nnx.Rngs(dropout=2)))

    grads = []
    for remat in (False, True):
        model, _ = convert(torch_model, ConvNextConfig(**kwargs, gradient_checkpointing=remat))
        model.train()
        assert all(stage.gradient_checkpointing == remat for stage in model.stages)
        grads.append(param_grads(model, x, nnx.Rngs(dropout=7), loss=sum_of_squares))
    for path in grads[0]:
        if np.any(grads[0][path]):
            assert_parity(grads[0][path], grads[1][path], rtol=REMAT_RTOL, name=path)
        else:  # a block drop path dropped for the whole batch
            np.testing.assert_array_equal(grads[1][path], 0)
    x_spec = jax.ShapeDtypeStruct((8, 64, 64, 3), jnp.float32)
    sizes = [training.saved_activation_bytes(nnx.eval_shape(lambda r=remat: AutoBackbone.from_config(
        ConvNextConfig(**SMALL["convnext"], gradient_checkpointing=r))), x_spec) for remat in (False, True)]
    assert sizes[1] < 0.6 * sizes[0], sizes


@pytest.mark.parametrize("config, frozen", [
    (ConvNextConfig(**SMALL["convnext"], freeze_stages=2),
     {("stem",), ("stages", 0), ("hidden_states_norms", "stem"), ("hidden_states_norms", "stage1")}),
    (DINOv3ConvNextConfig(**SMALL["dinov3_convnext"], freeze_stages=1), set()),  # the stem is the input
    (DINOv3ConvNextConfig(**SMALL["dinov3_convnext"], freeze_stages=2), {("stem",), ("stages", 0)}),
    (TimmBackboneConfig("convnext_atto", freeze_stages=2), {("stem",), ("stages", 0), ("stages", 1)}),
])
def test_freeze_stages(config, frozen):
    model = nnx.eval_shape(lambda: AutoBackbone.from_config(config))
    paths = training.frozen_parameter_paths(model)
    assert {path[:2] if path[0] in ("stages", "hidden_states_norms") else path[:1] for path in paths} == frozen


def test_frozen_stages_stay_put_while_the_rest_trains():
    kwargs = {**TWO_STAGES["convnextv2"], "drop_path_rate": 0.2, "out_indices": [2]}
    model, _ = convert(torch_backbone("convnextv2", kwargs, seed=14), ConvNextV2Config(**kwargs, freeze_stages=2))
    model.train()
    assert all(block.drop_path.deterministic for block in model.stages[0].blocks)
    assert not any(block.drop_path.deterministic for block in model.stages[1].blocks)
    wrt = trainable_filter(model)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=wrt)

    @nnx.jit
    def step(model, optimizer, x, rngs):
        loss, grads = nnx.value_and_grad(sum_of_squares, argnums=nnx.DiffState(0, wrt))(model, x, rngs)
        optimizer.update(model, grads)
        return loss

    before = {path: np.array(v[...]) for path, v in flat_state(model).items()}
    x = jnp.asarray(nhwc(pixels(2, 32, 32, seed=14)))
    losses = [float(step(model, optimizer, x, nnx.Rngs(dropout=i))) for i in range(3)]
    assert losses[-1] < losses[0], losses
    frozen = ("stem.", "stages.0.", "hidden_states_norms.stem.", "hidden_states_norms.stage1.")
    for path, variable in flat_state(model).items():
        moved = not np.array_equal(before[path], variable[...])
        unused = path.startswith(("hidden_states_norms.stem.", "hidden_states_norms.stage1."))  # not selected
        if not unused:
            assert moved != path.startswith(frozen), path


def test_load_backbone_from_a_head_config():
    """A UperNet config carrying a ConvNeXt, and a config dict naming DINOv3-ConvNeXt (built abstractly: random
    initialisation would only cost time here)."""
    head = transformers.UperNetConfig(backbone_config=transformers.ConvNextConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, out_features=["stage1", "stage2"]))
    model = nnx.eval_shape(lambda: load_backbone(head))
    assert isinstance(model.config, ConvNextConfig) and model.channels == [8, 16]
    as_dict = {"backbone_config": {"model_type": "dinov3_convnext", **SMALL["dinov3_convnext"],
                                   "out_indices": [1, 2, 3]}}
    model = nnx.eval_shape(lambda: load_backbone(as_dict))
    assert isinstance(model.config, DINOv3ConvNextConfig) and model.channels == [8, 16, 24]
    shapes = nnx.eval_shape(lambda: load_backbone(as_dict)(jnp.zeros((1, 32, 32, 3))).feature_maps)
    assert [s.shape for s in shapes] == [(1, 8, 8, 8), (1, 4, 4, 16), (1, 2, 2, 24)]


# --------------------------------------------------------------------------------------------------------------
# The command line, in process: convert --verify, info, export, for the transformers and the timm layout


def test_cli_convert_verify_info_export(tmp_path, hub_cache, capsys):
    import timm
    from timm.models._hub import save_for_hf

    from jaxbackbones import cli

    sources = {}
    v2 = torch_backbone("convnextv2", {**SMALL["convnextv2"], "num_labels": 3}, seed=15, cls_index=2)
    sources["test-org/cli-convnextv2"] = ("stem", save_to_hub(v2, tmp_path, "test-org/cli-convnextv2"))
    atto = randomize_torch_module(timm.create_model("convnext_atto", depths=(1, 1, 2, 1), dims=(8, 16, 24, 32)),
                                  seed=16)
    save_for_hf(atto, tmp_path / "atto", safe_serialization=True)
    write_to_hub_cache(tmp_path / "atto", "timm/convnext_atto.d2_in1k")
    sources["timm/convnext_atto.d2_in1k"] = ("stages.0", tmp_path / "atto")
    for repo, (first_stage, folder) in sources.items():
        out = tmp_path / repo.replace("/", "--")
        assert cli.main(["convert", repo, str(out / "flax"), "--verify"]) == 0
        printed = capsys.readouterr().out
        assert "OK: worst relative difference" in printed
        assert any(line.startswith(first_stage) for line in printed.splitlines())
        assert cli.main(["info", str(out / "flax")]) == 0
        assert "(native jaxbackbones format)" in capsys.readouterr().out
        assert cli.main(["export", str(out / "flax"), str(out / "torch")]) == 0
        original = safetensors_numpy(folder / "model.safetensors")
        exported = safetensors_numpy(out / "torch" / "model.safetensors")
        kept = [key for key in original if not key.startswith(("classifier.", "convnextv2.layernorm.", "head."))]
        assert kept and all(np.array_equal(original[key], exported[key.removeprefix("convnextv2.")]) for key in kept)


def safetensors_numpy(path):
    from safetensors.numpy import load_file

    return load_file(path)
