"""RT-DETR's ResNet-vd (`rt_detr_resnet`) against transformers' RTDetrResNetBackbone, every parameter and buffer
randomized, through the hub cache; export back to transformers bit-exact; frozen BatchNorm as RT-DETR trains it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx
from helpers import assert_parity, check_maps, randomize_torch_module, state_dict_numpy, write_to_hub_cache
from transformers.models.rt_detr.modeling_rt_detr import replace_batch_norm

from jaxbackbones import AutoBackbone, AutoConfig, ResNetBackbone
from jaxbackbones.auto import export_pretrained
from jaxbackbones.checkpoint import flat_state
from jaxbackbones.convert import hf_rt_detr_resnet
from jaxbackbones.convert.rules import CheckpointMismatchError
from jaxbackbones.layers import BatchNorm
from jaxbackbones.models.resnet import RTDetrResNetConfig
from jaxbackbones.training import trainable_filter

forward_all = nnx.jit(lambda model, x: model(x, output_hidden_states=True))
ALL = [0, 1, 2, 3, 4]


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_backbone(seed=0, **config):
    model = transformers.RTDetrResNetBackbone(transformers.RTDetrResNetConfig(**config))
    return randomize_torch_module(model.eval(), seed)


def to_hub(torch_model, tmp_path, repo):
    torch_model.save_pretrained(tmp_path / repo.replace("/", "--"))
    write_to_hub_cache(tmp_path / repo.replace("/", "--"), repo)
    return repo


def torch_maps(torch_model, pixels):
    with torch.no_grad():
        return torch_model(torch.from_numpy(pixels), output_hidden_states=True)


@pytest.fixture(scope="module")
def r50vd(tmp_path_factory, hub_cache):
    """Full-size R50-vd (transformers' RTDetrResNetConfig defaults), randomized, in the hub cache."""
    torch_model = torch_backbone(seed=1, out_indices=[2, 3, 4])
    return torch_model, to_hub(torch_model, tmp_path_factory.mktemp("rt_detr"), "test-org/rtdetr-r50vd")


def test_r50vd_parity(r50vd):
    torch_model, repo = r50vd
    model = AutoBackbone.from_pretrained(repo)
    assert isinstance(model, ResNetBackbone) and isinstance(model.config, RTDetrResNetConfig)
    assert model.out_features == ["stage2", "stage3", "stage4"] and model.channels == torch_model.channels
    pixels = random_pixels((1, 3, 161, 199), seed=2)
    reference = torch_maps(torch_model, pixels)
    outputs = forward_all(model, jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    errors = check_maps(reference.hidden_states, outputs.hidden_states, model.stage_names)
    errors += check_maps(reference.feature_maps, outputs.feature_maps, model.out_features)
    print(f"\nR50-vd 161x199: worst relative error {max(errors):.2e}")


def test_r50vd_export_round_trip_is_bit_exact(r50vd, tmp_path):
    torch_model, repo = r50vd
    AutoBackbone.from_pretrained(repo).save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    exported = safetensors.numpy.load_file(tmp_path / "torch" / "model.safetensors")
    original = state_dict_numpy(torch_model)
    assert exported.keys() == original.keys()
    for key, value in original.items():
        assert value.dtype == exported[key].dtype and np.array_equal(value, exported[key]), key
    written = json.loads((tmp_path / "torch" / "config.json").read_text())
    assert written["architectures"] == ["RTDetrResNetBackbone"] and written["model_type"] == "rt_detr_resnet"
    reloaded = transformers.RTDetrResNetBackbone.from_pretrained(tmp_path / "torch")  # strict: every key fits
    assert all(torch.equal(tensor, torch_model.state_dict()[key]) for key, tensor in reloaded.state_dict().items())


SMALL = dict(embedding_size=8, hidden_sizes=[16, 24, 32], depths=[1, 2, 1])
BASIC = dict(layer_type="basic", embedding_size=8, hidden_sizes=[8, 16, 24], depths=[2, 1, 2])
CONFIGS = {
    "bottleneck": dict(SMALL),
    "bottleneck-downsample-in-bottleneck": dict(SMALL, downsample_in_bottleneck=True),
    "bottleneck-first-stage-stride": dict(SMALL, downsample_in_first_stage=True, hidden_act="gelu"),
    "basic": dict(BASIC),  # stage1: same width at stride 1, a 1x1 projection all the same
    "basic-first-stage-stride": dict(BASIC, downsample_in_first_stage=True),  # same width, strided projection
    "basic-first-stage-widens": dict(BASIC, hidden_sizes=[12, 16, 16], downsample_in_first_stage=True,
                                     hidden_act="silu"),  # pooled stage1; stage3 keeps its width at stride 2
    "two-channels": dict(SMALL, num_channels=2, downsample_in_bottleneck=True),
}


@pytest.mark.parametrize("name, size, out_indices", [
    ("bottleneck", (53, 71), [0, 1, 2, 3]),
    ("bottleneck-downsample-in-bottleneck", (45, 38), [-1]),
    ("bottleneck-first-stage-stride", (67, 45), [1, 3]),
    ("basic", (53, 71), [0, 1, 2, 3]),
    ("basic-first-stage-stride", (41, 57), [0, -2, -1]),
    ("basic-first-stage-widens", (71, 53), [1, 2, 3]),
    ("two-channels", (37, 50), [2]),
])
def test_small_configs_parity(tmp_path, name, size, out_indices):
    torch_model = torch_backbone(seed=3, out_indices=out_indices, **CONFIGS[name])
    repo = to_hub(torch_model, tmp_path, f"test-org/rtdetr-{name}")
    model = AutoBackbone.from_pretrained(repo)
    assert model.out_indices == out_indices and model.out_features == torch_model.out_features
    pixels = random_pixels((2, torch_model.config.num_channels, *size), seed=4)
    reference = torch_maps(torch_model, pixels)
    outputs = forward_all(model, jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    errors = check_maps(reference.hidden_states, outputs.hidden_states, model.stage_names)
    errors += check_maps(reference.feature_maps, outputs.feature_maps, model.out_features)
    print(f"\n{name} {size}: worst relative error {max(errors):.2e}")
    pooled = hf_rt_detr_resnet.pooled_stages(model.config)
    assert pooled == tuple(i for i, stage in enumerate(torch_model.encoder.stages)
                           if isinstance(stage.layers[0].shortcut, torch.nn.Sequential))


def test_out_features_and_channels_first(tmp_path):
    torch_model = torch_backbone(seed=5, out_features=["stem", "stage2"], **CONFIGS["basic"])
    repo = to_hub(torch_model, tmp_path, "test-org/rtdetr-selection")
    model = AutoBackbone.from_pretrained(repo, out_indices=[-1, 0][::-1], data_format="channels_first")
    assert model.out_features == ["stem", "stage3"]
    pixels = random_pixels((1, 3, 33, 47), seed=6)
    reference = torch_maps(torch_model, pixels).hidden_states
    outputs = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(pixels))
    for ours, theirs in zip(outputs.feature_maps, (reference[0], reference[3])):
        assert_parity(theirs.numpy(), ours)


def test_config_json_is_transformers():
    for kwargs in ({}, CONFIGS["basic-first-stage-widens"], dict(SMALL, out_indices=[2, 3])):
        theirs = transformers.RTDetrResNetConfig(**kwargs)
        ours = RTDetrResNetConfig(**kwargs)
        theirs_dict = theirs.to_dict()
        for key in (*RTDetrResNetConfig.defaults, "model_type", "out_features", "out_indices", "stage_names"):
            assert ours.to_dict()[key] == theirs_dict[key], key
        reread = RTDetrResNetConfig.from_dict(json.loads(theirs.to_json_string()))  # extra keys kept, fields equal
        assert {key: value for key, value in reread.to_dict().items() if key in ours.to_dict()} == ours.to_dict()
    assert AutoConfig.for_model("rt_detr_resnet").deep_stem_widths == (32, 32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(layer_type="basic", embedding_size=8, hidden_sizes=[16], depths=[1]),
     r"stage1 of a basic RT-DETR ResNet changes channels \(8 -> 16\) at stride 1"),
    (dict(layer_type="preactivation"), "layer_type=preactivation is not one of basic,bottleneck"),
    (dict(hidden_sizes=[8, 16], depths=[1]), "must have one entry per stage"),
    (dict(out_indices=[7]), "out_indices"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RTDetrResNetConfig(**kwargs)


def test_a_transformers_resnet_checkpoint_is_not_an_rt_detr_one(tmp_path):
    """Same config fields, other tensors (7x7 stem): loading one as the other fails, naming the keys."""
    resnet = randomize_torch_module(transformers.ResNetBackbone(transformers.ResNetConfig(**SMALL)).eval())
    resnet.save_pretrained(tmp_path / "resnet")
    config = json.loads((tmp_path / "resnet" / "config.json").read_text())
    (tmp_path / "resnet" / "config.json").write_text(json.dumps({**config, "model_type": "rt_detr_resnet"}))
    with pytest.raises(CheckpointMismatchError, match="embedder.embedder.convolution.weight"):
        AutoBackbone.from_pretrained(tmp_path / "resnet")


# ---------------------------------------------------------------------------------------------------------------
# Frozen BatchNorm: RT-DETR fine-tunes its backbone with RTDetrFrozenBatchNorm2d (`freeze_backbone_batch_norms`)


def test_frozen_batch_norm_in_train_mode_is_rt_detr_s(tmp_path):
    """`freeze_batch_norm=True`: train mode normalises with the running statistics (transformers' RT-DETR replaces
    the backbone's BatchNorms by RTDetrFrozenBatchNorm2d), never updates them, and the scale and bias are left out
    of `trainable_filter`, so they get no gradient, while the convolutions do."""
    torch_model = torch_backbone(seed=7, out_indices=[1, 2, 3], **CONFIGS["bottleneck-first-stage-stride"])
    repo = to_hub(torch_model, tmp_path, "test-org/rtdetr-frozen")
    replace_batch_norm(torch_model)
    torch_model.train()
    pixels = random_pixels((3, 3, 39, 52), seed=8)
    reference = torch_maps(torch_model, pixels)

    model = AutoBackbone.from_pretrained(repo, freeze_batch_norm=True)
    model.train()
    statistics = {path: np.asarray(v[...]) for path, v in flat_state(model).items() if isinstance(v, nnx.BatchStat)}
    outputs = model(jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    check_maps(reference.feature_maps, outputs.feature_maps, model.out_features)
    after = {path: np.asarray(v[...]) for path, v in flat_state(model).items() if isinstance(v, nnx.BatchStat)}
    assert statistics.keys() == after.keys() and all(np.array_equal(statistics[p], after[p]) for p in after)

    norms = [module for _, module in nnx.iter_modules(model) if isinstance(module, BatchNorm)]
    assert norms and all(module.frozen for module in norms)
    wrt = trainable_filter(model)

    def loss(model):
        return sum(jnp.mean(jnp.square(m)) for m in model(jnp.asarray(pixels.transpose(0, 2, 3, 1))).feature_maps)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, wrt))(model)
    paths = [".".join(map(str, path)) for path, _ in nnx.to_flat_state(grads)]
    assert paths and all(path.endswith("kernel") for path in paths), [p for p in paths if not p.endswith("kernel")]
    assert all(float(jnp.abs(g[...]).max()) > 0 for _, g in nnx.to_flat_state(grads))
    every = nnx.grad(loss)(model)  # without the filter too, the frozen affine parameters get no gradient
    for path, grad in nnx.to_flat_state(every):
        assert (float(jnp.abs(grad[...]).max()) == 0) == (path[-1] in ("scale", "bias")), path

    model = AutoBackbone.from_pretrained(repo)  # unfrozen, train mode: batch statistics, as torch's BatchNorm2d
    model.train()
    unfrozen = model(jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    assert float(jnp.abs(unfrozen.feature_maps[-1] - outputs.feature_maps[-1]).max()) > 1e-2
    assert any(path.endswith(("scale", "bias")) for path, _ in
               ((".".join(map(str, p)), v) for p, v in nnx.to_flat_state(nnx.state(model, trainable_filter(model)))))
    assert jax.tree.leaves(grads)
