"""TimmBackbone against timm's own features_only models, through timm's hub layout, with every tensor randomized."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
import transformers
from flax import nnx
from helpers import assert_parity, randomize_torch_module, run_cli, write_to_hub_cache
from timm.models._hub import save_for_hf

from jaxbackbones import AutoBackbone, AutoConfig, AutoImageProcessor, TimmBackbone, TimmBackboneConfig
from jaxbackbones.auto import FAMILIES, export_pretrained
from jaxbackbones.checkpoint import flat_state
from jaxbackbones.convert.rules import CheckpointMismatchError, convert_state_dict, export_state_dict
from jaxbackbones.initializers import abstract_module
from jaxbackbones.layers import BatchNorm
from jaxbackbones.models.timm import TIMM_ARCHITECTURES, EvaSpec, SwinSpec, ViTSpec
from jaxbackbones.training import trainable_filter

forward_all = nnx.jit(lambda model, x: model(x, output_hidden_states=True))


class Checkpoint:
    """A randomized timm model saved with timm's `save_for_hf` into the offline hub cache."""

    def __init__(self, root: Path, name: str, repo: str, safe: bool, seed: int, model_args: dict):
        model = randomize_torch_module(timm.create_model(name, **model_args).eval(), seed)
        self.name, self.repo, self.model_args = name, repo, model_args
        self.folder = root / repo.replace("/", "--")
        save_for_hf(model, self.folder, safe_serialization=safe)
        self.weights = self.folder / ("model.safetensors" if safe else "pytorch_model.bin")
        self.commit = write_to_hub_cache(self.folder, repo)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.weights.suffix == ".safetensors":
            return safetensors.torch.load_file(self.weights)
        return torch.load(self.weights, weights_only=True)

    def features(self, pixels_nchw: np.ndarray, out_indices, **overrides) -> list[np.ndarray]:
        """timm's features_only model with these weights, maps as NHWC numpy arrays."""
        reference = timm.create_model(self.name, features_only=True, out_indices=tuple(out_indices), pretrained=True,
                                      pretrained_cfg_overlay=dict(file=str(self.weights)),
                                      **{**self.model_args, **overrides}).eval()
        with torch.no_grad():
            maps = reference(torch.from_numpy(pixels_nchw))
        nhwc = reference.output_fmt == "NHWC"  # timm's Swin works NHWC, its ResNet NCHW
        return [m.numpy() if nhwc else m.numpy().transpose(0, 2, 3, 1) for m in maps]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, hub_cache):
    """checkpoints(name, repo=None, safe=True, **model_args): made once per module, shared by tests."""
    root, made = tmp_path_factory.mktemp("timm"), {}

    def get(name: str, repo: str | None = None, safe: bool = True, seed: int = 0, **model_args) -> Checkpoint:
        repo = repo or f"timm/{name}"
        if repo not in made:
            made[repo] = Checkpoint(root, name, repo, safe, seed, model_args)
        return made[repo]

    return get


def small_resnet50d(checkpoints) -> Checkpoint:
    """resnet50d's layout (deep stem, average-pool shortcuts) with fewer and narrower blocks."""
    return checkpoints("resnet50d", repo="test-org/resnet50d-small", seed=4, layers=(1, 2, 1, 1),
                       channels=(8, 16, 24, 32), stem_width=8)


def small_swin(checkpoints) -> Checkpoint:
    """swin_tiny's layout with narrower stages, built for any input size (dynamic_img_size)."""
    return checkpoints("swin_tiny_patch4_window7_224", repo="test-org/swin-dynamic", seed=2, depths=(2, 2, 2, 2),
                       embed_dim=32, num_heads=(1, 2, 4, 8), dynamic_img_size=True)


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def compare(reference_maps, our_maps, label):
    assert len(reference_maps) == len(our_maps), label
    return [assert_parity(ref, np.asarray(ours), name=f"{label} map {i}")
            for i, (ref, ours) in enumerate(zip(reference_maps, our_maps))]


# ---------------------------------------------------------------------------------------------------------------
# Parity through the hub layout


PARITY = [
    # name, safetensors (else pytorch_model.bin), input (height, width), out_indices (None: the default [-1])
    ("resnet18", False, (224, 224), [0, 1, 2, 3, 4]),
    ("resnet50", True, (160, 200), None),
    ("resnet50d", True, (161, 199), [0, -3, -1]),
    ("resnext50_32x4d", True, (97, 131), [1, 3]),
    ("wide_resnet50_2", True, (128, 160), [-2, -1]),
    ("swin_tiny_patch4_window7_224", True, (224, 224), [-4, 1, -1]),
    ("convnextv2_tiny", True, (224, 224), [0, 1, 2, 3]),  # full size, GRN on 56x56 maps
    ("convnextv2_tiny", True, (225, 161), [-1]),  # the same checkpoint at an odd non-square size
]


