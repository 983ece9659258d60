"""DINOv2, DINOv2 with registers and DINOv3 ViT against transformers' backbones: parity at any input size through the
hub layout, every option, token outputs, training, bf16, conversion round trips and the command line."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from flax import nnx
from helpers import assert_parity, randomize_torch_module, state_dict_numpy, write_to_hub_cache

from jaxbackbones import (
    AutoBackbone,
    AutoConfig,
    CheckpointMismatchError,
    DINOv3ViTBackbone,
    DINOv3ViTConfig,
    Dinov2Backbone,
    Dinov2Config,
    Dinov2WithRegistersBackbone,
    Dinov2WithRegistersConfig,
    cli,
    load_backbone,
    trainable_filter,
    training,
)
from jaxbackbones.auto import FAMILIES, export_pretrained
from jaxbackbones.checkpoint import flat_state, load_converted
from jaxbackbones.convert.rules import convert_state_dict
from jaxbackbones.models.vit import BF16_MAP_ERROR

OURS = {"dinov2": (Dinov2Config, Dinov2Backbone), "dinov2_with_registers": (Dinov2WithRegistersConfig,
                                                                           Dinov2WithRegistersBackbone),
        "dinov3_vit": (DINOv3ViTConfig, DINOv3ViTBackbone)}
THEIRS = {"dinov2": "Dinov2", "dinov2_with_registers": "Dinov2WithRegisters", "dinov3_vit": "DINOv3ViT"}

# facebook/dinov2-small and facebook/dinov3-vits16-pretrain-lvd1689m, every fourth block selected.
DINOV2_SMALL = dict(hidden_size=384, num_attention_heads=6, num_hidden_layers=12, image_size=518, patch_size=14,
                    out_indices=[3, 6, 9, 12])
DINOV3_SMALL = dict(hidden_size=384, intermediate_size=1536, num_attention_heads=6, num_hidden_layers=12,
                    num_register_tokens=4, out_indices=[0, 3, 6, 9, 12])
# Small configs, every option away from its default somewhere.
DINOV2_OPTIONS = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=28, patch_size=7,
                      mlp_ratio=2, use_swiglu_ffn=True, qkv_bias=False, hidden_act="gelu_new", layer_norm_eps=1e-3,
                      layerscale_value=0.5, apply_layernorm=False, out_indices=[0, 1, 3])
REGISTERS_OPTIONS = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, image_size=42, patch_size=7,
                         num_register_tokens=3, out_features=["stem", "stage2", "stage3"])
DINOV3_OPTIONS = dict(hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=3, patch_size=8,
                      num_register_tokens=2, use_gated_mlp=True, hidden_act="silu", query_bias=False, key_bias=True,
                      proj_bias=False, mlp_bias=False, rope_theta=37.5, layer_norm_eps=1e-4, apply_layernorm=False,
                      return_class_token=True, out_indices=[0, 2, 3])


def torch_backbone(model_type, config, *, seed=0, attn="sdpa", head=None):
    """A randomized transformers model (the backbone, or `head` = "Model" / "ForImageClassification"), eval mode."""
    name = THEIRS[model_type]
    config = getattr(transformers, f"{name}Config")(**config)
    model = getattr(transformers, f"{name}{head or 'Backbone'}")._from_config(config, attn_implementation=attn)
    return randomize_torch_module(model.eval(), seed=seed)


def convert(torch_model, **kwargs):
    """Ours from the torch model's in-memory state dict (transformers 5's names) and its config."""
    config_class, backbone_class = OURS[torch_model.config.model_type]
    config = config_class.from_dict(torch_model.config.to_dict())
    model, report = load_converted(lambda: backbone_class(config, rngs=nnx.Rngs(0), **kwargs),
                                   state_dict_numpy(torch_model), FAMILIES[config.model_type].table_for(config))
    assert report.ok and not report.initialized, report.summary()
    model.eval()
    return model


def pixels(batch, height, width, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, height, width)).astype(np.float32)


def nhwc(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1))


def run_torch(model, x, **kwargs):
    with torch.no_grad():
        return model(torch.from_numpy(x), **kwargs)


def compare(reference, ours, what="", hidden=False, channels_first=False):
    """Every feature map (NCHW -> NHWC unless ours are `channels_first`; token sequences as they are), class token
    and, with `hidden`, hidden state. Returns the worst relative error."""
    pairs = [("map", r, o) for r, o in zip(reference.feature_maps, ours.feature_maps)]
    assert len(reference.feature_maps) == len(ours.feature_maps)
    if getattr(reference, "cls_tokens", None) is not None:
        assert len(reference.cls_tokens) == len(ours.cls_tokens)
        pairs += [("class token", r, o) for r, o in zip(reference.cls_tokens, ours.cls_tokens)]
    else:
        assert ours.cls_tokens is None
    if hidden:
        assert len(reference.hidden_states) == len(ours.hidden_states)
        pairs += [("hidden state", r, o) for r, o in zip(reference.hidden_states, ours.hidden_states)]
    errors = []
    for i, (kind, r, o) in enumerate(pairs):
        r = r.numpy()
        errors.append(assert_parity(nhwc(r) if r.ndim == 4 and not channels_first else r, o, name=f"{what} {kind} {i}"))
    return max(errors)


forward = nnx.jit(lambda model, x: model(x))
forward_hidden = nnx.jit(lambda model, x: model(x, output_hidden_states=True))


# --------------------------------------------------------------------------------------------------------------
# Full-size checkpoints in the hub layout (save_pretrained of the plain models, loaded by repo id offline)


@pytest.fixture(scope="module")
def dinov2_small(tmp_path_factory, hub_cache):
    """A randomized Dinov2Model (the hub checkpoints' class) of dinov2-small's layout, as facebook/dinov2-small."""
    folder = tmp_path_factory.mktemp("dinov2-small")
    torch_backbone("dinov2", {**DINOV2_SMALL, "out_indices": None}, seed=1, head="Model").save_pretrained(folder)
    write_to_hub_cache(folder, "test-org/dinov2-small")
    return folder


@pytest.fixture(scope="module")
def dinov3_small(tmp_path_factory, hub_cache):
    folder = tmp_path_factory.mktemp("dinov3-small")
    torch_backbone("dinov3_vit", {**DINOV3_SMALL, "out_indices": None}, seed=2, head="Model").save_pretrained(folder)
    write_to_hub_cache(folder, "test-org/dinov3-vits16")
    return folder


@pytest.fixture(scope="module")
def dinov2_small_model(dinov2_small):
    model, report = AutoBackbone.from_pretrained("test-org/dinov2-small", out_indices=(3, 6, 9, 12),
                                                 output_loading_info=True)
    assert isinstance(model, Dinov2Backbone) and report.ok and report.ignored == ["embeddings.mask_token"]
    return model


@pytest.mark.parametrize("size", [(518, 518), (240, 311)])  # the checkpoint's; resampled, non-square, remainders
def test_dinov2_small_parity(dinov2_small, dinov2_small_model, size):
    model = dinov2_small_model
    reference = transformers.Dinov2Backbone.from_pretrained(dinov2_small, out_indices=[3, 6, 9, 12]).eval()
    x = pixels(1, *size)
    ours = forward_hidden(model, nhwc(x))
    error = compare(run_torch(reference, x, output_hidden_states=True), ours, f"dinov2-small {size}", hidden=True)
    assert [m.shape for m in ours.feature_maps] == [(1, size[0] // 14, size[1] // 14, 384)] * 4
    print(f"\ndinov2-small {size}: worst relative error {error:.2e}")


def test_dinov2_small_token_output(dinov2_small):
    """reshape_hidden_states=False: the normalised sequences, class token included (DINOv2's quirk)."""
    model = AutoBackbone.from_pretrained("test-org/dinov2-small", out_indices=[0, 12], reshape_hidden_states=False)
    reference = transformers.Dinov2Backbone.from_pretrained(dinov2_small, out_indices=[0, 12],
                                                           reshape_hidden_states=False).eval()
    x = pixels(1, 240, 311, seed=1)
    ours = forward(model, nhwc(x))
    error = compare(run_torch(reference, x), ours, "dinov2-small tokens")
    assert ours.feature_maps[0].shape == (1, 1 + 17 * 22, 384)
    print(f"\ndinov2-small tokens: worst relative error {error:.2e}")


@pytest.mark.parametrize("size, options", [
    ((224, 224), {}),
    ((160, 288), {}),  # non-square
    ((200, 250), dict(reshape_hidden_states=False, return_class_token=True)),  # remainders; patch tokens only
])
def test_dinov3_vits16_parity(dinov3_small, size, options):
    model = AutoBackbone.from_pretrained("test-org/dinov3-vits16", out_indices=(0, 3, 6, 9, 12), **options)
    assert isinstance(model, DINOv3ViTBackbone)
    config = transformers.DINOv3ViTConfig.from_pretrained(dinov3_small, out_indices=[0, 3, 6, 9, 12])
    for name, value in options.items():  # return_class_token is no field: transformers reads it with getattr
        setattr(config, name, value)
    reference = transformers.DINOv3ViTBackbone.from_pretrained(dinov3_small, config=config).eval()
    x = pixels(2, *size, seed=3)
    ours = forward_hidden(model, nhwc(x))
    error = compare(run_torch(reference, x, output_hidden_states=True), ours, f"dinov3-vits16 {size}", hidden=True)
    grid = (size[0] // 16) * (size[1] // 16)
    expected = (2, grid, 384) if options else (2, size[0] // 16, size[1] // 16, 384)
    assert ours.feature_maps[-1].shape == expected and ours.hidden_states[0].shape == (2, 1 + 4 + grid, 384)
    print(f"\ndinov3-vits16 {size} {options}: worst relative error {error:.2e}")


def test_bfloat16_close_to_float32(dinov3_small, dinov2_small):
    for repo, size in (("test-org/dinov3-vits16", (224, 224)), ("test-org/dinov2-small", (224, 224))):
        full = AutoBackbone.from_pretrained(repo, out_indices=[3, 6, 9, 12])
        half = AutoBackbone.from_pretrained(repo, out_indices=[3, 6, 9, 12], dtype=jnp.bfloat16)
        x = nhwc(pixels(1, *size))
        for name, a, b in zip(full.out_features, forward(full, x).feature_maps, forward(half, x).feature_maps):
            assert b.dtype == jnp.bfloat16
            error = assert_parity(a, np.asarray(b.astype(jnp.float32)), rtol=BF16_MAP_ERROR, name=f"{repo} {name}")
            print(f"\n{repo} bf16 {name}: {error:.2e}")


# --------------------------------------------------------------------------------------------------------------
# Every option, small configs, transformers 5's in-memory names


@pytest.mark.parametrize("model_type, config, sizes", [
    ("dinov2", DINOV2_OPTIONS, [(28, 28), (30, 43), (56, 21)]),
    ("dinov2", {**DINOV2_OPTIONS, "use_swiglu_ffn": False, "apply_layernorm": True, "reshape_hidden_states": False},
     [(29, 35)]),
    ("dinov2_with_registers", REGISTERS_OPTIONS, [(42, 42), (30, 43), (14, 77)]),
    ("dinov2_with_registers", {**REGISTERS_OPTIONS, "reshape_hidden_states": False, "use_swiglu_ffn": True},
     [(33, 20)]),
    ("dinov3_vit", DINOV3_OPTIONS, [(32, 32), (35, 50)]),
    ("dinov3_vit", {**DINOV3_OPTIONS, "reshape_hidden_states": False, "use_gated_mlp": False, "num_register_tokens": 0,
                    "apply_layernorm": True}, [(40, 24)]),
])
def test_options_parity(model_type, config, sizes):
    reference = torch_backbone(model_type, config, seed=4, attn="eager")
    model = convert(reference)
    for size in sizes:
        x = pixels(2, *size, seed=5)
        expected = run_torch(reference, x, output_hidden_states=True, output_attentions=True)
        ours = model(nhwc(x), output_hidden_states=True, output_attentions=True)
        compare(expected, ours, f"{model_type} {size}", hidden=True)
        assert len(ours.attentions) == len(expected.attentions) == config["num_hidden_layers"]
        for r, o in zip(expected.attentions, ours.attentions):
            assert_parity(r.numpy(), o, name="attention probabilities")


def test_the_randomizer_reaches_tokens_position_embeddings_and_layer_scale():
    """Default inits (zeros, ones, 1e-5 layer scale) hide swapped or dropped mappings: check they are all gone."""
    model = torch_backbone("dinov2_with_registers", REGISTERS_OPTIONS, seed=1)
    tensors = {name: tensor.detach() for name, tensor in model.named_parameters()}
    for name in ("embeddings.cls_token", "embeddings.mask_token", "embeddings.register_tokens",
                 "embeddings.position_embeddings"):
        assert 0.7 < float(tensors[name].std()) < 1.3, name  # unit scale, whatever the size
    scales = [tensor for name, tensor in tensors.items() if name.endswith("lambda1")]
    assert scales and all(float(scale.abs().min()) > 0 and len(set(scale.tolist())) == scale.numel()
                          for scale in scales)
    dinov3 = torch_backbone("dinov3_vit", DINOV3_OPTIONS, seed=1)
    inverse_periods = dinov3.rope_embeddings.inv_freq  # computed from rope_theta, not loaded: left as it is
    assert torch.equal(inverse_periods, 1 / 37.5 ** torch.arange(0, 1, 4 / 16, dtype=torch.float32))


def test_stage_selection_and_channels_follow_transformers():
    for model_type, config in (("dinov2", DINOV2_OPTIONS), ("dinov3_vit", DINOV3_OPTIONS)):
        for selection in (dict(out_indices=[-1]), dict(out_features=["stem", "stage2"]), dict(out_indices=[-3, -1])):
            kwargs = {**config, "out_indices": None, **selection}
            reference = torch_backbone(model_type, kwargs)
            ours = nnx.eval_shape(lambda kwargs=kwargs: OURS[model_type][1](OURS[model_type][0](**kwargs),
                                                                            rngs=nnx.Rngs(0)))
            assert ours.stage_names == reference.stage_names and ours.out_features == reference.out_features
            assert ours.out_indices == list(reference.out_indices) and ours.channels == list(reference.channels)
            assert ours.reductions == (config["patch_size"],) * len(ours.stage_names)


def test_classification_checkpoints_load(tmp_path, hub_cache):
    for model_type, config in (("dinov2", DINOV2_OPTIONS), ("dinov2_with_registers", REGISTERS_OPTIONS)):
        source = torch_backbone(model_type, {**config, "num_labels": 3}, seed=6, head="ForImageClassification")
        source.save_pretrained(tmp_path / model_type)
        write_to_hub_cache(tmp_path / model_type, f"test-org/{model_type}-cls")
        model, report = AutoBackbone.from_pretrained(f"test-org/{model_type}-cls", output_loading_info=True)
        assert report.ok and {"classifier.weight", "classifier.bias"} <= set(report.ignored)
        reference = getattr(transformers, f"{THEIRS[model_type]}Backbone").from_pretrained(tmp_path / model_type)
        x = pixels(1, 31, 40, seed=7)
        compare(run_torch(reference.eval(), x), model(nhwc(x)), model_type)


def test_channels_first_and_jit():
    reference = torch_backbone("dinov2_with_registers", REGISTERS_OPTIONS, seed=8)
    model = convert(reference, data_format="channels_first")
    x = pixels(2, 36, 29, seed=9)
    eager, jitted = model(x), forward(model, x)
    compare(run_torch(reference, x), eager, "channels_first", channels_first=True)
    for a, b in zip(eager.feature_maps, jitted.feature_maps):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        model(nhwc(x))
    with pytest.raises(ValueError, match="smaller than one 7x7 patch"):
        model(x[:, :, :6])


# --------------------------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize("model_type", sorted(OURS))
def test_config_matches_transformers(model_type, tmp_path):
    config_class = OURS[model_type][0]
    theirs = getattr(transformers, f"{THEIRS[model_type]}Config")
    fields = [name for name in theirs.__annotations__ if not name.startswith("_")]
    assert set(fields) <= set(config_class.defaults), set(fields) - set(config_class.defaults)
    ours, reference = config_class().to_dict(), theirs().to_dict()
    for key in [*fields, "stage_names", "out_features", "out_indices", "model_type"]:
        assert ours[key] == reference[key], key
    theirs(num_hidden_layers=2, out_indices=[0, 2], id2label={0: "cat"}).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, config_class) and config.out_features == ["stem", "stage2"]
    written = json.loads((tmp_path / "config.json").read_text())
    assert json.loads(config.to_json_string()) == written  # nothing lost, nothing added
    assert theirs.from_dict(config.to_dict()).to_dict()["num_hidden_layers"] == 2


def test_return_class_token_is_kept_as_transformers_keeps_it(tmp_path):
    assert "return_class_token" not in DINOv3ViTConfig().to_dict()
    theirs = transformers.DINOv3ViTConfig(return_class_token=True)
    assert DINOv3ViTConfig.from_dict(theirs.to_dict()).return_class_token is True
    config = DINOv3ViTConfig()
    config.return_class_token = True
    assert config.to_dict()["return_class_token"] is True
    with pytest.raises(ValueError, match="return_class_token"):
        DINOv3ViTConfig(return_class_token="yes")


@pytest.mark.parametrize("config_class, kwargs, match", [
    (Dinov2Config, dict(hidden_size=30, num_attention_heads=4), "cannot be split"),
    (Dinov2Config, dict(hidden_act="nope"), "hidden_act"),
    (Dinov2Config, dict(drop_path_rate=1.0), "drop_path_rate"),
    (Dinov2Config, dict(out_indices=[13]), "out_indices"),
    (Dinov2WithRegistersConfig, dict(num_register_tokens=-1), "num_register_tokens"),
    (DINOv3ViTConfig, dict(hidden_size=36, num_attention_heads=6), "divisible by 4"),
    (DINOv3ViTConfig, dict(patch_size=[16, 16, 16]), "patch_size"),
])
def test_config_rejects_bad_values(config_class, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config_class(**kwargs)


# --------------------------------------------------------------------------------------------------------------
# Training: gradients against torch, stochastic depth, RoPE augmentation, remat, frozen stages, bf16


def torch_grads(model, x):
    model.zero_grad()
    sum(f.mean() for f in model(torch.from_numpy(x)).feature_maps).backward()
    return {name: p.grad.numpy().copy() for name, p in model.named_parameters() if p.grad is not None}


def our_grads(model, x, rngs=None, jit=True):
    def loss(model, x, rngs):
        return sum(jnp.mean(f) for f in model(x, rngs=rngs).feature_maps)

    grad = nnx.jit(nnx.grad(loss)) if jit else nnx.grad(loss)
    return {".".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(grad(model, x, rngs))}


@pytest.mark.parametrize("model_type, config", [
    ("dinov2_with_registers", {**REGISTERS_OPTIONS, "use_swiglu_ffn": True}),
    ("dinov3_vit", {**DINOV3_OPTIONS, "pos_embed_rescale": None, "return_class_token": False}),
])
def test_gradients_match_torch(model_type, config):
    reference = torch_backbone(model_type, config, seed=10)
    model = convert(reference)
    reference.train()
    model.train()
    x = pixels(2, 30, 43, seed=11)
    expected, _ = convert_state_dict(torch_grads(reference, x), FAMILIES[model_type].table_for(model.config),
                                     {path: v.shape for path, v in flat_state(model).items()})
    ours = our_grads(model, nhwc(x))
    assert set(ours) == set(expected)
    scale = max(np.abs(g).max() for g in expected.values())
    for path in ours:
        if path.endswith("k_bias") and model.rope is None:
            # softmax ignores what a key bias adds (the same q.b for every key): both gradients are rounding noise
            assert max(np.abs(expected[path]).max(), np.abs(ours[path]).max()) < 1e-6 * scale, path
            continue
        assert_parity(expected[path], ours[path], rtol=1e-4, name=path)


def test_drop_path_and_dropout_in_train_mode_only():
    config = Dinov2Config(**{**DINOV2_OPTIONS, "drop_path_rate": 0.5, "hidden_dropout_prob": 0.1,
                             "attention_probs_dropout_prob": 0.1})
    model = Dinov2Backbone(config, rngs=nnx.Rngs(0))
    x = jnp.asarray(nhwc(pixels(4, 28, 28)))
    run = nnx.jit(lambda m, x, rngs: m(x, rngs=rngs).feature_maps[-1])
    model.train()
    first, second = run(model, x, nnx.Rngs(dropout=1)), run(model, x, nnx.Rngs(dropout=2))
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(run(model, x, nnx.Rngs(dropout=1)), first)
    with pytest.raises(ValueError, match="rngs"):
        model(x)
    model.eval()
    np.testing.assert_array_equal(run(model, x, nnx.Rngs(dropout=1)), run(model, x, nnx.Rngs(dropout=2)))
    np.testing.assert_allclose(model(x).feature_maps[-1], run(model, x, None), rtol=1e-5, atol=1e-5)


def test_dinov3_rope_augmentation_in_train_mode():
    """transformers rescales the RoPE coordinates by default in train mode (pos_embed_rescale=2.0): so do we, with
    keys from the call; eval mode (and pos_embed_rescale=None) is deterministic and matches torch's eval."""
    reference = torch_backbone("dinov3_vit", DINOV3_OPTIONS, seed=12)
    model = convert(reference)
    x = nhwc(pixels(2, 32, 40, seed=13))
    evaluated = model(x).feature_maps
    model.train()
    with pytest.raises(ValueError, match="no rngs were given"):
        model(x)
    first = model(x, rngs=nnx.Rngs(dropout=0)).feature_maps
    assert not np.allclose(first[-1], model(x, rngs=nnx.Rngs(dropout=1)).feature_maps[-1])
    np.testing.assert_array_equal(first[-1], model(x, rngs=nnx.Rngs(dropout=0)).feature_maps[-1])
    assert not np.allclose(first[-1], evaluated[-1])
    model.eval()
    np.testing.assert_array_equal(model(x).feature_maps[-1], evaluated[-1])


def test_remat_gives_the_same_gradients_and_saves_memory():
    config = Dinov2WithRegistersConfig(**{**REGISTERS_OPTIONS, "drop_path_rate": 0.3})
    x = jnp.asarray(nhwc(pixels(2, 42, 35, seed=14)))
    grads, sizes = [], []
    for remat in (False, True):
        model = Dinov2WithRegistersBackbone(Dinov2WithRegistersConfig.from_dict(
            config.to_dict(), gradient_checkpointing=remat), rngs=nnx.Rngs(5))
        model.train()
        assert all(block.gradient_checkpointing == remat for block in model.blocks)
        grads.append(our_grads(model, x, nnx.Rngs(dropout=3)))
        sizes.append(training.saved_activation_bytes(model, x,
                                                     lambda m, x: sum(jnp.mean(f) for f in
                                                                      m(x, rngs=nnx.Rngs(dropout=0)).feature_maps)))
    for path in grads[0]:
        np.testing.assert_allclose(grads[1][path], grads[0][path], rtol=1e-5, atol=1e-7, err_msg=path)
    assert sizes[1] < sizes[0], sizes


def test_frozen_stages():
    config = DINOv3ViTConfig(**{**DINOV3_OPTIONS, "drop_path_rate": 0.2, "pos_embed_rescale": None}, freeze_stages=2)
    model = AutoBackbone.from_config(config, rngs=nnx.Rngs(0))
    model.train()
    assert model.stage_paths()["stage3"] == [("blocks", 2), ("norm",)]
    frozen = {path[:2] if path[0] == "blocks" else path[:1] for path in trainable_filter(model).frozen}
    assert frozen == {("patch_embed",), ("cls_token",), ("reg_token",), ("blocks", 0)}
    assert model.blocks[0].drop_path.deterministic and not model.blocks[1].drop_path.deterministic
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=trainable_filter(model))
    before = {path: np.array(v[...]) for path, v in flat_state(model).items()}

    def loss(model, x, rngs):
        return sum(jnp.mean(f ** 2) for f in model(x, rngs=rngs).feature_maps)

    @nnx.jit
    def step(model, optimizer, x, rngs):
        grads = nnx.grad(loss, argnums=nnx.DiffState(0, trainable_filter(model)))(model, x, rngs)
        optimizer.update(model, grads)

    step(model, optimizer, jnp.asarray(nhwc(pixels(4, 32, 32))), nnx.Rngs(dropout=0))
    for path, value in flat_state(model).items():
        moved = not np.array_equal(before[path], np.asarray(value[...]))
        assert moved != path.startswith(("patch_embed.", "cls_token", "reg_token", "blocks.0.")), path


def test_bfloat16_gradients_close_to_float32():
    reference = torch_backbone("dinov2", {**DINOV2_OPTIONS, "use_swiglu_ffn": False}, seed=15)
    full, half = convert(reference), convert(reference, dtype=jnp.bfloat16)
    x = jnp.asarray(nhwc(pixels(2, 28, 35, seed=16)))
    g32, g16 = our_grads(full, x), our_grads(half, x)
    error = np.sqrt(sum(((g32[p] - g16[p]) ** 2).sum() for p in g32) / sum((g ** 2).sum() for g in g32.values()))
    assert all(g.dtype == np.float32 for g in g16.values()) and error < 3e-2, error


# --------------------------------------------------------------------------------------------------------------
# Loading errors, native format, export, the command line, load_backbone


def test_checkpoint_of_the_wrong_family_fails_clearly():
    source = torch_backbone("dinov2", {**DINOV2_OPTIONS, "use_swiglu_ffn": False})
    config = Dinov2WithRegistersConfig(**{**DINOV2_OPTIONS, "use_swiglu_ffn": False})
    with pytest.raises(CheckpointMismatchError, match="missing from the checkpoint .*reg_token"):
        load_converted(lambda: Dinov2WithRegistersBackbone(config, rngs=nnx.Rngs(0)), state_dict_numpy(source),
                       FAMILIES["dinov2_with_registers"].table_for(config))
    with pytest.raises(CheckpointMismatchError, match="blocks.0.mlp.fc1.kernel"):  # a SwiGLU config, a plain MLP
        load_converted(lambda: Dinov2Backbone(Dinov2Config(**DINOV2_OPTIONS), rngs=nnx.Rngs(0)),
                       state_dict_numpy(source), FAMILIES["dinov2"].table_for(Dinov2Config(**DINOV2_OPTIONS)))


@pytest.mark.parametrize("model_type, config", [
    ("dinov2", DINOV2_OPTIONS),
    ("dinov2_with_registers", REGISTERS_OPTIONS),
    ("dinov3_vit", DINOV3_OPTIONS),
])
def test_convert_verify_export_round_trip(model_type, config, tmp_path, hub_cache, capsys):
    """`jaxbackbones convert --verify`, `info`, native save -> load and `export` back to transformers, bit-exact."""
    original = torch_backbone(model_type, config, seed=17)
    original.save_pretrained(tmp_path / "src")
    repo = f"test-org/round-trip-{model_type}"
    write_to_hub_cache(tmp_path / "src", repo)
    assert cli.main(["convert", repo, str(tmp_path / "flax"), "--verify"]) == 0
    output = capsys.readouterr().out
    assert "OK: worst relative difference" in output and "ignored on purpose (1): embeddings.mask_token" in output

    assert cli.main(["info", str(tmp_path / "flax")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"model_type   {model_type} (native jaxbackbones format)"
    assert lines[-1].split() == [f"stage{config['num_hidden_layers']}", str(config["hidden_size"]),
                                 str(config["patch_size"])]

    model = AutoBackbone.from_pretrained(tmp_path / "flax")
    model.save_pretrained(tmp_path / "again")
    again = AutoBackbone.from_pretrained(tmp_path / "again")
    for path, variable in flat_state(model).items():
        np.testing.assert_array_equal(np.asarray(flat_state(again)[path][...]), np.asarray(variable[...]))

    export_pretrained(tmp_path / "flax", tmp_path / "torch")
    reloaded = type(original).from_pretrained(tmp_path / "torch").eval()
    before, after = original.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys()
    for key, tensor in before.items():
        if "mask_token" not in key:  # not a backbone weight: exported as transformers initialises it (zeros)
            assert torch.equal(tensor, after[key]), key
    x = torch.from_numpy(pixels(1, 33, 41))
    with torch.no_grad():
        for a, b in zip(original(x).feature_maps, reloaded(x).feature_maps):
            assert torch.equal(a, b)


def test_load_backbone_of_a_depth_anything_config():
    """Depth Anything's config carries a DINOv2 backbone_config: load_backbone builds our Dinov2Backbone."""
    head = transformers.DepthAnythingConfig(backbone_config=transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=28, patch_size=7,
        out_indices=[1, 2, 3, 4], reshape_hidden_states=False, apply_layernorm=True))
    model = load_backbone(head, rngs=nnx.Rngs(0))
    assert isinstance(model, Dinov2Backbone) and model.out_features == ["stage1", "stage2", "stage3", "stage4"]
    model.eval()
    maps = model(jnp.ones((1, 28, 35, 3))).feature_maps
    assert [m.shape for m in maps] == [(1, 1 + 4 * 5, 32)] * 4
