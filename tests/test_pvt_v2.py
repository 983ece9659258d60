"""PVTv2 and SegFormer's Mix Transformer: configs, conversion and feature-map parity with transformers' PvtV2Backbone
and SegformerModel at odd, non-square sizes (full-size MiT-b0 and PVTv2-b0 through the hub cache), the linear variant's
adaptive pooling, export, errors, and training (gradients and SGD steps against torch, drop path, remat, frozen
stages)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import assert_parity, nhwc, randomize_torch_module, state_dict_numpy, write_to_hub_cache
from jaxbackbones.convert.rules import convert_state_dict

from jaxbackbones import (
    AutoBackbone,
    AutoConfig,
    CheckpointMismatchError,
    PvtV2Backbone,
    PvtV2Config,
    SegformerConfig,
    training,
)
from jaxbackbones.auto import FAMILIES, export_pretrained
from jaxbackbones.checkpoint import flat_state, load_converted
from jaxbackbones.models.pvt_v2 import adaptive_avg_pool

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

OURS = {"segformer": SegformerConfig, "pvt_v2": PvtV2Config}
THEIRS = {"segformer": ("SegformerConfig", "SegformerModel", "SegformerForImageClassification"),
          "pvt_v2": ("PvtV2Config", "PvtV2Backbone", "PvtV2ForImageClassification")}
B0 = dict(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256])  # nvidia/mit-b0, OpenGVLab/pvt_v2_b0
# Small configs, every option away from its default somewhere: spatial reduction ratios (one that leaves a remainder
# at these sizes, one stage without), a stage without blocks, linear attention (7x7 pooling of grids both larger and
# smaller than 7), no q/k/v biases, the last stage as tokens, other patch sizes and strides, channels, activations.
SMALL = {
    "segformer": dict(depths=[1, 2, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 2, 3, 4],
                      sr_ratios=[3, 2, 2, 1]),
    "segformer_tokens": dict(depths=[1, 0, 1], hidden_sizes=[8, 16, 24], num_attention_heads=[2, 1, 2],
                             sr_ratios=[4, 1, 1], patch_sizes=[5, 3, 3], strides=[3, 2, 2], mlp_ratios=[2, 3, 1],
                             num_encoder_blocks=3, reshape_last_stage=False, hidden_act="gelu_new", num_channels=1),
    "pvt_v2": dict(depths=[1, 1, 2, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 2, 3, 4],
                   layer_norm_eps=1e-3),
    "pvt_v2_linear": dict(depths=[1, 1, 1], hidden_sizes=[8, 16, 24], num_attention_heads=[1, 2, 3],
                          sr_ratios=[8, 4, 2], mlp_ratios=[2, 2, 2], patch_sizes=[7, 3, 3], strides=[4, 2, 2],
                          num_encoder_blocks=3, linear_attention=True, qkv_bias=False, hidden_act="silu",
                          num_channels=2),
}
_TWO = dict(depths=[1, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 2], sr_ratios=[2, 1], patch_sizes=[7, 3],
            strides=[4, 2], mlp_ratios=[2, 2], num_encoder_blocks=2)
TWO_STAGES = {"segformer": dict(_TWO, drop_path_rate=0.0), "pvt_v2": dict(_TWO, linear_attention=True)}
# One stage of two blocks (stochastic depth's rate rises from 0 at the first): for the compile-bound train-mode tests.
ONE_STAGE = dict(depths=[2], hidden_sizes=[8], num_attention_heads=[2], sr_ratios=[2], patch_sizes=[7], strides=[4],
                 mlp_ratios=[2], num_encoder_blocks=1)
GRAD_RTOL = 1e-4


def family_of(name: str) -> str:
    return name.split("_tokens")[0].removesuffix("_linear")


def torch_model(family, kwargs, *, seed=0, cls_index=1):
    config_name, *classes = THEIRS[family]
    config = getattr(transformers, config_name)(**kwargs)
    model = getattr(transformers, classes[cls_index - 1])._from_config(config, attn_implementation="eager")
    return randomize_torch_module(model.eval(), seed=seed)


def torch_maps(model, x: np.ndarray, **kwargs):
    """Every stage's output, as numpy NHWC maps (or (B, N, C) tokens: SegFormer's last stage with
    reshape_last_stage=False), and the torch output."""
    with torch.no_grad():
        out = model(torch.from_numpy(x), output_hidden_states=True, **kwargs)
    return [nhwc(h.numpy()) if h.ndim == 4 else h.numpy() for h in out.hidden_states], out


def pixels(batch, height, width, channels=3, seed=0):
    """NCHW float32 pixels."""
    return np.random.RandomState(seed).randn(batch, channels, height, width).astype(np.float32)


def convert(model, config, **kwargs):
    ours, report = load_converted(lambda: PvtV2Backbone(config, rngs=nnx.Rngs(0), **kwargs), state_dict_numpy(model),
                                  FAMILIES[config.model_type].table_for(config))
    ours.eval()
    return ours, report


def save_to_hub(model, tmp_path, repo_id):
    model.save_pretrained(tmp_path / repo_id)
    write_to_hub_cache(tmp_path / repo_id, repo_id)
    return tmp_path / repo_id


def check_all(reference, ours, names, what="hidden state"):
    return [assert_parity(r, o, name=f"{what} {n}") for r, o, n in zip(reference, ours, names, strict=True)]


forward_all = nnx.jit(lambda model, x: model(x, output_hidden_states=True))
forward_features = nnx.jit(lambda model, x: model(x).feature_maps)


def all_stages(kwargs):
    return list(range(len(kwargs.get("depths", [2, 2, 2, 2]))))


@pytest.fixture(scope="module", params=["segformer", "pvt_v2"])
def full_size(request, tmp_path_factory, hub_cache):
    """MiT-b0 (SegformerModel) and PVTv2-b0 (PvtV2Backbone), random weights, saved by save_pretrained and loaded by
    repo id."""
    family = request.param
    reference = torch_model(family, {**B0, **({"out_indices": [0, 1, 2, 3]} if family == "pvt_v2" else {})})
    repo = f"test-org/{family}-b0"
    save_to_hub(reference, tmp_path_factory.mktemp(family), repo)
    model, report = AutoBackbone.from_pretrained(repo, out_indices=[0, 1, 2, 3], output_loading_info=True)
    assert isinstance(model, PvtV2Backbone) and report.ok and not report.initialized and not report.ignored
    return family, reference, model


# --------------------------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize("family", sorted(OURS))
def test_config_matches_transformers(family, tmp_path):
    theirs_class = getattr(transformers, THEIRS[family][0])
    theirs, ours = theirs_class().to_dict(), OURS[family]().to_dict()
    fields = [name for name in theirs_class.__annotations__ if not name.startswith("_")]
    assert set(fields) == set(OURS[family].defaults)
    for key in fields:
        assert ours[key] == (list(theirs[key]) if isinstance(theirs[key], tuple) else theirs[key]), key
    assert ours["stage_names"] == ["stage1", "stage2", "stage3", "stage4"] and ours["out_features"] == ["stage4"]

    # config.json written by transformers reads back and writes out unchanged, unknown keys kept
    small = SMALL[family]
    theirs_class(**small, id2label={0: "cat"}).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, out_indices=[0, 2])
    assert type(config) is OURS[family] and config.out_features == ["stage1", "stage3"]
    written = json.loads((tmp_path / "config.json").read_text())
    again = json.loads(type(config)(**{k: v for k, v in written.items() if k != "model_type"}).to_json_string())
    assert {k: v for k, v in again.items() if k in written} == written
    assert theirs_class.from_dict(json.loads(config.to_json_string())).to_dict()["depths"] == small["depths"]


@pytest.mark.parametrize("family, kwargs, match", [
    ("segformer", dict(depths=[1, 1, 1]), "one entry per stage"),
    ("pvt_v2", dict(depths=[1, 1, 1], hidden_sizes=[4, 8, 16], sr_ratios=[2, 1, 1], patch_sizes=[7, 3, 3],
                    strides=[4, 2, 2], num_attention_heads=[1, 1, 1], mlp_ratios=[1, 1, 1]),
     "num_encoder_blocks=4 but depths .* set num_encoder_blocks=3"),
    ("segformer", dict(num_attention_heads=[1, 3, 5, 8]), r"stage2 has 64 channels, which num_attention_heads\[1\]"),
    ("pvt_v2", dict(hidden_act="nope"), "hidden_act"),
    ("pvt_v2", dict(sr_ratios=[8, 0, 2, 1]), "sr_ratios"),
    ("segformer", dict(drop_path_rate=1.0), "drop_path_rate"),
    ("pvt_v2", dict(out_features=["stem"]), "stage_names"),
    ("segformer", dict(freeze_stages=5), "freeze_stages"),
])
def test_config_rejects_bad_values(family, kwargs, match):
    with pytest.raises(ValueError, match=match):
        OURS[family](**kwargs)


# --------------------------------------------------------------------------------------------------------------
# Parity (fp32, max |ours - torch| / max |torch| <= 1e-5 per map)


def test_full_size_parity_through_the_hub_cache(full_size):
    family, reference, model = full_size
    x = pixels(2, 227, 163, seed=1)
    expected, _ = torch_maps(reference, x)
    out = forward_all(model, nhwc(x))
    errors = check_all(expected, out.feature_maps, model.stage_names, "feature map")
    check_all(expected, out.hidden_states, model.stage_names)
    assert [m.shape[1:3] for m in out.feature_maps] == [(57, 41), (29, 21), (15, 11), (8, 6)]
    assert model.channels == [32, 64, 160, 256] and model.reductions == (4, 8, 16, 32)
    print(f"\n{family}-b0 227x163: worst relative error {max(errors):.2e}")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_parity(name):
    family, kwargs = family_of(name), SMALL[name]
    stages = all_stages(kwargs)
    reference = torch_model(family, {**kwargs, **({"out_indices": stages} if family == "pvt_v2" else {})}, seed=2)
    model, report = convert(reference, OURS[family](**kwargs, out_indices=stages))
    assert report.ok and not report.initialized and not report.ignored
    x = pixels(2, 67, 45, kwargs.get("num_channels", 3), seed=3)
    expected, _ = torch_maps(reference, x)
    out = forward_all(model, nhwc(x))
    errors = check_all(expected, out.feature_maps, model.stage_names, "feature map")
    if kwargs.get("reshape_last_stage") is False:  # the last stage as transformers returns it: tokens
        assert out.feature_maps[-1].shape == (2, 6 * 4, 24)  # 67x45 -> 23x15 -> 12x8 -> 6x4
    if kwargs.get("linear_attention"):
        block = model.stages[0].blocks[0]
        assert block.attn.sr.kernel.shape == (1, 1, 8, 8) and block.mlp.extra_relu
    print(f"\n{name} 67x45: worst relative error {max(errors):.2e}")


def test_attentions_match_segformer():
    kwargs = SMALL["segformer"]
    reference = torch_model("segformer", kwargs, seed=4)
    model, _ = convert(reference, SegformerConfig(**kwargs))
    x = pixels(1, 45, 39, seed=4)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x), output_attentions=True).attentions
    out = nnx.jit(lambda model, x: model(x, output_attentions=True))(model, nhwc(x))
    assert len(out.attentions) == len(expected) == sum(kwargs["depths"])
    for i, (r, o) in enumerate(zip(expected, out.attentions)):
        assert_parity(r.numpy(), o, name=f"attention {i}")


@pytest.mark.parametrize("size", [(17, 12), (7, 7), (5, 3), (14, 21), (1, 9)])
def test_adaptive_average_pooling_matches_torch(size):
    x = pixels(2, *size, 3, seed=5)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), 7).numpy()
    assert_parity(nhwc(expected), jax.jit(adaptive_avg_pool, static_argnums=1)(nhwc(x), 7), rtol=1e-6)


@pytest.mark.parametrize("family, selection", [("segformer", dict(out_features=["stage2", "stage4"])),
                                               ("pvt_v2", dict(out_indices=[0, -1]))])
def test_stage_selection_and_channels_first(family, selection):
    kwargs = SMALL[family]
    reference = torch_model(family, kwargs, seed=6)
    model, _ = convert(reference, OURS[family](**kwargs, **selection), data_format="channels_first")
    x = pixels(1, 41, 35, seed=6)
    expected, _ = torch_maps(reference, x)
    out = forward_features(model, x)
    indices = [model.stage_names.index(name) for name in model.out_features]
    for index, feature_map in zip(indices, out, strict=True):
        assert_parity(expected[index].transpose(0, 3, 1, 2), feature_map, name=model.stage_names[index])
    assert model.channels == [kwargs["hidden_sizes"][i] for i in indices]
    with pytest.raises(ValueError, match="channels"):
        model(nhwc(x))


def test_bfloat16_close_to_float32():
    kwargs = {**SMALL["segformer"], "out_indices": [0, 1, 2, 3]}
    reference = torch_model("segformer", kwargs, seed=7)
    full, _ = convert(reference, SegformerConfig(**kwargs))
    half, _ = convert(reference, SegformerConfig(**kwargs), dtype=jnp.bfloat16)
    x = nhwc(pixels(1, 64, 48, seed=7))
    for a, b in zip(forward_features(full, x), forward_features(half, x)):
        assert b.dtype == jnp.bfloat16
        assert_parity(np.asarray(a), np.asarray(b.astype(jnp.float32)), rtol=3e-2)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: classification models, in-memory names, export, errors


@pytest.mark.parametrize("family", sorted(OURS))
def test_classification_checkpoint_and_export_round_trip(family, tmp_path, hub_cache):
    """The classification model through the hub (classifier ignored), then native save / load and export: the
    export reloads into transformers' model bit for bit."""
    kwargs = SMALL[f"{family}_tokens" if family == "segformer" else "pvt_v2_linear"]
    source = torch_model(family, {**kwargs, "num_labels": 3}, seed=8, cls_index=2)
    save_to_hub(source, tmp_path, f"test-org/{family}-cls")
    model, report = AutoBackbone.from_pretrained(f"test-org/{family}-cls", out_indices=[0, 2],
                                                 output_loading_info=True)
    assert report.ok and not report.initialized and sorted(report.ignored) == ["classifier.bias", "classifier.weight"]
    encoder = source.segformer if family == "segformer" else source.pvt_v2
    x = pixels(1, 50, 34, kwargs.get("num_channels", 3), seed=8)
    expected, _ = torch_maps(encoder, x)
    for index, feature_map in zip([0, 2], forward_features(model, nhwc(x))):
        assert_parity(expected[index], feature_map)

    model.save_pretrained(tmp_path / "native")
    native = AutoBackbone.from_pretrained(tmp_path / "native")
    for path, variable in flat_state(model).items():
        assert np.array_equal(np.asarray(variable[...]), np.asarray(flat_state(native)[path][...])), path
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    assert json.loads((tmp_path / "torch" / "config.json").read_text())["architectures"] == [THEIRS[family][1]]
    from safetensors.numpy import load_file

    saved = load_file(tmp_path / f"test-org/{family}-cls" / "model.safetensors")
    exported = load_file(tmp_path / "torch" / "model.safetensors")
    prefix = f"{family}."
    kept = {key.removeprefix(prefix): array for key, array in saved.items() if not key.startswith("classifier.")}
    assert kept.keys() == exported.keys()
    assert all(np.array_equal(kept[key], exported[key]) for key in kept)
    reloaded = getattr(transformers, THEIRS[family][1]).from_pretrained(tmp_path / "torch").eval()
    for key, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[key]), key


