"""HGNetV2 against transformers' HGNetV2Backbone and timm's HGNet / HGNetV2 (`features_only`), every parameter and
buffer randomized (the learnable affine scales and biases too), through the hub-cache loading path; export round trips,
errors, and two SGD steps in train mode against torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import timm
import torch
import transformers
from flax import nnx
from timm.models._hub import save_for_hf
from helpers import assert_parity, check_maps, nhwc, randomize_torch_module, state_dict_numpy, write_to_hub_cache
from jaxbackbones.convert import hf_hgnet_v2
from jaxbackbones.convert.rules import convert_state_dict

from jaxbackbones import (
    AutoBackbone,
    CheckpointMismatchError,
    HGNetV2Backbone,
    HGNetV2Config,
    TimmBackbone,
)
from jaxbackbones.auto import export_pretrained
from jaxbackbones.checkpoint import flat_state, load_converted

ALL_STAGES = [0, 1, 2, 3, 4]
# Small layouts, every option away from B4's: learnable affine blocks, light and plain blocks, residual blocks
# (a stage's second block on), a stage without downsampling, a stride-1 stage downsampling, another activation,
# one input channel, a non-default stem stride.
SMALL = dict(depths=[1, 1, 1], hidden_sizes=[16, 24, 32], stem_channels=[3, 8, 12], stage_in_channels=[12, 16, 24],
             stage_mid_channels=[8, 8, 12], stage_out_channels=[16, 24, 32], stage_num_blocks=[2, 1, 2],
             stage_downsample=[False, True, True], stage_downsample_strides=[2, 2, 1],
             stage_light_block=[False, True, True], stage_kernel_size=[3, 5, 3], stage_numb_of_layers=[2, 1, 2])
OPTIONS = {
    "lab": dict(SMALL, use_learnable_affine_block=True),
    "no-lab-gelu": dict(SMALL, hidden_act="gelu"),
    "one-channel-stem-stride": dict(SMALL, num_channels=1, stem_channels=[1, 8, 12], stem_strides=[2, 1, 1, 1, 1],
                                    use_learnable_affine_block=True),
}


def torch_hgnet(kwargs, cls=transformers.HGNetV2Backbone, seed=0):
    return randomize_torch_module(cls(transformers.HGNetV2Config(**kwargs)).eval(), seed)


def pixels(batch, height, width, channels=3, seed=0):
    return np.random.RandomState(seed).randn(batch, channels, height, width).astype(np.float32)


def hub(torch_model, tmp_path, repo_id):
    torch_model.save_pretrained(tmp_path / repo_id)
    write_to_hub_cache(tmp_path / repo_id, repo_id)
    return repo_id


def maps_differ(maps_a, maps_b):
    """The two inputs' maps are not the same (a dead network, e.g. a scale drawn at 0, would pass parity trivially)."""
    for a, b in zip(maps_a, maps_b):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()


forward_all = nnx.jit(lambda model, x: model(x, output_hidden_states=True))


@pytest.fixture(scope="module")
def b4(tmp_path_factory, hub_cache):
    """HGNetV2-B4 (the default config, learnable affine blocks on so that they are tested at full size), randomized,
    saved by HGNetV2ForImageClassification.save_pretrained and loaded by repo id."""
    kwargs = dict(use_learnable_affine_block=True)
    classifier = torch_hgnet(kwargs, transformers.HGNetV2ForImageClassification)
    repo = hub(classifier, tmp_path_factory.mktemp("b4"), "test-org/hgnet-v2-b4")
    torch_model = transformers.HGNetV2Backbone(transformers.HGNetV2Config(**kwargs, out_indices=ALL_STAGES)).eval()
    missing, unexpected = torch_model.load_state_dict(classifier.state_dict(), strict=False)
    assert not missing and unexpected == ["fc.weight", "fc.bias"]
    model, report = AutoBackbone.from_pretrained(repo, out_indices=ALL_STAGES, output_loading_info=True)
    assert isinstance(model, HGNetV2Backbone) and report.ok and not report.initialized
    assert sorted(report.ignored) == sorted(["fc.bias", "fc.weight"] + [
        key for key in classifier.state_dict() if key.endswith("num_batches_tracked")])
    model.eval()
    return torch_model, model, repo