@pytest.mark.parametrize("name, safe, size, out_indices", PARITY)
def test_hub_checkpoint_parity(checkpoints, name, safe, size, out_indices):
    checkpoint = checkpoints(name, safe=safe)
    selection = {} if out_indices is None else {"out_indices": out_indices}
    model = AutoBackbone.from_pretrained(f"timm/{name}", **selection)
    assert isinstance(model, TimmBackbone)
    assert model.out_indices == (out_indices or [-1])

    pixels = random_pixels((1, 3, *size))
    outputs = forward_all(model, jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    every_stage = list(range(len(model.stage_names)))
    errors = compare(checkpoint.features(pixels, every_stage), outputs.hidden_states, f"{name} hidden")
    errors += compare(checkpoint.features(pixels, out_indices or [-1]), outputs.feature_maps, f"{name} selected")
    print(f"\n{name} {size}: worst relative error {max(errors):.2e}")


SMALL_RESNET = dict(layers=(1, 2, 1, 1), channels=(8, 16, 24, 32))

DILATED = [
    # name, repo (None: a small one of its own), model_args of the checkpoint (save_for_hf records them, output_stride
    # included), output_stride given to from_pretrained (None: the checkpoint's)
    ("resnet18", None, dict(SMALL_RESNET), 8),
    ("resnet18d", None, dict(SMALL_RESNET, stem_width=8, output_stride=16), None),
    ("resnet50", "timm/resnet50", {}, 16),  # the full-size checkpoint of PARITY
    ("resnet50d", "test-org/resnet50d-small", dict(SMALL_RESNET, stem_width=8), 8),  # small_resnet50d's
    ("resnext50_32x4d", None, dict(SMALL_RESNET, cardinality=4, base_width=32, output_stride=16), 8),  # overridden
]


@pytest.mark.parametrize("name, repo, model_args, output_stride", DILATED)
def test_dilated_resnet_parity(checkpoints, name, repo, model_args, output_stride):
    """output_stride 8 / 16 (timm's dilated ResNets: stride-1 later stages, dilated 3x3s, first_dilation, the d
    variants' AvgPool2dSame shortcut) against `timm.create_model(..., features_only=True, output_stride=...)`, at an
    odd non-square size, through the hub cache; `from_pretrained(output_stride=...)` overrides the checkpoint's."""
    seed = 4 if repo == "test-org/resnet50d-small" else 21
    checkpoint = checkpoints(name, repo=repo or f"test-org/{name}-dilated", seed=seed, **model_args)
    kwargs = {} if output_stride is None else {"output_stride": output_stride}
    model = AutoBackbone.from_pretrained(checkpoint.repo, out_indices=[0, 1, 2, 3, 4], **kwargs)
    effective = output_stride or model_args["output_stride"]
    assert model.config.timm_spec.output_stride == effective
    reference = timm.create_model(name, features_only=True, device="meta", **{**model_args, **kwargs})
    assert list(model.reductions) == reference.feature_info.reduction() and max(model.reductions) == effective
    assert model.channels == reference.feature_info.channels()
    pixels = random_pixels((1, 3, 53, 71), seed=5)
    outputs = forward_all(model, jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    errors = compare(checkpoint.features(pixels, range(5), **kwargs), outputs.feature_maps, f"{name} os{effective}")
    assert outputs.feature_maps[-1].shape[1:3] == (-(-53 // effective), -(-71 // effective))
    print(f"\n{name} output_stride={effective} 53x71: worst relative error {max(errors):.2e}")
    assert model.config.to_timm_dict()["model_args"]["output_stride"] == effective


@pytest.mark.parametrize("name", ["resnet50d", "resnet26t", "resnext101_32x4d", "resnet34"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_resnet_geometry_is_timm_s(name, output_stride):
    """Every convolution's stride, dilation and padding, and every shortcut's pool, as timm builds them."""
    from timm.layers import AvgPool2dSame

    from jaxbackbones.convert import timm_resnet

    reference = timm.create_model(name, features_only=True, output_stride=output_stride, device="meta")
    config = TimmBackboneConfig(backbone=name, output_stride=output_stride, out_indices=[0, 1, 2, 3, 4])
    ours = _abstract(config)
    assert list(ours.reductions) == reference.feature_info.reduction()
    table = timm_resnet.table_for(config)
    convolutions = 0
    for module_name, module in reference.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            path = next(p for rule in table.rules if (p := rule.to_flax_path(f"{module_name}.weight")))
            conv = ours
            for part in path.split(".")[:-1]:
                conv = conv[int(part)] if part.isdigit() else getattr(conv, part)
            assert (conv.strides, conv.kernel_dilation, conv.padding) == (
                module.stride, module.dilation, tuple((p, p) for p in module.padding)), module_name
            convolutions += 1
        elif module_name.endswith(".downsample"):
            block = ours.stages[int(module_name.split(".")[0].removeprefix("layer")) - 1].blocks[0]
            pools = [type(m) for m in module if isinstance(m, torch.nn.AvgPool2d)]
            assert block.shortcut.same_pool == (pools == [AvgPool2dSame]), module_name
            assert (block.shortcut.pool_stride != 1) == (pools == [torch.nn.AvgPool2d]), module_name
    assert convolutions > 20


def test_window12_384_parity(checkpoints):
    """Window 12 at 384 (swin_base_patch4_window12_384's layout, fewer and narrower blocks); the last stage's 12x12
    map fits one window, so timm, and we, do not shift it."""
    checkpoint = checkpoints("swin_base_patch4_window12_384", repo="test-org/swin-w12-384", seed=1,
                             depths=(2, 2, 2, 2), embed_dim=32, num_heads=(1, 2, 4, 8))
    model = AutoBackbone.from_pretrained("test-org/swin-w12-384", out_indices=[0, 1, 2, 3])
    assert model.config.timm_spec.stage_windows() == [(12, 6), (12, 6), (12, 6), (12, 0)]
    assert model.config.input_size == (384, 384)
    pixels = random_pixels((1, 3, 384, 384))
    outputs = forward_all(model, pixels.transpose(0, 2, 3, 1))
    errors = compare(checkpoint.features(pixels, range(4)), outputs.feature_maps, "window12")
    print(f"\nswin window 12 @ 384: worst relative error {max(errors):.2e}")


SMALL_CONVNEXT = dict(depths=(1, 2, 1, 1), dims=(16, 24, 32, 40))


@pytest.mark.parametrize("name, repo, model_args", [
    ("convnext_atto_ols", None, {}),  # tiered overlapping stem, 1x1-conv MLP
    ("convnext_nano_ols", None, {}),  # overlapping stem
    ("convnext_tiny_hnf", None, {}),  # norm_pre (not a feature) instead of head.norm
    ("convnext_large_mlp", None, {}),  # a head with a hidden layer
    ("convnext_tiny", "test-org/convnext-options", dict(conv_bias=False, kernel_sizes=(3, 5, 7, 9), norm_eps=1e-3,
                                                       act_layer="gelu_tanh", stem_type="overlap_act")),
    ("convnext_tiny", "test-org/convnext-patch2", dict(patch_size=2, drop_path_rate=0.1)),  # stage 0 downsamples
    ("convnextv2_nano", "timm/convnextv2_nano.fcmae_ft_in22k_in1k", {}),  # a tagged repo; GRN with conv_mlp
])
def test_convnext_options_parity_and_export(checkpoints, tmp_path, name, repo, model_args):
    """Small configs of every option timm's ConvNeXt entrypoints use, against timm, and back to timm bit-exact."""
    checkpoint = checkpoints(name, repo=repo or f"test-org/{name}-small", seed=13, **SMALL_CONVNEXT, **model_args)
    model = AutoBackbone.from_pretrained(checkpoint.repo, out_indices=[0, 1, 2, 3])
    assert model.channels == list(SMALL_CONVNEXT["dims"])
    pixels = random_pixels((2, 3, 67, 45), seed=13)
    errors = compare(checkpoint.features(pixels, range(4)), forward_all(model, pixels.transpose(0, 2, 3, 1))
                     .feature_maps, name)
    print(f"\n{name} {model_args}: worst relative error {max(errors):.2e}")

    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    reloaded = timm.create_model(name, pretrained=True, **SMALL_CONVNEXT, **model_args,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "torch" / "model.safetensors")))
    original, after = checkpoint.state_dict(), reloaded.state_dict()  # strict loading accepted the placeholders
    assert original.keys() == after.keys()
    for key, tensor in original.items():
        if not key.startswith(("head.", "norm_pre.")):
            assert torch.equal(tensor, after[key]), key


def test_swin_other_input_sizes_match_timm_dynamic_img_size(checkpoints):
    """At a size that is not a multiple of the windows, timm shifts before it pads, and keeps the windows it fixed
    for img_size (dynamic_img_size=True); so do we."""
    checkpoint = small_swin(checkpoints)
    model = AutoBackbone.from_pretrained("test-org/swin-dynamic", out_indices=[0, 1, 2, 3])
    pixels = random_pixels((1, 3, 160, 232))
    outputs = forward_all(model, pixels.transpose(0, 2, 3, 1))
    errors = compare(checkpoint.features(pixels, range(4)), outputs.feature_maps, "dynamic")
    print(f"\nswin 160x232: worst relative error {max(errors):.2e}")


def test_two_input_channels(checkpoints):
    """in_chans in the checkpoint's model_args becomes num_channels, and export writes it back."""
    checkpoint = checkpoints("resnet10t", repo="test-org/resnet10t-2ch", seed=8, in_chans=2)
    model = AutoBackbone.from_pretrained("test-org/resnet10t-2ch", out_indices=[0, 1, 2, 3, 4])
    assert model.config.num_channels == 2 and "in_chans" not in model.config.model_args
    assert model.config.to_timm_dict()["model_args"]["in_chans"] == 2
    pixels = random_pixels((1, 2, 51, 70), seed=9)
    compare(checkpoint.features(pixels, range(5)), forward_all(model, pixels.transpose(0, 2, 3, 1)).feature_maps,
            "two channels")


def test_channels_first_and_jit(checkpoints):
    checkpoint = small_resnet50d(checkpoints)
    model = AutoBackbone.from_pretrained("test-org/resnet50d-small", out_indices=[0, 2], data_format="channels_first")
    pixels = random_pixels((2, 3, 67, 45), seed=3)
    eager = model(pixels)
    jitted = nnx.jit(lambda m, x: m(x))(model, pixels)
    reference = checkpoint.features(pixels, [0, 2])
    for ref, ours, fast in zip(reference, eager.feature_maps, jitted.feature_maps):
        assert_parity(ref.transpose(0, 3, 1, 2), ours)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(fast), rtol=1e-5, atol=1e-5)
    assert eager.hidden_states is None and eager.attentions is None


# ---------------------------------------------------------------------------------------------------------------
# The architecture table and the mapping tables, for every supported architecture


def _abstract(config):
    return abstract_module(lambda: TimmBackbone(config, rngs=nnx.Rngs(0)))


# What each family's timm model has beyond the backbone: the classifier, and the norm that feeds only it.
CLASSIFIER_PREFIXES = {"resnet": ("fc.",), "swin": ("head.", "norm."), "convnext": ("head.", "norm_pre."),
                       "vit": ("head.", "norm.", "fc_norm."), "eva": ("head.", "norm.", "fc_norm."),
                       "hgnet": ("head.",), "pvt_v2": ("head.",), "samvit": ("head.", "neck."), "hiera": ("head.",),
                       "hieradet": ("head.",)}


@pytest.mark.parametrize("name", sorted(TIMM_ARCHITECTURES))
def test_architecture_table_matches_timm(name):
    """Stages, channels, reductions and every tensor (both ways through the table) equal timm's model's."""
    reference = timm.create_model(name, device="meta")
    config = TimmBackboneConfig(backbone=name, out_indices=list(range(len(reference.feature_info))))
    spec = config.timm_spec
    assert config.stage_names == [info["module"] for info in reference.feature_info]
    assert list(spec.num_features) == [info["num_chs"] for info in reference.feature_info]
    assert list(spec.reductions) == [info["reduction"] for info in reference.feature_info]
    assert config.num_classes == reference.num_classes
    if isinstance(spec, SwinSpec):
        blocks = [(stage.blocks[1].attn.window_size[0], stage.blocks[1].shift_size[0]) for stage in reference.layers]
        assert spec.stage_windows() == blocks
    if isinstance(spec, (SwinSpec, ViTSpec, EvaSpec)):
        assert config.input_size == tuple(reference.patch_embed.img_size)
    if isinstance(spec, (ViTSpec, EvaSpec)):
        # A ViT repeats one block: its tensors are checked on two (the largest take minutes to build abstractly).
        reference = timm.create_model(name, device="meta", depth=2)
        config = TimmBackboneConfig(backbone=name, model_args={"depth": 2}, out_indices=[0, 1])
    model = _abstract(config)
    assert model.stage_names == config.stage_names and model.num_features == config.timm_spec.num_features

    timm_shapes = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    table = FAMILIES["timm_backbone"].table_for(config)
    shapes = {path: tuple(variable.shape) for path, variable in flat_state(model).items()}
    fake = {key: np.broadcast_to(np.float32(0), shape) for key, shape in timm_shapes.items()}
    _, report = convert_state_dict(fake, table, shapes)
    assert report.ok and not report.initialized, report.summary()
    head = CLASSIFIER_PREFIXES[config.timm_spec.family]
    assert sorted(report.ignored) == sorted(key for key in timm_shapes if key.startswith(head)
                                            or key.endswith("num_batches_tracked"))
    exported = export_state_dict({path: np.broadcast_to(np.float32(0), shape) for path, shape in shapes.items()},
                                 table, config)
    assert {key: tuple(value.shape) for key, value in exported.items()} == timm_shapes


def test_config_semantics_match_transformers():
    for kwargs in (dict(backbone="resnet50"), dict(backbone="resnet50d", out_indices=[0, 2, -1]),
                   dict(backbone="swin_tiny_patch4_window7_224"),
                   dict(backbone="swin_tiny_patch4_window7_224", out_indices=(0, 1, 2, 3)),
                   dict(backbone="convnext_atto", out_indices=(0, 2, 3))):
        theirs = transformers.TimmBackbone(transformers.TimmBackboneConfig(**kwargs))
        ours = _abstract(TimmBackboneConfig(**kwargs))
        assert ours.stage_names == theirs.stage_names
        assert ours.out_indices == list(theirs.out_indices) == theirs.config.out_indices
        assert ours.out_features == theirs.out_features
        assert ours.channels == theirs.channels
        assert list(ours.num_features) == theirs.num_features

    theirs = transformers.TimmBackboneConfig(backbone="resnet50").to_dict()
    ours = TimmBackboneConfig(backbone="resnet50").to_dict()
    for key in ("backbone", "num_channels", "features_only", "freeze_batch_norm_2d", "output_stride", "model_type",
                "out_indices"):
        assert ours[key] == theirs[key], key
    assert ours["out_features"] == ["layer4"] and ours["stage_names"][0] == "act1"
    assert TimmBackboneConfig.from_dict(json.loads(json.dumps(ours))) == TimmBackboneConfig(backbone="resnet50")
    config = TimmBackboneConfig("resnet18", out_features=["act1", "layer2"])
    assert config.out_indices == [0, 2]
    tagged = TimmBackboneConfig(backbone="resnet50d.ra2_in1k")  # timm names may carry a pretrained tag
    assert tagged.timm_spec == TimmBackboneConfig(backbone="resnet50d").timm_spec


def test_from_config_random_weights():
    config = TimmBackboneConfig(backbone="resnet10t", out_indices=[0, -1])
    model = AutoBackbone.from_config(config, rngs=nnx.Rngs(0))
    model.eval()
    outputs = nnx.jit(lambda m, x: m(x))(model, jnp.ones((1, 64, 64, 3)))
    assert [fm.shape for fm in outputs.feature_maps] == [(1, 32, 32, 64), (1, 2, 2, 512)]
    assert all(np.isfinite(np.asarray(fm)).all() for fm in outputs.feature_maps)
    assert AutoConfig.for_model("timm_backbone", backbone="swin_tiny_patch4_window7_224").stage_names[-1] == "layers.3"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backbone="deit_base_patch16_224"), "timm architecture 'deit_base_patch16_224' is not supported; "
                                                "jaxbackbones builds these timm architectures: .*resnet50.*swin_tiny"),
        (dict(), "no backbone is set; jaxbackbones builds these timm architectures"),
        (dict(backbone="resnet50", output_stride=4), "output_stride=4 is not supported: timm's ResNets take 8, 16"),
        (dict(backbone="resnet18", model_args={"output_stride": 64}), "output_stride=64 is not supported"),
        (dict(backbone="swin_tiny_patch4_window7_224", output_stride=16), "output_stride=16 is not supported for "
                                                                          "timm family 'swin'"),
        (dict(backbone="vit_base_patch16_224", model_args={"output_stride": 8}), "output_stride=8 is not supported"),
        (dict(backbone="convnext_tiny", output_stride=16), "output_stride=16 is not supported"),
        (dict(backbone="resnet50", model_args={"drop_path_rate": 0.05}), "drop_path_rate=0.05 is not supported"),
        (dict(backbone="resnet50", model_args={"attn_layer": "se"}), r"model_args \['attn_layer'\] are not supported"),
        (dict(backbone="resnet50", features_only=False), "features_only must be True"),
        (dict(backbone="resnet50", out_indices=[5]), "out_indices must be valid indices"),
        (dict(backbone="swin_tiny_patch4_window7_224", model_args={"img_size": [224, 160]}), "square windows"),
        (dict(backbone="convnext_zepto_rms"), "'convnext_zepto_rms' is not supported; .*convnext_atto.*convnextv2_"),
        (dict(backbone="convnext_tiny", model_args={"norm_layer": "rmsnorm2d"}), "norm_layer='rmsnorm2d' is not "
                                                                                "supported"),
        (dict(backbone="convnext_tiny", model_args={"act_layer": "relu"}), "act_layer 'relu' is not supported"),
        (dict(backbone="convnext_tiny", model_args={"kernel_sizes": 4}), "one odd size per stage"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimmBackboneConfig(**kwargs)


def test_timm_config_json_layouts(checkpoints):
    """The current layout (architecture, model_args, pretrained_cfg) and the legacy single-dict one."""
    checkpoints("resnet50d")
    config = AutoConfig.from_pretrained("timm/resnet50d")
    assert isinstance(config, TimmBackboneConfig) and config.backbone == "resnet50d" and config.out_indices == [-1]
    assert config.pretrained_cfg["first_conv"] == "conv1.0" and config.num_classes == 1000
    timm_dict = config.to_timm_dict()
    assert timm_dict["pretrained_cfg"] == config.pretrained_cfg and timm_dict["architecture"] == "resnet50d"

    legacy = TimmBackboneConfig.from_dict({"architecture": "resnet18", "num_classes": 10, "input_size": [3, 160, 192],
                                           "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3})
    assert legacy.num_classes == 10 and legacy.input_size == (160, 192)
    exported = legacy.to_timm_dict()
    assert exported["num_classes"] == 10 and exported["model_args"] == {"in_chans": 3, "num_classes": 10}
    assert exported["pretrained_cfg"]["input_size"] == [3, 160, 192]
    assert exported["pretrained_cfg"]["interpolation"] == "bicubic" and exported["pretrained_cfg"]["classifier"] == "fc"


def test_unsupported_architecture_checkpoint_fails_clearly(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "efficientnet_b0", "num_classes": 1000}))
    with pytest.raises(ValueError, match="'efficientnet_b0' is not supported; .*resnext50_32x4d"):
        AutoBackbone.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# freeze_batch_norm_2d and training switches


def test_freeze_batch_norm_2d(checkpoints):
    checkpoint = small_resnet50d(checkpoints)
    pixels = random_pixels((2, 3, 48, 40), seed=5)
    reference = timm.create_model("resnet50d", features_only=True, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(checkpoint.weights)), **checkpoint.model_args)

    frozen = AutoBackbone.from_pretrained("test-org/resnet50d-small", out_indices=[0, 1, 2, 3, 4],
                                          freeze_batch_norm_2d=True)
    before = {path: np.asarray(v[...]) for path, v in flat_state(frozen).items() if path.endswith((".mean", ".var"))}
    frozen.train()
    assert all(bn.frozen and not bn.use_running_average for _, bn in nnx.iter_modules(frozen)
               if isinstance(bn, BatchNorm))
    ours = frozen(pixels.transpose(0, 2, 3, 1)).feature_maps
    timm.utils.model.freeze_batch_norm_2d(reference).train()
    with torch.no_grad():
        expected = [m.numpy().transpose(0, 2, 3, 1) for m in reference(torch.from_numpy(pixels))]
    compare(expected, ours, "frozen, train mode")
    after = {path: np.asarray(v[...]) for path, v in flat_state(frozen).items() if path.endswith((".mean", ".var"))}
    assert all(np.array_equal(before[path], after[path]) for path in before)
    frozen_parameters = trainable_filter(frozen).frozen  # frozen BatchNorms are not trained either
    assert frozen_parameters and all(path[-1] in ("scale", "bias") for path in frozen_parameters)

    # Unfrozen, train mode normalises with the batch statistics, as timm's train mode does.
    frozen.unfreeze_batch_norm_2d()
    frozen.train()
    unfrozen = timm.create_model("resnet50d", features_only=True, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(checkpoint.weights)),
                                 **checkpoint.model_args).train()
    with torch.no_grad():
        expected = [m.numpy().transpose(0, 2, 3, 1) for m in unfrozen(torch.from_numpy(pixels))]
    compare(expected, frozen(pixels.transpose(0, 2, 3, 1)).feature_maps, "unfrozen, train mode")