def test_in_memory_names_and_wrong_checkpoints():
    kwargs = SMALL["segformer"]
    reference = torch_model("segformer", kwargs, seed=9)
    in_memory = state_dict_numpy(reference)
    assert all(key.startswith("stages.") for key in in_memory)  # transformers 5 in memory; saved under encoder.
    config = SegformerConfig(**kwargs)
    table = FAMILIES["segformer"].table_for(config)
    model, report = load_converted(lambda: PvtV2Backbone(config, rngs=nnx.Rngs(0)), in_memory, table)
    assert report.ok and len(report.loaded) == len(in_memory) - 2 * sum(kwargs["depths"])  # key, value fused

    missing = {key: value for key, value in in_memory.items() if "stages.1.layer_norm." not in key}
    with pytest.raises(CheckpointMismatchError, match=r"(?s)missing.*stages\.1\.norm\.scale"):
        load_converted(lambda: PvtV2Backbone(config, rngs=nnx.Rngs(0)), missing, table)
    # a PVTv2 checkpoint with spatial reduction loaded as the linear variant: the sr kernels do not fit
    pvt = torch_model("pvt_v2", SMALL["pvt_v2"], seed=9)
    linear = PvtV2Config(**SMALL["pvt_v2"], linear_attention=True)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)shape mismatches.*spatial_reduction\.weight"):
        convert(pvt, linear)
    # a SegFormer checkpoint declared as PVTv2: nothing matches
    with pytest.raises(CheckpointMismatchError, match="no key matched at all"):
        load_converted(lambda: PvtV2Backbone(PvtV2Config(**kwargs), rngs=nnx.Rngs(0)), in_memory,
                       FAMILIES["pvt_v2"].table_for(PvtV2Config(**kwargs)))
    # without q/k/v biases, the biases of a checkpoint that has them are unexpected
    with pytest.raises(CheckpointMismatchError, match=r"(?s)unexpected.*attention\.query\.bias"):
        convert(pvt, PvtV2Config(**SMALL["pvt_v2"], qkv_bias=False))
    with pytest.raises(ValueError, match="2 channels but the config expects num_channels=3"):
        model.eval()
        model(jnp.zeros((1, 32, 32, 2)))


