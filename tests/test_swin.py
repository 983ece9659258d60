"""Swin: config, conversion and feature-map parity with transformers' SwinBackbone at any input size."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import (assert_parity, check_maps, nhwc, randomize_torch_module, state_dict_numpy, torch_forward,
                     write_to_hub_cache)

from jaxbackbones import AutoBackbone, AutoConfig, CheckpointMismatchError, SwinBackbone, SwinConfig
from jaxbackbones.checkpoint import load_converted
from jaxbackbones.convert import hf_swin
from jaxbackbones.models.swin import relative_position_index

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# microsoft/swin-tiny-patch4-window7-224 is the default config; every stage selected.
TINY = dict(out_indices=[0, 1, 2, 3, 4])
# A window-12 layout (as the 384 checkpoints), made shallow to keep the test fast.
WINDOW12 = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=12, image_size=384,
                out_indices=[0, 1, 2, 3, 4])
SMALL = dict(embed_dim=16, depths=[1, 2], num_heads=[1, 2], window_size=4, out_indices=[0, 1, 2])
# Every option away from its default: absolute embeddings (input must give the config's grid), no qkv bias, another
# activation, a layer_norm_eps that only the blocks use, patch 2, odd depths, non-square image_size.
SMALL_OPTIONS = dict(embed_dim=16, depths=[2, 1, 3], num_heads=[2, 2, 4], window_size=3, patch_size=2,
                     image_size=[30, 22], use_absolute_embeddings=True, qkv_bias=False, hidden_act="gelu_new",
                     layer_norm_eps=1e-3, mlp_ratio=2.0, out_indices=[0, 1, 2, 3])

# Measured bf16-vs-fp32 error of the swin-tiny layout at 224 is at most 1.44e-2 (see jaxbackbones/models/swin.py).
BF16_RTOL = 3e-2


def torch_swin(config_kwargs, *, seed=0, attn="sdpa", cls=None):
    cls = cls or transformers.SwinBackbone
    model = cls._from_config(transformers.SwinConfig(**config_kwargs), attn_implementation=attn).eval()
    return randomize_torch_module(model, seed=seed)


def convert(torch_model, config, **kwargs):
    model, report = load_converted(
        lambda: SwinBackbone(config, rngs=nnx.Rngs(0), **kwargs), state_dict_numpy(torch_model), hf_swin.TABLE
    )
    model.eval()
    return model, report


def pixels(batch, height, width, seed=0):
    """NCHW float32 pixels."""
    return np.random.RandomState(seed).randn(batch, 3, height, width).astype(np.float32)


forward_all = nnx.jit(lambda model, x: model(x, output_hidden_states=True))
forward_features = nnx.jit(lambda model, x: model(x).feature_maps)


@pytest.fixture(scope="module")
def tiny():
    torch_model = torch_swin(TINY)
    model, report = convert(torch_model, SwinConfig(**TINY))
    assert report.ok and not report.initialized
    return torch_model, model


@pytest.fixture(scope="module")
def window12():
    torch_model = torch_swin(WINDOW12, seed=1)
    return torch_model, convert(torch_model, SwinConfig(**WINDOW12))[0]


@pytest.fixture(scope="module")
def small():
    torch_model = torch_swin(SMALL, seed=2, attn="eager")
    return torch_model, convert(torch_model, SwinConfig(**SMALL))[0]


# --------------------------------------------------------------------------------------------------------------
# Config


def test_config_matches_transformers_fields_and_defaults():
    theirs = transformers.SwinConfig().to_dict()
    ours = SwinConfig().to_dict()
    fields = [name for name in transformers.SwinConfig.__annotations__ if not name.startswith("_")]
    assert set(fields) <= set(SwinConfig.defaults)
    for key in [*fields, "hidden_size", "num_layers", "stage_names", "out_features", "out_indices", "model_type"]:
        assert ours[key] == theirs[key], key
    config = SwinConfig(embed_dim=32, depths=[1, 1, 1], num_heads=[1, 2, 4])
    assert (config.hidden_size, config.num_layers, config.stage_names) == (128, 3, ["stem", "stage1", "stage2",
                                                                                     "stage3"])
    assert SwinConfig(out_indices=[0, -1]).out_features == ["stem", "stage4"]
    assert SwinConfig(out_features=["stem", "stage2"]).out_indices == [0, 2]


def test_config_hub_round_trip(tmp_path):
    transformers.SwinConfig(**WINDOW12, id2label={0: "cat"}).save_pretrained(tmp_path)
    config = SwinConfig.from_pretrained(tmp_path)
    assert (config.window_size, config.depths, config.out_indices) == (12, [2, 2, 2, 2], [0, 1, 2, 3, 4])
    assert config.id2label == {"0": "cat"}
    saved = json.loads(config.to_json_string())
    written = json.loads((tmp_path / "config.json").read_text())
    assert saved == written  # nothing lost, nothing added
    assert SwinConfig.from_dict(saved) == config
    assert transformers.SwinConfig.from_dict(saved).to_dict()["window_size"] == 12
    # A stale derived key in the file is recomputed, not trusted.
    assert SwinConfig.from_dict({**saved, "hidden_size": 1, "num_layers": 9}).hidden_size == 256
    assert isinstance(AutoConfig.from_pretrained(tmp_path, out_indices=[-1]), SwinConfig)
    assert AutoConfig.for_model("swin", window_size=12) == SwinConfig(window_size=12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depths=[2, 2], num_heads=[3]), "one entry per stage"),
    (dict(embed_dim=96, num_heads=[5, 6, 12, 24]), "num_heads"),
    (dict(hidden_act="nope"), "hidden_act"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
    (dict(out_features=["stage9"]), "stage_names"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SwinConfig(**kwargs)


# --------------------------------------------------------------------------------------------------------------
# Parity with transformers (fp32, max |ours - torch| / max |torch| <= 1e-5 per map)


@pytest.mark.parametrize("batch, height, width", [(2, 224, 224), (1, 97, 130), (1, 225, 161)])
def test_tiny_parity(tiny, batch, height, width):
    torch_model, model = tiny
    x = pixels(batch, height, width)
    reference = torch_forward(torch_model, x, output_hidden_states=True)
    out = forward_all(model, nhwc(x))
    names = model.stage_names
    check_maps(reference.feature_maps, out.feature_maps, names)
    check_maps(reference.hidden_states, out.hidden_states, names, "hidden state")
    assert out.feature_maps[-1].shape == (batch, -(-height // 32), -(-width // 32), 768)


@pytest.mark.parametrize("height, width", [
    (384, 384),
    (200, 150),  # stage3 (13x10) and stage4 (7x5) are smaller than one 12x12 window
    (64, 48),  # every stage fits in one window
])
def test_window12_parity(window12, height, width):
    torch_model, model = window12
    x = pixels(1, height, width, seed=1)
    reference = torch_forward(torch_model, x, output_hidden_states=True)
    out = forward_all(model, nhwc(x))
    check_maps(reference.feature_maps, out.feature_maps, model.stage_names)
    check_maps(reference.hidden_states, out.hidden_states, model.stage_names, "hidden state")


@pytest.mark.parametrize("height, width", [(30, 22), (29, 21)])  # 29x21 pads to the same 15x11 patch grid
def test_options_parity(height, width):
    torch_model = torch_swin(SMALL_OPTIONS, seed=3)
    model, report = convert(torch_model, SwinConfig(**SMALL_OPTIONS))
    assert report.ok and "absolute_pos_embed" in report.loaded
    x = pixels(2, height, width, seed=3)
    check_maps(torch_forward(torch_model, x).feature_maps, forward_features(model, nhwc(x)), model.out_features)
    with pytest.raises(ValueError, match="position embeddings cover 15x11"):
        model(nhwc(pixels(1, 40, 22)))


@pytest.mark.parametrize("selection", [
    dict(out_features=["stem", "stage2"]),
    dict(out_indices=[-1]),
    dict(out_indices=[-3, -1]),
    dict(out_indices=[0]),
])
def test_stage_selection(small, selection):
    base, _ = small
    kwargs = {**SMALL, "out_indices": None, **selection}
    torch_model = transformers.SwinBackbone._from_config(transformers.SwinConfig(**kwargs)).eval()
    missing = torch_model.load_state_dict(base.state_dict(), strict=False)
    assert not missing.missing_keys
    config = SwinConfig(**kwargs)
    model, report = convert(torch_model, config)
    unselected = [name for name in config.stage_names if name not in config.out_features]
    assert sorted(report.initialized) == sorted(f"hidden_states_norms.{n}.{p}" for n in unselected
                                                for p in ("bias", "scale"))
    x = pixels(1, 37, 29)
    reference = torch_forward(torch_model, x).feature_maps
    check_maps(reference, model(nhwc(x)).feature_maps, config.out_features)
    assert model.channels == list(torch_model.channels)


def test_hidden_states_and_attentions(small):
    torch_model, model = small
    x = pixels(2, 37, 29)  # 10x8 patches: padded to 12x8 windows in stage1; stage2 (5x4) padded to 8x4
    reference = torch_forward(torch_model, x, output_hidden_states=True, output_attentions=True)
    out = model(nhwc(x), output_hidden_states=True, output_attentions=True)
    check_maps(reference.feature_maps, out.feature_maps, model.out_features)
    check_maps(reference.hidden_states, out.hidden_states, model.stage_names, "hidden state")
    # transformers returns, per stage, the last block's attention probabilities: (batch * windows, heads, N, N).
    assert len(out.attentions) == len(reference.attentions) == len(SMALL["depths"])
    for i, (r, o) in enumerate(zip(reference.attentions, out.attentions)):
        assert_parity(r.numpy(), o, name=f"attentions {i}")
    assert out.attentions[0].shape == (2 * 6, 1, 16, 16)
    plain = model(nhwc(x))
    assert plain.hidden_states is None and plain.attentions is None


def test_channels_first(small):
    torch_model, model = small
    graphdef, state = nnx.split(model)
    nchw_model = SwinBackbone(SwinConfig(**SMALL), rngs=nnx.Rngs(0), data_format="channels_first")
    nnx.update(nchw_model, state)
    nchw_model.eval()
    x = pixels(1, 23, 41)
    reference = torch_forward(torch_model, x, output_hidden_states=True)
    out = nchw_model(x, output_hidden_states=True)
    for r, o in zip((*reference.feature_maps, *reference.hidden_states), (*out.feature_maps, *out.hidden_states)):
        assert_parity(r.numpy(), o)
    with pytest.raises(ValueError, match="channels"):
        nchw_model(nhwc(x))


# --------------------------------------------------------------------------------------------------------------
# JAX behaviour


def test_jit_equals_eager(small):
    _, model = small
    x = nhwc(pixels(2, 37, 29))
    eager = model(x, output_hidden_states=True)
    jitted = forward_all(model, x)
    for e, j in zip((*eager.feature_maps, *eager.hidden_states), (*jitted.feature_maps, *jitted.hidden_states)):
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-5, atol=1e-5)


def test_gradients_are_finite(small):
    _, model = small
    x = jnp.asarray(nhwc(pixels(1, 19, 26)))

    def loss(model, x):
        return sum(jnp.sum(f) for f in model(x).feature_maps)

    value, grads = nnx.jit(nnx.value_and_grad(loss))(model, x)
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(float(value)) and leaves
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.abs(grads["stages"][0]["blocks"][0]["attn"]["relative_position_bias_table"][...]).sum()) > 0


def test_train_mode_is_stochastic_eval_is_deterministic():
    config = SwinConfig(**{**SMALL, "drop_path_rate": 0.5, "hidden_dropout_prob": 0.1,
                           "attention_probs_dropout_prob": 0.1})
    model = SwinBackbone(config, rngs=nnx.Rngs(0))
    x = jnp.asarray(nhwc(pixels(4, 16, 16)))
    run = nnx.jit(lambda m, x, rngs: m(x, rngs=rngs).feature_maps[-1])

    model.train()
    first, second = run(model, x, nnx.Rngs(dropout=1)), run(model, x, nnx.Rngs(dropout=2))
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(run(model, x, nnx.Rngs(dropout=1)), first)
    with pytest.raises(ValueError, match="rngs"):
        model(x)

    model.eval()
    a, b = run(model, x, nnx.Rngs(dropout=1)), run(model, x, nnx.Rngs(dropout=2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(model(x).feature_maps[-1], a, rtol=1e-5, atol=1e-5)  # eager (no rngs needed)
    assert not np.allclose(a, first)


def test_bfloat16_close_to_float32(tiny):
    torch_model, model = tiny
    bf16_model, _ = convert(torch_model, SwinConfig(**TINY), dtype=jnp.bfloat16)
    x = nhwc(pixels(1, 224, 224))
    reference = forward_features(model, x)
    out = forward_features(bf16_model, x)
    for name, r, o in zip(model.stage_names, reference, out):
        assert o.dtype == jnp.bfloat16
        assert_parity(np.asarray(r), np.asarray(o.astype(jnp.float32)), rtol=BF16_RTOL, name=f"bf16 {name}")


# --------------------------------------------------------------------------------------------------------------
# Conversion and hub loading


def test_prepare_fuses_qkv_and_reports_a_missing_projection(small):
    torch_model, _ = small
    state_dict = state_dict_numpy(torch_model)
    prefix = "swin.encoder.layers.1.blocks.1.attention."
    fused = hf_swin.prepare(state_dict)
    np.testing.assert_array_equal(
        fused[prefix + "qkv.weight"],
        np.concatenate([state_dict[prefix + f"{p}_proj.weight"] for p in "qkv"]),
    )
    assert not any(key.endswith(("q_proj.weight", "k_proj.bias")) for key in fused)

    del state_dict[prefix + "k_proj.weight"]
    with pytest.raises(CheckpointMismatchError) as error:
        load_converted(lambda: SwinBackbone(SwinConfig(**SMALL), rngs=nnx.Rngs(0)), state_dict, hf_swin.TABLE)
    message = str(error.value)
    assert "stages.1.blocks.1.attn.qkv.kernel" in message
    assert prefix + "q_proj.weight" in message and prefix + "v_proj.weight" in message
    assert "qkv.bias" not in message  # the biases were complete and fused


def _save_to_hub(model, tmp_path, repo_id, name="ckpt"):
    folder = tmp_path / name
    model.save_pretrained(folder)
    write_to_hub_cache(folder, repo_id)
    return folder


def test_hub_backbone_checkpoint(tiny, tmp_path, hub_cache):
    torch_model, _ = tiny
    folder = _save_to_hub(torch_model, tmp_path, "test-org/swin-tiny-backbone")
    model, report = AutoBackbone.from_pretrained("test-org/swin-tiny-backbone", out_indices=[1, -1],
                                                 output_loading_info=True)
    assert isinstance(model, SwinBackbone) and report.ok and not report.initialized
    assert set(report.ignored) == {"swin.layernorm.weight", "swin.layernorm.bias"}
    reference = transformers.SwinBackbone.from_pretrained(folder, out_indices=[1, -1]).eval()
    x = pixels(1, 99, 67)
    check_maps(torch_forward(reference, x).feature_maps, forward_features(model, nhwc(x)), ["stage1", "stage4"])


def test_hub_classification_checkpoint(tmp_path, hub_cache):
    classifier = torch_swin({**SMALL, "num_labels": 5}, seed=4, cls=transformers.SwinForImageClassification)
    folder = _save_to_hub(classifier, tmp_path, "test-org/swin-small-cls")
    model, report = AutoBackbone.from_pretrained("test-org/swin-small-cls", out_indices=[0, 1, 2],
                                                 output_loading_info=True)
    assert report.ok
    assert sorted(report.initialized) == sorted(f"hidden_states_norms.{n}.{p}" for n in ("stem", "stage1", "stage2")
                                                for p in ("bias", "scale"))
    assert {"classifier.weight", "classifier.bias", "swin.layernorm.weight"} <= set(report.ignored)
    np.testing.assert_array_equal(model.hidden_states_norms["stage2"].scale[...], np.ones(32))
    reference = transformers.SwinBackbone.from_pretrained(folder, out_indices=[0, 1, 2]).eval()
    assert torch.equal(reference.hidden_states_norms["stage2"].weight, torch.ones(32))
    x = pixels(1, 33, 50)
    check_maps(torch_forward(reference, x).feature_maps, model(nhwc(x)).feature_maps, ["stem", "stage1", "stage2"])

    # The second load reads the cached conversion (every stage has its norm, so any selection can reuse it).
    cached, cached_report = AutoBackbone.from_pretrained("test-org/swin-small-cls", out_indices=[-1],
                                                         output_loading_info=True)
    assert sorted(cached_report.initialized) == sorted(report.initialized)
    assert not cached_report.ignored  # read from the native format: no classifier there to ignore
    np.testing.assert_array_equal(cached(nhwc(x)).feature_maps[0], model(nhwc(x)).feature_maps[-1])
    assert cached.reductions == (4, 4, 8) and cached.num_features == (16, 16, 32)


def test_hub_checkpoint_with_relative_position_index(small, tmp_path, hub_cache):
    from safetensors.numpy import load_file, save_file

    torch_model, _ = small
    folder = tmp_path / "with-index"
    torch_model.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    assert not any("relative_position_index" in key for key in weights)  # transformers 5 no longer persists them
    index = relative_position_index(SMALL["window_size"]).astype(np.int64)
    blocks = [(stage, block) for stage, depth in enumerate(SMALL["depths"]) for block in range(depth)]
    for stage, block in blocks:  # where transformers 4 kept the persistent buffer
        weights[f"encoder.layers.{stage}.blocks.{block}.attention.self.relative_position_index"] = index
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    write_to_hub_cache(folder, "test-org/swin-with-index")
    model, report = AutoBackbone.from_pretrained("test-org/swin-with-index", output_loading_info=True)
    assert report.ok and sum("relative_position_index" in key for key in report.ignored) == len(blocks)
    x = pixels(1, 21, 30)
    check_maps(torch_forward(torch_model, x).feature_maps, model(nhwc(x)).feature_maps, model.out_features)

    tampered = index.copy()
    tampered[[3, 5]] = tampered[[5, 3]]
    weights["encoder.layers.1.blocks.1.attention.self.relative_position_index"] = tampered
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    write_to_hub_cache(folder, "test-org/swin-tampered-index")
    with pytest.raises(CheckpointMismatchError, match=r"layers\.1\.blocks\.1\.attention\.self\.relative_position_index "
                                                      r"does not match .* 4x4 window"):
        AutoBackbone.from_pretrained("test-org/swin-tampered-index")
