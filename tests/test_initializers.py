"""Weights made all at once (`initializers.build_with_random_weights`, what `from_config` does) are bit for bit the
weights drawn one at a time, eagerly: for every family, dtype and rngs, and the rngs end in the same state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbackbones import (
    AutoBackbone,
    AutoConfig,
    ConvNextConfig,
    ConvNextV2Config,
    DINOv3ConvNextConfig,
    DINOv3ViTConfig,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    ResNetConfig,
    SwinConfig,
    TimmBackboneConfig,
    initializers,
    registry,
    sharding,
)
from jaxbackbones.auto import FAMILIES
from jaxbackbones.checkpoint import flat_state

multidevice = pytest.mark.multidevice

# Small configs of every model type (and each timm family), options away from their defaults where they add weights.
CONFIGS = {
    "resnet_basic": lambda: ResNetConfig(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 2], layer_type="basic"),
    "resnet_bottleneck": lambda: ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[2, 1],
                                              downsample_in_bottleneck=True),
    "swin": lambda: SwinConfig(embed_dim=16, depths=[2, 1], num_heads=[1, 2], window_size=4, image_size=32,
                               use_absolute_embeddings=True),
    "convnext": lambda: ConvNextConfig(hidden_sizes=[8, 16, 24], depths=[1, 2, 1], num_stages=3),
    "convnextv2": lambda: ConvNextV2Config(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2),
    "dinov3_convnext": lambda: DINOv3ConvNextConfig(hidden_sizes=[8, 16], depths=[2, 1]),
    "dinov2": lambda: Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=28,
                                   patch_size=7, use_swiglu_ffn=True, layerscale_value=0.5),
    "dinov2_with_registers": lambda: Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2,
                                                               num_attention_heads=4, image_size=42, patch_size=7,
                                                               num_register_tokens=3),
    "dinov3_vit": lambda: DINOv3ViTConfig(hidden_size=48, intermediate_size=40, num_hidden_layers=2,
                                          num_attention_heads=3, patch_size=8, num_register_tokens=2,
                                          use_gated_mlp=True, key_bias=True),
    "timm_resnet": lambda: TimmBackboneConfig("resnet26d", model_args={"layers": [1, 1], "channels": [8, 16],
                                                                       "stem_width": 8}),
    "timm_swin": lambda: TimmBackboneConfig("swin_tiny_patch4_window7_224", out_indices=[0, 1], model_args={
        "embed_dim": 16, "depths": [2, 1], "num_heads": [1, 2], "window_size": 4, "img_size": 32}),
    "timm_convnext": lambda: TimmBackboneConfig("convnext_atto", model_args={"depths": [1, 1, 2, 1],
                                                                            "dims": [8, 16, 24, 32]}),
    "timm_vit": lambda: TimmBackboneConfig("vit_small_patch14_reg4_dinov2", out_indices=[0, 1],
                                           model_args={"depth": 2, "embed_dim": 64, "num_heads": 2}),
    "timm_eva": lambda: TimmBackboneConfig("vit_small_patch16_dinov3", out_indices=[0, 1],
                                           model_args={"depth": 2, "embed_dim": 64, "num_heads": 2}),
}


def eager(config, rngs, **kwargs) -> nnx.Module:
    """The reference: the module built directly, each weight drawn as it is created."""
    return FAMILIES[config.model_type].backbone_class(config, rngs=rngs, **kwargs)


def assert_bit_identical(ours, reference):
    ours, reference = flat_state(ours), flat_state(reference)
    assert list(ours) == list(reference)
    for path, variable in reference.items():
        value, expected = np.asarray(ours[path][...]), np.asarray(variable[...])
        assert type(ours[path]) is type(variable), path
        assert value.dtype == expected.dtype and value.shape == expected.shape, path
        assert np.array_equal(value.view(np.uint8), expected.view(np.uint8)), path


def rng_state(rngs: nnx.Rngs) -> dict:
    """Each stream's key data and counter."""
    def plain(value):
        return np.asarray(jax.random.key_data(value) if jnp.issubdtype(value.dtype, jax.dtypes.prng_key) else value)
    return {path: plain(variable[...]) for path, variable in nnx.to_flat_state(nnx.state(rngs))}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_from_config_weights_and_rngs_match_eager_construction(name):
    config = CONFIGS[name]()
    rngs, reference_rngs = nnx.Rngs(3), nnx.Rngs(3)
    model = AutoBackbone.from_config(config, rngs=rngs)
    reference = eager(config, reference_rngs)
    assert_bit_identical(model, reference)
    assert rng_state(rngs).keys() == rng_state(reference_rngs).keys()
    for path, value in rng_state(reference_rngs).items():
        np.testing.assert_array_equal(rng_state(rngs)[path], value)
    # the rngs went on from where the build left them, as after an eager build
    np.testing.assert_array_equal(jax.random.key_data(rngs.params()), jax.random.key_data(reference_rngs.params()))