# --------------------------------------------------------------------------------------------------------------
# Training


def sum_of_squares(model, x, rngs=None):
    return sum(jnp.mean(jnp.square(f)) for f in model(x, **({} if rngs is None else {"rngs": rngs})).feature_maps)


def test_gradients_and_two_sgd_steps_match_torch():
    """A tiny randomized MiT in train mode (deterministic: no dropout or drop path): the gradients of every
    parameter, then the losses and weights of two SGD steps, as torch computes them."""
    kwargs = TWO_STAGES["segformer"]
    reference = torch_model("segformer", kwargs, seed=10).train()
    config = SegformerConfig(**kwargs, out_indices=[0, 1])
    model, _ = convert(reference, config)
    model.train()
    x = pixels(2, 37, 45, seed=10)
    reference.zero_grad()
    out = reference(torch.from_numpy(x), output_hidden_states=True).hidden_states
    sum(torch.mean(torch.square(f)) for f in out).backward()
    grads = {name: p.grad.numpy() for name, p in reference.named_parameters() if p.grad is not None}
    shapes = {path: v.shape for path, v in flat_state(model).items() if isinstance(v, nnx.Param)}
    table = FAMILIES["segformer"].table_for(config)
    expected, report = convert_state_dict(grads, table, shapes)
    assert report.ok and not report.ignored, report.summary()
    ours = nnx.jit(nnx.grad(sum_of_squares))(model, jnp.asarray(nhwc(x)))
    ours = {".".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(ours)}
    assert set(ours) == set(expected)
    for path in ours:
        assert_parity(expected[path], ours[path], rtol=GRAD_RTOL, name=path)

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    nnx_optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)
    step = nnx.jit(lambda model, optimizer, x: _step(model, optimizer, x))
    for i in range(2):
        batch = pixels(2, 37, 45, seed=11 + i)
        optimizer.zero_grad()
        loss = sum(torch.mean(torch.square(f)) for f in
                   reference(torch.from_numpy(batch), output_hidden_states=True).hidden_states)
        loss.backward()
        optimizer.step()
        ours_loss = step(model, nnx_optimizer, jnp.asarray(nhwc(batch)))
        assert_parity(loss.item(), ours_loss, rtol=1e-5, name=f"loss at step {i}")
    after, _ = convert_state_dict(state_dict_numpy(reference), table, shapes)
    for path, variable in flat_state(model).items():
        assert_parity(after[path], variable[...], rtol=GRAD_RTOL, name=f"{path} after two steps")


