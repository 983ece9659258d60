"""Training: gradients against torch, frozen BatchNorm and stages with optax, remat, bf16, load_backbone, FPN."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from flax import nnx
from helpers import assert_parity, randomize_torch_module, state_dict_numpy
from jaxbackbones.convert import hf_resnet, hf_swin
from jaxbackbones.convert.rules import CONV_KERNEL, convert_state_dict

from jaxbackbones import (
    FPN,
    AutoBackbone,
    AutoConfig,
    ResNetBackbone,
    ResNetConfig,
    SwinBackbone,
    SwinConfig,
    load_backbone,
    trainable_filter,
    training,
)
from jaxbackbones.checkpoint import flat_state, load_converted
from jaxbackbones.layers import BatchNorm

GRAD_RTOL = 1e-4
# Eagerly, remat runs each block as one compiled computation and the plain model op by op: float32 rounding
# differs slightly (measured up to ~1e-6 relative on BatchNorm gradients); under jit on CPU they are bit-identical.
REMAT_RTOL = 1e-5
# bf16 compute vs fp32 (max |bf16 - fp32| / max |fp32| per map; global relative L2 of all gradients). Measured here:
# maps <= ~1.2e-2; gradients 9.3e-2 (ResNet; torch's autocast: 12.0e-2) and ~1.1e-2 (Swin; autocast 1.1e-2).
# Full-size numbers: README.md ("Mixed precision"), benchmarks/bf16_tolerance.py.
BF16_MAP_RTOL = 3e-2
BF16_GRAD_RTOL = {"resnet": 0.2, "swin": 3e-2}

RESNET = dict(embedding_size=8, hidden_sizes=[16, 24, 32], depths=[1, 2, 1], out_indices=[0, 1, 2, 3])
SWIN = dict(embed_dim=16, depths=[1, 2], num_heads=[1, 2], window_size=4, out_indices=[0, 1, 2],
            drop_path_rate=0.0)
RESNET_SHORT = dict(embedding_size=8, hidden_sizes=[16, 24], depths=[2, 1], out_indices=[0, 1, 2])
# One stage of a plain and a shifted block: what the slower (compile-bound) Swin tests need.
SWIN_ONE_STAGE = dict(embed_dim=16, depths=[2], num_heads=[2], window_size=4, out_indices=[0, 1], drop_path_rate=0.0)


def pixels(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def sum_of_means(model, x, rngs=None):
    return sum(jnp.mean(f) for f in model(x, **({} if rngs is None else {"rngs": rngs})).feature_maps)


_JITTED_GRADS = {}


def param_grads(model, x, *args, loss=sum_of_means, jit=True):
    """Gradients of every parameter by state path; `args` follow `x` into `loss`. `jit=False` runs eagerly: XLA:CPU
    compiles rematerialisation away under jit, so the remat tests run eagerly, where the recomputation happens."""
    if jit:
        grad = _JITTED_GRADS.setdefault(loss, nnx.jit(nnx.grad(loss)))
    else:
        grad = nnx.grad(loss)
    grads = grad(model, jnp.asarray(x), *args)
    return {".".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(grads)}


def torch_grads(torch_model, x_nchw) -> dict[str, np.ndarray]:
    torch_model.zero_grad()
    outputs = torch_model(torch.from_numpy(x_nchw))
    sum(f.mean() for f in outputs.feature_maps).backward()
    # transformers 5's SwinBackbone keeps SwinModel's final layernorm, which the backbone does not use.
    return {name: p.grad.detach().numpy().copy() for name, p in torch_model.named_parameters() if p.grad is not None}


def convert_grads(grads, table, model):
    shapes = {path: v.shape for path, v in flat_state(model).items() if isinstance(v, nnx.Param)}
    converted, report = convert_state_dict(grads, table, shapes)
    assert report.ok and not report.ignored, report.summary()
    return converted


def resnet_pair(seed=0, dtype=jnp.float32, layout=RESNET, **overrides):
    torch_model = randomize_torch_module(transformers.ResNetBackbone(transformers.ResNetConfig(**layout)).eval(), seed)
    config = ResNetConfig.from_dict(torch_model.config.to_dict(), **overrides)
    model, report = load_converted(lambda: ResNetBackbone(config, rngs=nnx.Rngs(0), dtype=dtype),
                                   state_dict_numpy(torch_model), hf_resnet.TABLE)
    assert report.ok
    return torch_model, model


def swin_pair(seed=0, dtype=jnp.float32, layout=SWIN, **overrides):
    torch_model = transformers.SwinBackbone._from_config(transformers.SwinConfig(**layout),
                                                         attn_implementation="eager")
    torch_model = randomize_torch_module(torch_model.eval(), seed)
    config = SwinConfig.from_dict(torch_model.config.to_dict(), **overrides)
    model, report = load_converted(lambda: SwinBackbone(config, rngs=nnx.Rngs(0), dtype=dtype),
                                   state_dict_numpy(torch_model), hf_swin.TABLE)
    assert report.ok and not report.initialized
    return torch_model, model


# --------------------------------------------------------------------------------------------------------------
# Gradients against torch (fp32, every parameter, through the conversion tables)


def test_resnet_gradients_match_torch_in_train_mode():
    torch_model, model = resnet_pair()
    torch_model.train()
    model.train()
    x = pixels((4, 3, 37, 45), seed=1)
    expected = convert_grads(torch_grads(torch_model, x), hf_resnet.TABLE, model)
    ours = param_grads(model, x.transpose(0, 2, 3, 1))
    assert set(ours) == set(expected) and len(ours) == len(list(torch_model.parameters()))
    for path in ours:
        assert_parity(expected[path], ours[path], rtol=GRAD_RTOL, name=path)
    # The same step updated the running statistics as torch did.
    statistics, _ = convert_state_dict(state_dict_numpy(torch_model), hf_resnet.TABLE,
                                       {p: v.shape for p, v in flat_state(model).items()})
    for path, variable in flat_state(model).items():
        if isinstance(variable, nnx.BatchStat):
            assert_parity(statistics[path], np.asarray(variable[...]), name=path)


def test_swin_gradients_match_torch():
    torch_model, model = swin_pair(seed=2)
    torch_model.train()
    model.train()
    x = pixels((2, 3, 37, 29), seed=2)  # padded to the patch and the window, shifted windows masked
    expected = convert_grads(torch_grads(torch_model, x), hf_swin.TABLE, model)
    ours = param_grads(model, x.transpose(0, 2, 3, 1))
    assert set(ours) == set(expected)
    assert any(".attn.qkv." in path for path in ours)  # q/k/v gradients fused by the table's prepare
    for path in ours:
        assert_parity(expected[path], ours[path], rtol=GRAD_RTOL, name=path)


# --------------------------------------------------------------------------------------------------------------
# Gradient checkpointing


def test_remat_gives_identical_resnet_gradients_and_statistics():
    x = pixels((2, 33, 41, 3), seed=3)
    results = []
    for remat in (False, True):
        _, model = resnet_pair(seed=3, layout=RESNET_SHORT, gradient_checkpointing=remat)
        model.train()
        assert all(stage.gradient_checkpointing == remat for stage in model.stages)
        grads = param_grads(model, x, jit=False)
        stats = {p: np.asarray(v[...]) for p, v in flat_state(model).items() if isinstance(v, nnx.BatchStat)}
        results.append((grads, stats))
    (plain, plain_stats), (remat, remat_stats) = results
    for path in plain:
        assert_parity(plain[path], remat[path], rtol=REMAT_RTOL, name=path)
    for path in plain_stats:
        np.testing.assert_allclose(remat_stats[path], plain_stats[path], rtol=1e-6, atol=1e-7, err_msg=path)


def sum_of_squares(model, x, rngs=None):
    return sum(jnp.mean(jnp.square(f)) for f in model(x, **({} if rngs is None else {"rngs": rngs})).feature_maps)


def test_remat_gives_identical_swin_gradients_with_dropout_and_drop_path():
    """Under jit (fast); the recomputed blocks draw the same dropout and drop-path masks as the forward pass."""
    config = SwinConfig(**{**SWIN_ONE_STAGE, "drop_path_rate": 0.3, "hidden_dropout_prob": 0.1,
                           "attention_probs_dropout_prob": 0.1})
    x = jnp.asarray(pixels((2, 20, 24, 3), seed=4))
    grads = []
    for remat in (False, True):
        model = SwinBackbone(SwinConfig.from_dict(config.to_dict(), gradient_checkpointing=remat), rngs=nnx.Rngs(5))
        model.train()
        grads.append(param_grads(model, x, nnx.Rngs(dropout=7), loss=sum_of_squares))
    for path in grads[0]:
        if not np.any(grads[0][path]):  # a branch drop path dropped for the whole batch
            assert not np.any(grads[1][path]), path
        else:
            assert_parity(grads[0][path], grads[1][path], rtol=REMAT_RTOL, name=path)
    # the masks really were random: another seed gives other gradients
    other = param_grads(model, x, nnx.Rngs(dropout=8), loss=sum_of_squares)
    assert any(not np.allclose(other[p], grads[1][p]) for p in other)


@pytest.mark.parametrize("config", [ResNetConfig(**RESNET), SwinConfig(**SWIN)], ids=["resnet", "swin"])
def test_remat_reduces_saved_activations(config):
    x = jax.ShapeDtypeStruct((8, 64, 64, 3), jnp.float32)
    sizes = {}
    for remat in (False, True):
        model = nnx.eval_shape(lambda remat=remat: AutoBackbone.from_config(
            type(config).from_dict(config.to_dict(), gradient_checkpointing=remat)))
        sizes[remat] = training.saved_activation_bytes(model, x)
    assert sizes[True] < 0.6 * sizes[False], sizes


def test_gradient_checkpointing_enable_and_disable():
    model = AutoBackbone.from_config(ResNetConfig(**RESNET))
    model.gradient_checkpointing_enable()
    assert model.config.gradient_checkpointing and all(s.gradient_checkpointing for s in model.stages)
    model.gradient_checkpointing_disable()
    assert not model.config.gradient_checkpointing and not any(s.gradient_checkpointing for s in model.stages)


# --------------------------------------------------------------------------------------------------------------
# Freezing, the optimizer filter, optax steps


def snapshot(model):
    return {".".join(map(str, p)): np.array(v[...]) for p, v in nnx.to_flat_state(nnx.state(model))}


def train_steps(model, x, steps=4, lr=1e-2, rngs=None):
    """Adam steps on loss = sum of mean squares of the feature maps; returns the losses."""
    wrt = trainable_filter(model)
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=wrt)

    @nnx.jit
    def step(model, optimizer, x, rngs):
        loss, grads = nnx.value_and_grad(sum_of_squares, argnums=nnx.DiffState(0, wrt))(model, x, rngs)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, x, rngs)) for _ in range(steps)]
    return losses, optimizer


def changed(before, after, path):
    return not np.array_equal(before[path], after[path])


def test_frozen_stages_and_running_statistics_do_not_move():
    model = AutoBackbone.from_config(ResNetConfig(**RESNET, freeze_stages=2), rngs=nnx.Rngs(0))
    model.train()
    assert training.frozen_stage_names(model) == ["stem", "stage1"]
    frozen = set(training.frozen_parameter_paths(model))
    assert frozen and all(p[0] == "stem" or p[:2] == ("stages", 0) for p in frozen)
    before = snapshot(model)
    losses, optimizer = train_steps(model, jnp.asarray(pixels((4, 32, 32, 3))))
    after = snapshot(model)
    assert losses[-1] < losses[0], losses
    for path in before:
        in_frozen = path.startswith(("stem.", "stages.0."))
        if in_frozen:  # parameters and BatchNorm statistics
            assert not changed(before, after, path), path
        elif path.endswith(("kernel", "mean", "var")):
            assert changed(before, after, path), path
    # the optimizer keeps no state for frozen parameters
    moments = [p[3:] for p, _ in nnx.to_flat_state(nnx.state(optimizer)) if p[:3] == ("opt_state", 0, "mu")]
    assert moments and not any(m[0] == "stem" or m[:2] == ("stages", 0) for m in moments)
    assert len(moments) == len(nnx.to_flat_state(nnx.state(model, trainable_filter(model))))


def test_frozen_batch_norm_uses_running_statistics_and_trains_no_affine():
    model = AutoBackbone.from_config(ResNetConfig(**RESNET, freeze_batch_norm=True), rngs=nnx.Rngs(0))
    model.train()
    batch_norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, BatchNorm)]
    assert batch_norms and all(bn.frozen and not bn.use_running_average for bn in batch_norms)
    x = jnp.asarray(pixels((4, 32, 32, 3), seed=1))
    eval_copy = nnx.clone(model)
    eval_copy.eval()
    for a, b in zip(model(x).feature_maps, eval_copy(x).feature_maps):  # train mode == eval mode
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    before = snapshot(model)
    losses, _ = train_steps(model, x)
    after = snapshot(model)
    assert losses[-1] < losses[0], losses
    for path in before:
        is_bn = ".bn." in f".{path}" or ".bns." in path
        if is_bn:
            assert not changed(before, after, path), path
        else:
            assert changed(before, after, path), path


def test_swin_frozen_stages_run_deterministic_and_stay_put():
    config = SwinConfig(**{**SWIN, "drop_path_rate": 0.2, "hidden_dropout_prob": 0.1}, freeze_stages=2)
    model = AutoBackbone.from_config(config, rngs=nnx.Rngs(0))
    model.train()
    frozen_prefixes = ("patch_embed.", "hidden_states_norms.stem.", "hidden_states_norms.stage1.",
                       "stages.0.blocks.")
    for path, module in nnx.iter_modules(model):
        dotted = ".".join(map(str, path)) + "."
        if hasattr(module, "deterministic") and path:
            assert module.deterministic == dotted.startswith(frozen_prefixes + ("pos_drop.",)), dotted
    before = snapshot(model)
    losses, _ = train_steps(model, jnp.asarray(pixels((2, 24, 24, 3))), rngs=nnx.Rngs(dropout=0))
    after = snapshot(model)
    assert losses[-1] < losses[0], losses
    for path in before:
        assert changed(before, after, path) != path.startswith(frozen_prefixes), path
    assert changed(before, after, "stages.0.downsample.reduction.kernel")  # the merging feeds stage2


def test_trainable_filter_counts_and_reconfigure():
    model = AutoBackbone.from_config(ResNetConfig(**RESNET))
    total = training.count_parameters(model)
    assert training.count_parameters(model, trainable_filter(model)) == total
    training.reconfigure(model, freeze_batch_norm=True)
    bn_params = sum(2 * m.scale.size for _, m in nnx.iter_modules(model) if isinstance(m, BatchNorm))
    assert training.count_parameters(model, trainable_filter(model)) == total - bn_params
    training.reconfigure(model, freeze_batch_norm=False, freeze_stages=len(model.stage_names))
    assert training.count_parameters(model, trainable_filter(model)) == 0
    training.reconfigure(model, freeze_stages=0)
    assert not any(m.frozen for _, m in nnx.iter_modules(model) if isinstance(m, BatchNorm))
    assert hash(trainable_filter(model)) == hash(trainable_filter(model))


def test_trainable_filter_of_a_module_holding_the_backbone():
    class Classifier(nnx.Module):
        def __init__(self, backbone):
            self.backbone = backbone
            self.head = nnx.Linear(backbone.channels[-1], 3, rngs=nnx.Rngs(0))

    backbone = AutoBackbone.from_config(ResNetConfig(**RESNET, freeze_stages=1, freeze_batch_norm=True))
    model = Classifier(backbone)
    frozen = training.frozen_parameter_paths(model)
    assert frozen == [("backbone", *path) for path in training.frozen_parameter_paths(backbone)]
    assert ("backbone", "stem", "conv", "kernel") in frozen and ("backbone", "stages", 0, "blocks", 0, "bns", 0,
                                                                 "scale") in frozen
    trained = nnx.state(model, trainable_filter(model))
    assert ("head", "kernel") in dict(nnx.to_flat_state(trained))
    assert training.count_parameters(model, trainable_filter(model)) == \
        training.count_parameters(model) - sum(int(np.prod(flat_state(model)[".".join(map(str, p))].shape))
                                               for p in frozen)


def test_training_fields_in_config_json_only_when_set(tmp_path):
    assert "freeze_stages" not in ResNetConfig().to_dict()
    assert ResNetConfig().to_dict() == ResNetConfig(freeze_stages=0, gradient_checkpointing=False).to_dict()
    config = ResNetConfig(**RESNET, freeze_stages=1, freeze_batch_norm=True, gradient_checkpointing=True)
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert (written["freeze_stages"], written["freeze_batch_norm"], written["gradient_checkpointing"]) == (1, True, True)
    assert AutoConfig.from_pretrained(tmp_path) == config
    swin = SwinConfig(freeze_stages=5)
    assert swin.to_dict()["freeze_stages"] == 5 and "freeze_batch_norm" not in swin.to_dict()


@pytest.mark.parametrize("kwargs, match", [
    (dict(freeze_stages=5), r"freeze_stages must be an int in \[0, 4\]"),
    (dict(freeze_stages=-1), "freeze_stages"),
    (dict(freeze_stages=True), "freeze_stages"),
    (dict(gradient_checkpointing="yes"), "gradient_checkpointing must be True or False"),
    (dict(freeze_batch_norm=1), "freeze_batch_norm must be True or False"),
])
def test_training_fields_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNetConfig(**RESNET, **kwargs)


def test_from_pretrained_takes_training_switches(tmp_path):
    model = AutoBackbone.from_config(ResNetConfig(**RESNET))
    model.save_pretrained(tmp_path)
    loaded = AutoBackbone.from_pretrained(tmp_path, freeze_stages=1, gradient_checkpointing=True)
    assert loaded.stem.bn.frozen and loaded.stages[0].gradient_checkpointing
    loaded.train()
    assert loaded.stem.bn.frozen and not loaded.stages[0].blocks[0].bns[0].frozen


# --------------------------------------------------------------------------------------------------------------
# Mixed precision


def projection_loss(projections):
    """A generic loss: sum over feature maps of mean(map * r), r fixed and random (ours NHWC, torch's NCHW)."""
    def loss(model, x):
        return sum(jnp.mean(f.astype(jnp.float32) * r) for f, r in zip(model(x).feature_maps, projections))

    return loss


def relative_l2(reference: dict, other: dict) -> float:
    """||other - reference|| / ||reference|| over every gradient together."""
    keys = list(reference)
    return float(np.sqrt(sum(np.sum((np.float64(reference[k]) - other[k]) ** 2) for k in keys)
                         / sum(np.sum(np.float64(reference[k]) ** 2) for k in keys)))


def torch_autocast_gradient_error(torch_model, x_nchw, projections) -> float:
    """The same comparison for torch's own bf16 autocast, on the same model, input and loss."""
    x = torch.from_numpy(x_nchw)
    results = []
    for enabled in (False, True):
        torch_model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            maps = torch_model(x).feature_maps
            loss = sum((f.float() * torch.from_numpy(np.asarray(r).transpose(0, 3, 1, 2).copy())).mean()
                       for f, r in zip(maps, projections))
        loss.backward()
        results.append({n: p.grad.double().numpy().copy() for n, p in torch_model.named_parameters()
                        if p.grad is not None})
    return relative_l2(*results)


@pytest.mark.parametrize("family", ["resnet", "swin"])
def test_bfloat16_compute_stays_within_tolerance(family):
    """bf16 compute, fp32 parameters: feature maps within BF16_MAP_RTOL of fp32, gradients (global relative L2)
    within BF16_GRAD_RTOL and no worse than torch's bf16 autocast on the same model (see README)."""
    make = resnet_pair if family == "resnet" else functools.partial(swin_pair, layout=SWIN_ONE_STAGE)
    torch_model, full = make(seed=5)
    _, half = make(seed=5, dtype=jnp.bfloat16)
    for model in (full, half):
        model.eval()  # ResNet: BatchNorm on running statistics (see README, "Mixed precision")
    x = pixels((2, 32, 40, 3), seed=5)
    forward = nnx.jit(lambda model, x: model(x).feature_maps)
    maps32, maps16 = forward(full, x), forward(half, x)
    for a, b in zip(maps32, maps16):
        assert b.dtype == jnp.bfloat16
        error = float(jnp.abs(a - b.astype(jnp.float32)).max() / jnp.abs(a).max())
        assert error < BF16_MAP_RTOL, error
    projections = [jnp.asarray(pixels(m.shape, seed=i)) for i, m in enumerate(maps32)]
    loss = projection_loss(projections)
    g32, g16 = param_grads(full, x, loss=loss), param_grads(half, x, loss=loss)
    assert all(g.dtype == np.float32 for g in g16.values())  # parameters, hence gradients, stay float32
    error = relative_l2(g32, g16)
    assert error < BF16_GRAD_RTOL[family], error
    assert error < 1.5 * torch_autocast_gradient_error(torch_model, x.transpose(0, 3, 1, 2).copy(), projections)


# --------------------------------------------------------------------------------------------------------------
# load_backbone and the FPN neck


def test_load_backbone_from_head_configs():
    head = transformers.MaskFormerConfig(backbone_config=transformers.SwinConfig(
        embed_dim=16, depths=[1, 1], num_heads=[1, 2], out_features=["stage1", "stage2"]))
    model = load_backbone(head, rngs=nnx.Rngs(0))
    assert isinstance(model, SwinBackbone) and model.out_features == ["stage1", "stage2"] and model.channels == [16, 32]

    as_dict = {"backbone_config": {"model_type": "resnet", **RESNET}, "num_labels": 3}
    model = load_backbone(as_dict)
    assert isinstance(model, ResNetBackbone) and model.channels == [8, 16, 24, 32]
    assert load_backbone(ResNetConfig(**RESNET)).channels == [8, 16, 24, 32]
    with pytest.raises(ValueError, match="both `backbone` and `backbone_config`"):
        load_backbone({"backbone": "microsoft/resnet-50", "backbone_config": ResNetConfig()})
    with pytest.raises(ValueError, match="model_type 'vit'"):
        load_backbone({"backbone_config": {"model_type": "vit"}})


def test_load_backbone_pretrained_by_name(tmp_path):
    source = AutoBackbone.from_config(ResNetConfig(**RESNET), rngs=nnx.Rngs(3))
    source.save_pretrained(tmp_path)
    head = {"backbone": str(tmp_path), "use_pretrained_backbone": True, "backbone_kwargs": {"out_indices": [2, 3]}}
    model = load_backbone(head)
    assert model.out_features == ["stage2", "stage3"]
    np.testing.assert_array_equal(np.asarray(model.stem.conv.kernel[...]), np.asarray(source.stem.conv.kernel[...]))
    random = load_backbone({**head, "use_pretrained_backbone": False})
    assert random.out_features == ["stage2", "stage3"]


@pytest.mark.parametrize("size", [(64, 64), (45, 61)])
def test_fpn_matches_torchvision(size):
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    backbone = AutoBackbone.from_config(ResNetConfig(**{**RESNET, "out_indices": [1, 2, 3]}), rngs=nnx.Rngs(0))
    backbone.eval()
    fpn = FPN(backbone.channels, 12, extra_pool=True, rngs=nnx.Rngs(1))
    reference = FeaturePyramidNetwork(backbone.channels, 12, extra_blocks=LastLevelMaxPool()).eval()
    randomize_torch_module(reference, seed=6)
    weights = {}
    for key, value in state_dict_numpy(reference).items():
        kind, index, _, name = key.split(".")
        target = f"{'laterals' if kind == 'inner_blocks' else 'outputs'}.{index}.{name.replace('weight', 'kernel')}"
        weights[target] = CONV_KERNEL.to_flax(value) if name == "weight" else value
    nnx.update(fpn, nnx.from_flat_state([(tuple(int(k) if k.isdigit() else k for k in path.split(".")),
                                          jnp.asarray(v)) for path, v in weights.items()]))

    maps = backbone(jnp.asarray(pixels((2, *size, 3), seed=7))).feature_maps
    pyramid = fpn(backbone(jnp.asarray(pixels((2, *size, 3), seed=7))))  # a BackboneOutput works too
    with torch.no_grad():
        expected = reference({str(i): torch.from_numpy(np.asarray(m).transpose(0, 3, 1, 2).copy())
                              for i, m in enumerate(maps)})
    assert len(pyramid) == 4 and all(p.shape[-1] == 12 for p in pyramid)
    for ours, theirs in zip(pyramid, expected.values()):
        assert_parity(theirs.numpy(), np.asarray(ours).transpose(0, 3, 1, 2), name="fpn level")
    with pytest.raises(ValueError, match="FPN was built for maps with channels"):
        fpn(maps[:2])
