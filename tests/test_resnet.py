"""ResNetBackbone against transformers' ResNetBackbone, with every parameter and buffer randomized."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from helpers import assert_parity, randomize_torch_module, state_dict_numpy

from jaxbackbones import AutoBackbone, BackboneOutput, ResNetBackbone, ResNetConfig
from jaxbackbones.checkpoint import flat_state, load_converted
from jaxbackbones.convert import hf_resnet
from jaxbackbones.convert.rules import convert_state_dict

SMALL = dict(embedding_size=8, hidden_sizes=[16, 24, 32], depths=[1, 2, 1])
CONFIGS = {
    "resnet50": dict(),
    "resnet18": dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2]),
    "small-bottleneck": dict(SMALL, downsample_in_bottleneck=True),
    "small-first-stage-stride": dict(SMALL, downsample_in_first_stage=True, hidden_act="gelu"),
    "small-basic-silu": dict(SMALL, layer_type="basic", hidden_act="silu"),
    "small-two-channel": dict(SMALL, num_channels=2, layer_type="basic", hidden_act="leaky_relu"),
}


def torch_backbone(name, seed=0, **selection):
    config = transformers.ResNetConfig(**CONFIGS[name], **selection)
    return randomize_torch_module(transformers.ResNetBackbone(config).eval(), seed)


def ours_from_torch(torch_model, **kwargs):
    config = ResNetConfig.from_dict(torch_model.config.to_dict())
    model, report = load_converted(lambda: ResNetBackbone(config, rngs=nnx.Rngs(0), **kwargs),
                                   state_dict_numpy(torch_model), hf_resnet.TABLE)
    assert report.ok and not report.initialized
    model.eval()
    return model


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run_torch(model, pixels_nchw):
    with torch.no_grad():
        return model(torch.from_numpy(pixels_nchw), output_hidden_states=True)


def assert_maps_match(reference_maps, our_maps, channels_first=False):
    assert len(reference_maps) == len(our_maps)
    for index, (reference, ours) in enumerate(zip(reference_maps, our_maps)):
        ours = np.asarray(ours)
        if not channels_first:
            ours = ours.transpose(0, 3, 1, 2)
        assert_parity(reference.numpy(), ours, name=f"map {index}")


@pytest.mark.parametrize(
    "name, size, out_indices",
    [
        ("resnet50", (224, 224), [0, 1, 2, 3, 4]),
        ("resnet18", (224, 161), [0, 1, 2, 3, 4]),
        ("small-bottleneck", (37, 53), [1, -1]),
        ("small-first-stage-stride", (64, 33), [0, 2, 3]),
        ("small-basic-silu", (31, 31), [-3, -2, -1]),
        ("small-two-channel", (17, 40), [0, 1]),
    ],
)
def test_parity_with_transformers(name, size, out_indices):
    torch_model = torch_backbone(name, out_indices=out_indices)
    pixels = random_pixels((2, torch_model.config.num_channels, *size))
    reference = run_torch(torch_model, pixels)

    model = ours_from_torch(torch_model)
    outputs = model(jnp.asarray(pixels.transpose(0, 2, 3, 1)), output_hidden_states=True)
    assert_maps_match(reference.feature_maps, outputs.feature_maps)
    assert_maps_match(reference.hidden_states, outputs.hidden_states)
    assert model.channels == torch_model.channels
    assert [m.shape[-1] for m in outputs.feature_maps] == model.channels


def test_channels_first_takes_and_returns_nchw():
    torch_model = torch_backbone("small-bottleneck", out_features=["stem", "stage3"])
    pixels = random_pixels((2, 3, 45, 38))
    reference = run_torch(torch_model, pixels)
    model = ours_from_torch(torch_model, data_format="channels_first")
    outputs = model(jnp.asarray(pixels), output_hidden_states=True)
    assert_maps_match(reference.feature_maps, outputs.feature_maps, channels_first=True)
    assert_maps_match(reference.hidden_states, outputs.hidden_states, channels_first=True)


def test_train_mode_matches_torch_outputs_and_running_statistics():
    torch_model = torch_backbone("small-bottleneck", out_indices=[0, 1, 2, 3])
    model = ours_from_torch(torch_model)
    pixels = random_pixels((4, 3, 40, 36), seed=3)

    torch_model.train()
    reference = run_torch(torch_model, pixels)
    model.train()
    outputs = model(jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    assert_maps_match(reference.feature_maps, outputs.feature_maps)

    updated, report = convert_state_dict(state_dict_numpy(torch_model), hf_resnet.TABLE,
                                         {path: v.shape for path, v in flat_state(model).items()})
    assert report.ok
    statistics = {path: v for path, v in flat_state(model).items() if isinstance(v, nnx.BatchStat)}
    assert len(statistics) == 2 * sum(1 for key in torch_model.state_dict() if key.endswith("running_mean"))
    for path, variable in statistics.items():
        assert_parity(updated[path], np.asarray(variable[...]), name=path)


def test_jit_matches_eager_and_gradients_are_finite():
    torch_model = torch_backbone("small-first-stage-stride", out_indices=[0, 1, 2, 3])
    model = ours_from_torch(torch_model)
    pixels = jnp.asarray(random_pixels((2, 29, 43, 3)))

    eager = model(pixels)
    jitted = nnx.jit(lambda m, x: m(x))(model, pixels)
    for a, b in zip(eager.feature_maps, jitted.feature_maps):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * float(jnp.abs(a).max()))

    def loss(m):
        return sum(jnp.mean(f) for f in m(pixels).feature_maps)

    grads = nnx.grad(loss)(model)
    leaves = jax.tree_util.tree_leaves(grads)
    assert leaves and all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_output_is_a_pytree_with_hf_attributes():
    model = AutoBackbone.from_config(ResNetConfig(**SMALL, out_features=["stem", "stage2"]))
    model.eval()
    outputs = model(jnp.zeros((1, 32, 32, 3)))
    assert isinstance(outputs, BackboneOutput)
    assert outputs["feature_maps"] is outputs.feature_maps and outputs.hidden_states is None
    assert len(jax.tree_util.tree_leaves(outputs)) == 2
    assert model.stage_names == ["stem", "stage1", "stage2", "stage3"]
    assert model.out_indices == [0, 2] and model.channels == [8, 24] and model.num_features == (8, 16, 24, 32)
    assert model.out_feature_channels == {"stem": 8, "stage1": 16, "stage2": 24, "stage3": 32}
    model.out_indices = [-1]
    assert model.out_features == ["stage3"]
    assert model(jnp.zeros((1, 32, 32, 3))).feature_maps[0].shape == (1, 2, 2, 32)


@pytest.mark.parametrize(
    "shape, data_format, message",
    [
        ((1, 32, 32, 4), "channels_last", "has 4 channels but the config expects num_channels=3"),
        ((1, 3, 32, 32), "channels_last", "has 32 channels but the config expects num_channels=3"),
        ((1, 32, 32, 3), "channels_first", "has 32 channels but the config expects num_channels=3"),
        ((32, 32, 3), "channels_last", "must have 4 dimensions"),
    ],
)
def test_bad_pixel_values(shape, data_format, message):
    model = AutoBackbone.from_config(ResNetConfig(**SMALL), data_format=data_format)
    with pytest.raises(ValueError, match=message):
        model(jnp.zeros(shape))


def test_bad_data_format():
    with pytest.raises(ValueError, match="data_format must be one of"):
        AutoBackbone.from_config(ResNetConfig(**SMALL), data_format="NHWC")


def test_bfloat16_compute_is_close_to_float32():
    torch_model = torch_backbone("small-bottleneck", out_indices=[1, 2, 3])
    pixels = jnp.asarray(random_pixels((2, 40, 40, 3)))
    full = ours_from_torch(torch_model)(pixels).feature_maps
    half = ours_from_torch(torch_model, dtype=jnp.bfloat16)(pixels).feature_maps
    for a, b in zip(full, half):
        assert b.dtype == jnp.bfloat16
        error = float(jnp.abs(a - b.astype(jnp.float32)).max() / jnp.abs(a).max())
        assert error < 5e-2, error