def _step(model, optimizer, x):
    loss, grads = nnx.value_and_grad(sum_of_squares)(model, x)
    optimizer.update(model, grads)
    return loss


def test_drop_path_and_dropout_are_stochastic_in_train_mode_only_and_remat_keeps_gradients():
    # attention dropout (the explicit softmax path); hidden dropout is nnx.Dropout as well, and only slower to compile
    kwargs = {**ONE_STAGE, "drop_path_rate": 0.5, "attention_probs_dropout_prob": 0.1, "linear_attention": True}
    config = PvtV2Config(**kwargs)
    model = AutoBackbone.from_config(config, rngs=nnx.Rngs(0))
    assert sorted(model.random_layers()) == ["DropPath(1 layer, rate <= 0.5)", "Dropout(2 layers, rate <= 0.1)"]
    x = jnp.asarray(nhwc(pixels(4, 32, 32, seed=12)))
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
        # drop path only: XLA:CPU compiles the gradients through the dropout layers slowly (~15 s)
        model = AutoBackbone.from_config(SegformerConfig(**ONE_STAGE, drop_path_rate=0.5,
                                                         gradient_checkpointing=remat), rngs=nnx.Rngs(0))
        assert all(stage.gradient_checkpointing == remat for stage in model.stages)
        grads.append(nnx.to_flat_state(nnx.jit(nnx.grad(sum_of_squares))(model, x, nnx.Rngs(dropout=7))))
    for (path, a), (_, b) in zip(*grads, strict=True):
        np.testing.assert_allclose(np.asarray(b[...]), np.asarray(a[...]), rtol=1e-5, atol=1e-7, err_msg=str(path))