def test_swin_train_mode_drop_path_and_gradients(checkpoints):
    small_swin(checkpoints)
    model = AutoBackbone.from_pretrained("test-org/swin-dynamic", out_indices=[-1])
    model.train()  # timm's default drop_path_rate 0.1, on both residual branches
    pixels = jnp.asarray(random_pixels((2, 32, 32, 3), seed=12))
    with pytest.raises(ValueError, match="no rngs were given"):
        model(pixels)

    def loss(model, pixels, rngs):
        return jnp.mean(model(pixels, rngs=rngs).feature_maps[0] ** 2)

    value, grads = nnx.jit(nnx.value_and_grad(loss))(model, pixels, nnx.Rngs(dropout=0))
    assert np.isfinite(float(value))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


def test_freeze_stages_follow_timm_stage_names(checkpoints):
    small_resnet50d(checkpoints)
    model = AutoBackbone.from_pretrained("test-org/resnet50d-small", freeze_stages=2)
    frozen = {path[:2] if path[0] == "stages" else path[:1] for path in trainable_filter(model).frozen}
    assert frozen == {("stem",), ("stages", 0)}
    swin = _abstract(TimmBackboneConfig(backbone="swin_tiny_patch4_window7_224", freeze_stages=2))
    assert swin.stage_paths()["layers.1"] == [("stages", 1, "blocks"), ("stages", 0, "downsample")]