@pytest.mark.parametrize("size", [(224, 224), (67, 45)])
def test_b4_parity_through_the_hub(b4, size):
    torch_model, model, _ = b4
    x = pixels(1, *size, seed=size[0])
    with torch.no_grad():
        reference = torch_model(torch.from_numpy(x), output_hidden_states=True)
    ours = forward_all(model, jnp.asarray(nhwc(x)))
    check_maps(reference.feature_maps, ours.feature_maps, model.out_features)
    check_maps(reference.hidden_states, ours.hidden_states, model.stage_names, "hidden state")
    # real channels (transformers' `channels` reads hidden_sizes, see the module docstring)
    assert [m.shape[-1] for m in ours.feature_maps] == model.channels == [48, 128, 512, 1024, 2048]
    assert model.reductions == (4, 4, 8, 16, 32)


def test_b4_maps_depend_on_the_input(b4):
    _, model, _ = b4
    first, second = (forward_all(model, jnp.asarray(nhwc(pixels(1, 64, 64, seed=s)))).feature_maps for s in (1, 2))
    maps_differ(first, second)


def test_b4_export_round_trip_is_bit_exact(b4, tmp_path):
    torch_model, model, repo = b4
    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "export")
    reloaded = transformers.HGNetV2Backbone.from_pretrained(tmp_path / "export").eval()
    exported = state_dict_numpy(reloaded)
    for key, value in state_dict_numpy(torch_model).items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(exported[key], value, err_msg=key)


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_small_configs_match_transformers(name, data_format, tmp_path, hub_cache):
    kwargs = dict(OPTIONS[name], out_indices=[0, 1, 2, 3])
    torch_model = torch_hgnet(kwargs, seed=len(name))
    repo = hub(torch_model, tmp_path, f"test-org/hgnet-{name}")
    model = AutoBackbone.from_pretrained(repo, data_format=data_format)
    model.eval()
    x = pixels(2, 41, 58, channels=kwargs.get("num_channels", 3), seed=3)
    with torch.no_grad():
        reference = torch_model(torch.from_numpy(x), output_hidden_states=True)
    ours = forward_all(model, jnp.asarray(x if data_format == "channels_first" else nhwc(x)))
    for r, o, stage in zip(reference.hidden_states, ours.hidden_states, model.stage_names):
        o = np.asarray(o) if data_format == "channels_first" else np.asarray(o).transpose(0, 3, 1, 2)
        assert_parity(r.numpy(), o, name=stage)
    assert len(ours.feature_maps) == 4


# timm: B0 (learnable affine blocks, the v2 stem) and HGNet-tiny (v1 stem, ESE aggregation), full size.
@pytest.fixture(scope="module", params=["hgnetv2_b0", "hgnet_tiny"])
def timm_pair(request, tmp_path_factory, hub_cache):
    name = request.param
    source = randomize_torch_module(timm.create_model(name).eval(), seed=5)
    folder = tmp_path_factory.mktemp(name)
    save_for_hf(source, folder, safe_serialization=True)
    repo = f"test-org/timm-{name}"
    write_to_hub_cache(folder, repo)
    reference = timm.create_model(name, features_only=True, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors"))).eval()
    model, report = AutoBackbone.from_pretrained(repo, out_indices=[0, 1, 2, 3], output_loading_info=True)
    assert isinstance(model, TimmBackbone) and report.ok
    assert all(key.startswith("head.") or key.endswith("num_batches_tracked") for key in report.ignored)
    model.eval()
    return name, source, reference, model


@pytest.mark.parametrize("size", [(224, 224), (53, 71)])
def test_timm_parity(timm_pair, size):
    name, _, reference, model = timm_pair
    x = pixels(1, *size, seed=7)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x))
    check_maps(expected, model(jnp.asarray(nhwc(x))).feature_maps, model.out_features)
    assert model.channels == reference.feature_info.channels()
    assert list(model.reductions) == reference.feature_info.reduction()