def test_frozen_stages_stay_put_while_the_rest_trains():
    config = SegformerConfig(**TWO_STAGES["segformer"], out_indices=[0, 1], freeze_stages=1)
    model = AutoBackbone.from_config(config, rngs=nnx.Rngs(0))
    assert {path[:2] for path in training.frozen_parameter_paths(model)} == {("stages", 0)}
    wrt = training.trainable_filter(model)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=wrt)

    @nnx.jit
    def step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(sum_of_squares, argnums=nnx.DiffState(0, wrt))(model, x)
        optimizer.update(model, grads)
        return loss

    before = {path: np.array(v[...]) for path, v in flat_state(model).items()}
    x = jnp.asarray(nhwc(pixels(2, 32, 32, seed=13)))
    losses = [float(step(model, optimizer, x)) for _ in range(3)]
    assert losses[-1] < losses[0], losses
    for path, variable in flat_state(model).items():
        assert np.array_equal(before[path], variable[...]) == path.startswith("stages.0."), path


# --------------------------------------------------------------------------------------------------------------
# timm's layout: features_only parity through the hub cache, transformers' TimmBackbone names, export


TIMM_SMALL = {"pvt_v2_b0": dict(depths=(1, 2, 1, 1), embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4)),
              "pvt_v2_b2_li": dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4))}