# ---------------------------------------------------------------------------------------------------------------
# Loading details: old Swin layout, buffers, native format, conversion cache, image processor


@pytest.mark.parametrize("name, size", [("resnet18", (75, 90)), ("swin_tiny_patch4_window7_224", (224, 224)),
                                        ("convnext_atto", (67, 45))])
def test_transformers_timm_backbone_checkpoint(name, size, tmp_path, hub_cache):
    """What transformers' TimmBackbone.save_pretrained writes (timm's features_only model under `_backbone.`)."""
    reference = transformers.TimmBackbone(transformers.TimmBackboneConfig(backbone=name, out_indices=[1, -1]))
    randomize_torch_module(reference.eval(), seed=10).save_pretrained(tmp_path / "hf")
    for module in reference.modules():  # the randomizer also hit timm's non-persistent attention masks
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()
    write_to_hub_cache(tmp_path / "hf", f"test-org/transformers-{name}")
    model = AutoBackbone.from_pretrained(f"test-org/transformers-{name}")
    assert model.out_indices == [1, -1] and model.out_features == reference.out_features
    pixels = random_pixels((1, 3, *size), seed=11)
    with torch.no_grad():
        expected = [m.numpy() for m in reference(torch.from_numpy(pixels)).feature_maps]
    if not name.startswith("swin"):  # timm's Swin returns NHWC maps, the others NCHW
        expected = [m.transpose(0, 2, 3, 1) for m in expected]
    compare(expected, nnx.jit(lambda m, x: m(x).feature_maps)(model, pixels.transpose(0, 2, 3, 1)), name)