@pytest.mark.parametrize("name, param_dtype", [("swin", jnp.bfloat16), ("resnet_basic", jnp.float16)])
def test_half_precision_parameters_match(name, param_dtype):
    config = CONFIGS[name]()
    model = AutoBackbone.from_config(config, rngs=nnx.Rngs(1), param_dtype=param_dtype)
    assert_bit_identical(model, eager(config, nnx.Rngs(1), param_dtype=param_dtype))


def test_default_rngs_and_separate_streams():
    config = CONFIGS["resnet_basic"]()
    assert_bit_identical(AutoBackbone.from_config(config), eager(config, nnx.Rngs(0)))
    rngs, reference_rngs = nnx.Rngs(params=5, dropout=6), nnx.Rngs(params=5, dropout=6)
    assert_bit_identical(AutoBackbone.from_config(config, rngs=rngs), eager(config, reference_rngs))
    for path, value in rng_state(reference_rngs).items():
        np.testing.assert_array_equal(rng_state(rngs)[path], value)


def test_initializers_are_jax_initializers():
    key = jax.random.key(11)
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        for shape in [(3, 3, 8, 16), (40, 12)]:
            for ours, theirs in [(initializers.conv_kernel_init, jax.nn.initializers.variance_scaling(
                    2.0, "fan_out", "normal")), (initializers.normal(0.02), jax.nn.initializers.normal(0.02))]:
                expected = theirs(key, shape, dtype)
                value = ours(key, shape, dtype)
                assert value.dtype == expected.dtype
                np.testing.assert_array_equal(np.asarray(value).view(np.uint8), np.asarray(expected).view(np.uint8))
        for init, fill in ((initializers.zeros, 0), (initializers.ones, 1)):
            np.testing.assert_array_equal(init(key, (3, 2), dtype), jnp.full((3, 2), fill, dtype))


class Draws(nnx.Module):
    """Weights of sizes around the kernel's row (CHUNK) and batch (1024 rows) boundaries."""

    def __init__(self, sizes, dtype, *, rngs: nnx.Rngs):
        self.weights = nnx.List([nnx.Param(initializers.normal(0.5 + i)(rngs.params(), (size,), dtype))
                                 for i, size in enumerate(sizes)])
        self.kernel = nnx.Param(initializers.conv_kernel_init(rngs.params(), (3, 3, 5, 7), dtype))
        self.scale = nnx.Param(initializers.full((9,), 1e-6, dtype))


BOUNDARY_SIZES = [1, initializers.CHUNK - 1, initializers.CHUNK, initializers.CHUNK + 1, 3 * initializers.CHUNK + 17,
                  1025 * initializers.CHUNK + 5]


@pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_chunked_draws_match_across_row_and_batch_boundaries(dtype, on_device):
    model = initializers.build_with_random_weights(lambda: Draws(BOUNDARY_SIZES, dtype, rngs=nnx.Rngs(2)),
                                                   on_device=on_device)
    assert_bit_identical(model, Draws(BOUNDARY_SIZES, dtype, rngs=nnx.Rngs(2)))