@pytest.mark.parametrize("name", sorted(TIMM_SMALL))
def test_timm_features_only_parity_and_export(name, tmp_path, hub_cache):
    import timm
    from safetensors.numpy import load_file
    from timm.models._hub import save_for_hf

    features = randomize_torch_module(timm.create_model(name, features_only=True, **TIMM_SMALL[name]).eval(), seed=14)
    full = timm.create_model(name, num_classes=5, **TIMM_SMALL[name]).eval()
    missing, unexpected = full.load_state_dict({key.replace("stages_", "stages.", 1): value
                                                for key, value in features.state_dict().items()}, strict=False)
    assert sorted(missing) == ["head.bias", "head.weight"] and not unexpected
    save_for_hf(full, tmp_path / "timm", safe_serialization=True)
    repo = f"timm/{name}.in1k"
    write_to_hub_cache(tmp_path / "timm", repo)
    model, report = AutoBackbone.from_pretrained(repo, out_indices=[0, 1, 2, 3], output_loading_info=True)
    assert report.ok and sorted(report.ignored) == ["head.bias", "head.weight"]
    assert model.stage_names == [info["module"] for info in features.feature_info.get_dicts()]
    x = pixels(2, 67, 45, seed=14)
    with torch.no_grad():
        expected = [nhwc(f.numpy()) for f in features(torch.from_numpy(x))]
    errors = check_all(expected, forward_features(model, nhwc(x)), model.stage_names, "feature map")
    print(f"\ntimm {name} 67x45: worst relative error {max(errors):.2e}")

    # transformers' TimmBackbone names (`_backbone.stages_0...`) read the same
    flat = {f"_backbone.{key}": value for key, value in state_dict_numpy(features).items()}
    converted, again = load_converted(lambda: type(model)(model.config, rngs=nnx.Rngs(0)), flat,
                                      FAMILIES["timm_backbone"].table_for(model.config))
    assert again.ok and not again.ignored
    # export: timm's full state dict, the head a zero placeholder, everything else bit for bit
    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    original, exported = load_file(tmp_path / "timm" / "model.safetensors"), load_file(tmp_path / "torch" /
                                                                                      "model.safetensors")
    assert original.keys() == exported.keys()
    assert all(np.array_equal(original[key], exported[key]) for key in original if not key.startswith("head."))
    assert not np.any(exported["head.weight"])
    timm.create_model(name, num_classes=5, **TIMM_SMALL[name]).load_state_dict(
        {key: torch.from_numpy(value) for key, value in exported.items()})  # strict