def test_swin_checkpoint_of_the_old_layout(checkpoints, tmp_path):
    """Older timm (and the original repository) merge patches at the end of a stage and store the
    relative_position_index and attn_mask buffers; timm's checkpoint filter converts them, so do we."""
    checkpoint = small_swin(checkpoints)
    state = {}
    for key, tensor in checkpoint.state_dict().items():
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            key = ".".join(["layers", str(int(parts[1]) - 1), *parts[2:]])
        state[key] = tensor
    index = timm.models.swin_transformer.get_relative_position_index(7, 7)
    state["layers.0.blocks.0.attn.relative_position_index"] = index
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    folder = tmp_path / "old"
    folder.mkdir()
    safetensors.torch.save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text((checkpoint.folder / "config.json").read_text())

    old = AutoBackbone.from_pretrained(folder, out_indices=[0, 1, 2, 3])
    new = AutoBackbone.from_pretrained("test-org/swin-dynamic", out_indices=[0, 1, 2, 3])
    assert all(np.array_equal(np.asarray(a[...]), np.asarray(flat_state(new)[path][...]))
               for path, a in flat_state(old).items())

    state["layers.0.blocks.0.attn.relative_position_index"] = index.flip(0)
    safetensors.torch.save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match="relative position index"):
        AutoBackbone.from_pretrained(folder)