@pytest.mark.parametrize("build", [
    lambda: Draws(BOUNDARY_SIZES, jnp.float32, rngs=nnx.Rngs(2)),
    *(lambda name=name: eager(CONFIGS[name](), nnx.Rngs(4)) for name in ("resnet_bottleneck", "dinov3_vit", "swin")),
], ids=["boundaries", "resnet_bottleneck", "dinov3_vit", "swin"])
def test_draws_stay_on_the_device(build, monkeypatch):
    """on_device=True (the default off the CPU): no draw goes to the host and back. To the host go only the keys and
    scales (12 bytes a weight); to the device, the constants and the kernel's row table (20 bytes a row of CHUNK
    values, padded to whole batches), never a draw. Implicit transfers to the host are refused outright."""
    to_host, to_device = [], []
    device_get, device_put = jax.device_get, jax.device_put

    def get(tree, *args, **kwargs):
        to_host.extend(jax.tree.leaves(tree))
        return device_get(tree, *args, **kwargs)

    def put(tree, *args, **kwargs):
        to_device.extend(leaf for leaf in jax.tree.leaves(tree) if isinstance(leaf, np.ndarray | np.generic))
        return device_put(tree, *args, **kwargs)

    monkeypatch.setattr(jax, "device_get", get)
    monkeypatch.setattr(jax, "device_put", put)
    with jax.transfer_guard_device_to_host("disallow"):
        model = initializers.build_with_random_weights(build, on_device=True)
    monkeypatch.undo()
    reference = build()
    assert_bit_identical(model, reference)

    values = [np.asarray(variable[...]) for variable in flat_state(reference).values()]
    drawn = [value for value in values if value.size > 1 and not np.all(value == value.flat[0])]
    constant_bytes = sum(value.nbytes for value in values) - sum(value.nbytes for value in drawn)
    drawn_bytes = sum(value.nbytes for value in drawn)
    assert all(np.asarray(leaf).nbytes <= 8 for leaf in to_host) and len(to_host) <= 2 * len(values)
    rows = sum(-(-value.size // initializers.CHUNK) for value in drawn)
    batch = next((size for size in initializers._ROW_BUCKETS if size >= rows), initializers._ROW_BUCKETS[-1])
    # Kernel calls: the rows in batches, plus a partial batch at each end of a draw larger than a batch (made apart).
    calls = rows // batch + 1 + 2 * sum(value.size > batch * initializers.CHUNK for value in drawn)
    table_bytes = 20 * batch * calls + 4 * len(values)  # and each weight's first row
    assert sum(leaf.nbytes for leaf in to_device) - constant_bytes <= table_bytes < drawn_bytes


def test_other_prng_implementations_and_dtypes_are_drawn_eagerly():
    config = CONFIGS["resnet_basic"]()

    def rbg():
        return nnx.Rngs(params=jax.random.key(4, impl="rbg"))

    assert_bit_identical(AutoBackbone.from_config(config, rngs=rbg()), eager(config, rbg()))
    with jax.enable_x64(True):
        model = initializers.build_with_random_weights(lambda: Draws([10, 5000], jnp.float64, rngs=nnx.Rngs(2)))
        assert_bit_identical(model, Draws([10, 5000], jnp.float64, rngs=nnx.Rngs(2)))
        assert model.weights[0][...].dtype == jnp.float64


def test_under_a_trace_the_module_is_abstract():
    config = CONFIGS["swin"]()
    abstract = nnx.eval_shape(lambda: AutoBackbone.from_config(config))
    reference = eager(config, nnx.Rngs(0))
    leaves = {path: variable.get_value() for path, variable in flat_state(abstract).items()}
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves.values())
    assert {path: (leaf.shape, leaf.dtype) for path, leaf in leaves.items()} == {
        path: (variable[...].shape, variable[...].dtype) for path, variable in flat_state(reference).items()}


@pytest.mark.parametrize("name", sorted(registry.examples()))
def test_abstract_module_is_eval_shape_without_the_trace(name, monkeypatch):
    """Every family's example: the graph and the (shape, dtype) of every variable as `nnx.eval_shape` gives them, all
    abstract, no weight made."""
    config = AutoConfig.for_model(**registry.examples()[name])
    monkeypatch.setattr(initializers, "_make", lambda *args: pytest.fail("a weight was made"))
    abstract = initializers.abstract_module(lambda: AutoBackbone.from_config(config))
    traced = nnx.eval_shape(lambda: AutoBackbone.from_config(config))
    assert nnx.graphdef(abstract) == nnx.graphdef(traced)
    leaves = {path: variable.get_value() for path, variable in flat_state(abstract).items()}
    assert all(type(leaf) is jax.ShapeDtypeStruct for leaf in leaves.values())
    assert {path: (leaf.shape, leaf.dtype) for path, leaf in leaves.items()} == {
        path: (variable.get_value().shape, variable.get_value().dtype)
        for path, variable in flat_state(traced).items()}


def test_a_weight_kept_outside_the_variables_is_an_error():
    class Hidden(nnx.Module):
        def __init__(self, rngs):
            self.weight = nnx.Param(initializers.normal(1.0)(rngs.params(), (4,)))
            self.stash = [initializers.normal(1.0)(rngs.params(), (4,))]  # not a variable

    with pytest.raises(RuntimeError, match="not variables of the module"):
        initializers.build_with_random_weights(lambda: Hidden(nnx.Rngs(0)))


@multidevice
@pytest.mark.parametrize("shard_axis", [None, "data"])
def test_multidevice_weights_are_placed_by_the_rule(shard_axis):
    mesh = sharding.make_mesh((8,), ("data",))
    rule = sharding.ShardingRule(mesh, shard_axis)
    for name in ("resnet_bottleneck", "dinov2"):
        config = CONFIGS[name]()
        model = AutoBackbone.from_config(config, rngs=nnx.Rngs(7), mesh=mesh, shard_axis=shard_axis)
        assert_bit_identical(model, eager(config, nnx.Rngs(7)))
        for path, variable in flat_state(model).items():
            assert variable[...].sharding == rule(variable[...].shape), path