# --------------------------------------------------------------------------------------------------------------
# Preprocessing: SegformerImageProcessor and PvtImageProcessor against transformers' PIL backend, bit for bit


@pytest.mark.parametrize("options", [{}, {"size": 96}, {"size": {"height": 64, "width": 100}, "resample": 3},
                                     {"do_normalize": False, "do_reduce_labels": True}])
@pytest.mark.parametrize("kind", ["Segformer", "Pvt"])
def test_image_processors_match_transformers(kind, options):
    from test_image_processing import hf_pixels, random_images

    from jaxbackbones import image_processing

    if kind == "Pvt":
        options = {key: value for key, value in options.items() if key != "do_reduce_labels"}
    theirs = getattr(transformers, f"{kind}ImageProcessorPil")(**options)
    ours = getattr(image_processing, f"{kind}ImageProcessor")(**options)
    images = random_images([(97, 311), (480, 640), (5, 7), (512, 512)], seed=15)
    reference = hf_pixels(theirs, images)
    for data_format, expected in (("channels_first", reference), ("channels_last", reference.transpose(0, 2, 3, 1))):
        got = ours(images, data_format=data_format).pixel_values
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("repo", ["nvidia/mit-b0", "OpenGVLab/pvt_v2_b0"])
def test_catalog_preprocessing_reads_as_transformers_does(repo, tmp_path):
    from test_image_processing import hf_pixels, random_images

    from jaxbackbones import catalog, image_processing

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(catalog.KNOWN_CHECKPOINTS[repo].preprocessing))
    ours = image_processing.AutoImageProcessor.from_pretrained(tmp_path)
    theirs = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    expected = "SegformerImageProcessor" if repo.startswith("nvidia") else "PvtImageProcessor"
    assert type(ours).__name__ == expected and type(theirs).__name__ == f"{expected}Pil"
    images = random_images([(97, 311), (480, 640)], seed=16)
    np.testing.assert_array_equal(ours(images, data_format="channels_first").pixel_values, hf_pixels(theirs, images))