def test_loading_report_and_mismatch(checkpoints, tmp_path):
    small_resnet50d(checkpoints)
    _, report = AutoBackbone.from_pretrained("test-org/resnet50d-small", cache_conversion=False,
                                             output_loading_info=True)
    assert report.ok and not report.initialized
    assert {"fc.weight", "fc.bias"} <= set(report.ignored)

    # A conv-shortcut (resnet50c-style) checkpoint declared as resnet50d: the shortcut keys do not fit.
    source = timm.create_model("resnet50c", layers=(1, 1, 1, 1), channels=(8, 16, 24, 32), stem_width=8)
    save_for_hf(source, tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architecture"] = "resnet50d"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match=r"does not fit the model(.|\n)*layer1\.0\.downsample\.0\.weight"):
        AutoBackbone.from_pretrained(tmp_path)


def test_native_format_and_conversion_cache(checkpoints, tmp_path, hub_cache):
    checkpoint = small_swin(checkpoints)
    model = AutoBackbone.from_pretrained("test-org/swin-dynamic", out_indices=[1, 3])
    cached = Path(hub_cache) / "converted" / "models--test-org--swin-dynamic" / checkpoint.commit / "float32"
    assert (cached / "model.nnx.safetensors").is_file()
    again, report = AutoBackbone.from_pretrained("test-org/swin-dynamic", out_indices=[1, 3], output_loading_info=True)
    assert all(path.startswith(("patch_embed", "stages")) for path in report.loaded)  # the native state paths

    model.save_pretrained(tmp_path / "native")
    native = AutoBackbone.from_pretrained(tmp_path / "native")
    assert isinstance(native.config, TimmBackboneConfig) and native.out_indices == [1, 3]
    assert native.config.model_args["depths"] == [2, 2, 2, 2] and native.config.model_args["dynamic_img_size"]
    pixels = jnp.asarray(random_pixels((1, 224, 224, 3)))
    forward = nnx.jit(lambda m, x: m(x).feature_maps)
    for a, b, c in zip(forward(model, pixels), forward(again, pixels), forward(native, pixels)):
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(c))

    processor = AutoImageProcessor.from_pretrained("test-org/swin-dynamic")
    assert processor.input_size == (3, 224, 224) and processor.crop_pct == 0.9
    assert AutoImageProcessor.from_pretrained(tmp_path / "native") == processor