def test_timm_export_round_trip_is_bit_exact(timm_pair, tmp_path):
    name, source, _, model = timm_pair
    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "export")
    reloaded = timm.create_model(name, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "export" / "model.safetensors")))
    exported = state_dict_numpy(reloaded)
    assert sorted(exported) == sorted(source.state_dict())
    for key, value in state_dict_numpy(source).items():
        if not (key.startswith("head.") or key.endswith("num_batches_tracked")):
            np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_errors():
    with pytest.raises(ValueError, match="one entry per stage"):
        HGNetV2Config(stage_in_channels=[48, 128, 512])
    with pytest.raises(ValueError, match=r"stem_channels\[0\]=3 must equal num_channels=1"):
        HGNetV2Config(num_channels=1)
    with pytest.raises(ValueError, match="out_indices"):
        HGNetV2Config(**SMALL, out_indices=[7])
    model = HGNetV2Backbone(HGNetV2Config(**SMALL), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="has 1 channels but the config expects num_channels=3"):
        model(jnp.zeros((1, 32, 32, 1)))
    torch_model = torch_hgnet(SMALL)
    state = state_dict_numpy(torch_model)
    config = HGNetV2Config(**SMALL)
    broken = dict(state, **{"encoder.stages.0.blocks.0.layers.0.convolution.weight": np.zeros((8, 12, 5, 5))})
    del broken["embedder.stem4.normalization.bias"]
    broken["encoder.stages.9.extra.weight"] = np.zeros(3)
    with pytest.raises(CheckpointMismatchError) as error:
        load_converted(lambda: HGNetV2Backbone(config, rngs=nnx.Rngs(0)), broken, hf_hgnet_v2.TABLE)
    message = str(error.value)
    assert "stages.0.blocks.0.layers.0.conv.kernel" in message and "encoder.stages.9.extra.weight" in message
    assert "stem.stem4.bn.bias" in message


def test_two_sgd_steps_in_train_mode_match_torch():
    """Train mode (BatchNorm batch statistics), learnable affine blocks on: the losses of two SGD steps, the updated
    parameters and the running statistics equal torch's."""
    kwargs = dict(OPTIONS["lab"], out_indices=[1, 2, 3])
    torch_model = torch_hgnet(kwargs, seed=11).train()
    config = HGNetV2Config(**kwargs)
    model, _ = load_converted(lambda: HGNetV2Backbone(config, rngs=nnx.Rngs(0)), state_dict_numpy(torch_model),
                              hf_hgnet_v2.TABLE)
    model.train()
    x = pixels(4, 35, 43, seed=12)
    learning_rate = 0.05

    optimizer = torch.optim.SGD(torch_model.parameters(), lr=learning_rate)
    torch_losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = sum((f ** 2).mean() for f in torch_model(torch.from_numpy(x)).feature_maps)
        loss.backward()
        optimizer.step()
        torch_losses.append(float(loss.detach()))

    ours = nnx.Optimizer(model, optax.sgd(learning_rate), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x):
        def loss_fn(model):
            return sum(jnp.mean(jnp.square(f)) for f in model(x).feature_maps)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    our_losses = [float(step(model, ours, jnp.asarray(nhwc(x)))) for _ in range(2)]
    np.testing.assert_allclose(our_losses, torch_losses, rtol=1e-5)
    assert our_losses[1] < our_losses[0]
    expected, report = convert_state_dict(state_dict_numpy(torch_model), hf_hgnet_v2.TABLE,
                                          {p: v.shape for p, v in flat_state(model).items()})
    assert report.ok
    for path, value in flat_state(model).items():
        assert_parity(expected[path], np.asarray(value[...]), rtol=1e-4, name=path)


def test_frozen_batch_norm_keeps_statistics_in_train_mode():
    """`freeze_batch_norm=True` (D-FINE's `freeze_backbone_batch_norms`): train mode computes the eval-mode maps."""
    torch_model = torch_hgnet(dict(SMALL, out_indices=[1, 2, 3]), seed=4)
    config = HGNetV2Config(**SMALL, out_indices=[1, 2, 3], freeze_batch_norm=True)
    model, _ = load_converted(lambda: HGNetV2Backbone(config, rngs=nnx.Rngs(0)), state_dict_numpy(torch_model),
                              hf_hgnet_v2.TABLE)
    model.train()
    x = pixels(2, 33, 30, seed=5)
    with torch.no_grad():
        reference = torch_model.eval()(torch.from_numpy(x)).feature_maps
    check_maps(reference, model(jnp.asarray(nhwc(x))).feature_maps, model.out_features)