def test_cli_convert_verify_for_a_family_without_a_transformers_backbone(tmp_path, hub_cache, capsys):
    """`jaxbackbones convert --verify` compares a SegFormer with SegformerModel's hidden states."""
    from jaxbackbones import cli

    one_stage = dict(depths=[1], hidden_sizes=[8], num_attention_heads=[1], sr_ratios=[2], patch_sizes=[7], strides=[4],
                     mlp_ratios=[2], num_encoder_blocks=1, num_labels=2)  # verify runs ours op by op: keep it small
    source = torch_model("segformer", one_stage, seed=17, cls_index=2)
    save_to_hub(source, tmp_path, "test-org/cli-segformer")
    assert cli.main(["convert", "test-org/cli-segformer", str(tmp_path / "flax"), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "OK: worst relative difference" in printed
    assert any(line.startswith("stage1 ") and "(2, 8, 56, 56)" in line for line in printed.splitlines())


def test_segmentation_checkpoint_and_a_head_config(tmp_path, hub_cache):
    """SegformerForSemanticSegmentation: the encoder loads, the decode head is ignored; a UperNet config carrying a
    PVTv2 builds ours."""
    from jaxbackbones import load_backbone

    source = torch_model("segformer", {**SMALL["segformer"], "num_labels": 3}, seed=18, cls_index=2)
    segmentation = randomize_torch_module(
        transformers.SegformerForSemanticSegmentation(source.config).eval(), seed=18)
    save_to_hub(segmentation, tmp_path, "test-org/segformer-ade")
    model, report = AutoBackbone.from_pretrained("test-org/segformer-ade", out_indices=[0, 1, 2, 3],
                                                 output_loading_info=True)
    assert report.ok and report.ignored and all(key.startswith("decode_head.") for key in report.ignored)
    x = pixels(1, 45, 67, seed=18)
    expected, _ = torch_maps(segmentation.segformer, x)
    check_all(expected, forward_features(model, nhwc(x)), model.stage_names, "feature map")

    head = transformers.UperNetConfig(backbone_config=transformers.PvtV2Config(
        **SMALL["pvt_v2"], out_features=["stage2", "stage4"]))
    built = nnx.eval_shape(lambda: load_backbone(head))
    assert isinstance(built.config, PvtV2Config) and built.channels == [16, 32]


def test_from_config_weights_are_the_eager_ones_and_torch_s_initialisation():
    """`from_config`'s batched draws equal the module built directly, bit for bit; the initial weights follow
    transformers' scheme (Linear normal(0.02), convolutions normal(sqrt(2 / fan_out)), norms 1 and 0)."""
    from test_initializers import assert_bit_identical

    config = SegformerConfig(**ONE_STAGE)  # eager construction compiles each new shape's draw: keep it small
    model = AutoBackbone.from_config(config, rngs=nnx.Rngs(3))
    assert_bit_identical(model, PvtV2Backbone(config, rngs=nnx.Rngs(3)))
    wide = SegformerConfig(**{**ONE_STAGE, "hidden_sizes": [64], "sr_ratios": [8], "depths": [1]})
    block = AutoBackbone.from_config(wide, rngs=nnx.Rngs(4)).stages[0].blocks[0]
    assert abs(float(np.std(block.mlp.fc1.kernel[...])) - 0.02) < 1e-3
    assert abs(float(np.std(block.attn.sr.kernel[...])) - np.sqrt(2 / (8 * 8 * 64))) < 2e-3
    assert abs(float(np.std(block.mlp.dwconv.kernel[...])) - np.sqrt(2 / 9)) < 0.05
    assert np.all(block.norm1.scale[...] == 1) and not np.any(block.attn.kv.bias[...])