# ---------------------------------------------------------------------------------------------------------------
# The command line: convert --verify, info, export --layout timm



def test_cli_convert_verify_info_and_export_to_timm(checkpoints, tmp_path):
    checkpoint = checkpoints("resnet50d")
    converted = run_cli("convert", "timm/resnet50d", str(tmp_path / "flax"), "--verify")
    assert converted.returncode == 0, converted.stdout + converted.stderr
    assert "OK: worst relative difference" in converted.stdout
    assert "ignored on purpose (57):" in converted.stdout  # fc.weight, fc.bias, 55 BatchNorm counters
    for stage in ("act1", "layer1", "layer2", "layer3", "layer4"):
        assert any(line.startswith(stage) for line in converted.stdout.splitlines()), stage

    info = run_cli("info", "timm/resnet50d")
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert lines[:2] == ["model_type   timm_backbone", "architecture resnet50d"]
    assert lines[-5:] == ["act1             64         2", "layer1          256         4",
                          "layer2          512         8", "layer3         1024        16",
                          "layer4         2048        32"]

    exported = run_cli("export", str(tmp_path / "flax"), str(tmp_path / "torch"), "--layout", "timm")
    assert exported.returncode == 0, exported.stderr
    wrong = run_cli("export", str(tmp_path / "flax"), str(tmp_path / "hf"), "--layout", "transformers")
    assert wrong.returncode == 1 and "export to the 'timm' layout" in wrong.stderr

    # timm loads the folder back, strictly: the brief's call, and the hub-style local folder.
    reloaded = timm.create_model("resnet50d", pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "torch" / "model.safetensors")))
    from_folder = timm.create_model(f"local-dir:{tmp_path / 'torch'}", pretrained=True, features_only=True)
    original = checkpoint.state_dict()
    after = reloaded.state_dict()
    assert original.keys() == after.keys()
    for key, tensor in original.items():
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(tensor, after[key]), key
    pixels = random_pixels((1, 3, 96, 80), seed=6)
    with torch.no_grad():
        for expected, got in zip(checkpoint.features(pixels, range(5)), from_folder.eval()(torch.from_numpy(pixels))):
            assert np.array_equal(expected, got.numpy().transpose(0, 2, 3, 1))


def test_export_swin_to_timm(checkpoints, tmp_path):
    checkpoint = checkpoints("swin_tiny_patch4_window7_224")
    model = AutoBackbone.from_pretrained("timm/swin_tiny_patch4_window7_224")
    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    config = json.loads((tmp_path / "torch" / "config.json").read_text())
    assert config["architecture"] == "swin_tiny_patch4_window7_224" and config["pretrained_cfg"]["crop_pct"] == 0.9
    reloaded = timm.create_model("swin_tiny_patch4_window7_224", pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "torch" / "model.safetensors")))
    original, after = checkpoint.state_dict(), reloaded.state_dict()
    assert original.keys() == after.keys()
    for key, tensor in original.items():
        if not key.startswith(("head.", "norm.")):
            assert torch.equal(tensor, after[key]), key
    features = timm.create_model(f"local-dir:{tmp_path / 'torch'}", pretrained=True, features_only=True).eval()
    pixels = random_pixels((1, 3, 224, 224), seed=7)
    with torch.no_grad():
        for expected, got in zip(checkpoint.features(pixels, range(4)), features(torch.from_numpy(pixels))):
            assert np.array_equal(expected, got.numpy())
