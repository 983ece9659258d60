"""Linen modules (jaxbackbones.linen): the same outputs, gradients and statistics as the NNX backbones, bit for bit."""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers
from flax import nnx, traverse_util
from helpers import (
    FIXED_INPUT_SIZES,
    SMALL_CONFIGS,
    compiled_as_users_compile,
    fresh_model,
    randomize_torch_module,
    write_to_hub_cache,
)

from jaxbackbones import AutoBackbone, DINOv3ViTConfig, ResNetConfig, SwinConfig
from jaxbackbones import linen as jl

FAMILIES = sorted(SMALL_CONFIGS)


def _images(shape=(2, 32, 32, 3), seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def _flat(tree) -> dict:
    """Linen variables or an NNX state as {"a/0/b": array}."""
    if isinstance(tree, nnx.State):
        return {"/".join(map(str, path)): np.asarray(v.get_value()) for path, v in nnx.to_flat_state(tree)}
    return {"/".join(path): np.asarray(v) for path, v in traverse_util.flatten_dict(tree).items()}


def assert_identical(expected, actual, what=""):
    expected, actual = jax.tree.leaves(expected), jax.tree.leaves(actual)
    assert len(expected) == len(actual), what
    for i, (a, b) in enumerate(zip(expected, actual)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what} leaf {i}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"{what} leaf {i} differs"


def assert_same_flat(expected: dict, actual: dict, what=""):
    assert set(expected) == set(actual), f"{what}: {sorted(set(expected) ^ set(actual))[:5]}"
    for key in expected:
        assert np.array_equal(expected[key], actual[key]), f"{what} {key} differs"


def _nnx_rngs(model, key):
    """The NNX call's keyword for a Linen call with rngs={"dropout": key} (families without dropout take none)."""
    return {"rngs": nnx.Rngs(dropout=jl.dropout_key(key))} if "rngs" in inspect.signature(model).parameters else {}


def _loss(outputs):
    return sum(jnp.mean(jnp.square(feature_map)) for feature_map in outputs.feature_maps)


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_outputs_and_variables_match_nnx(family):
    model = fresh_model(family)
    config = model.config
    module = jl.LinenBackbone.for_config(config)
    variables = jl.to_variables(model)
    assert isinstance(module, nn.Module) and module.config == config
    has_batch_norm = any(kind in family for kind in ("resnet", "hgnet"))
    assert set(variables) == ({"params", "batch_stats"} if has_batch_norm else {"params"})
    assert_same_flat(_flat(nnx.state(model, nnx.Param)), _flat(variables["params"]), "params")

    # Eval mode is deterministic: no rngs needed, none consumed.
    model.eval()
    # odd and non-square (position embeddings resampled), a pixel left at stride 32, where the family allows it
    x = _images((2, *FIXED_INPUT_SIZES.get(family, (41, 35)), 3))
    expected = nnx.jit(lambda model, x: model(x, output_hidden_states=True))(model, x)
    assert_identical(expected, jax.jit(lambda v, x: module.apply(v, x, output_hidden_states=True))(variables, x))

    # init gives the same tree of variables (shapes and dtypes, statistics included).
    initialised = jax.eval_shape(module.init, jax.random.key(7), x)
    assert jax.tree.structure(initialised) == jax.tree.structure(variables)
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(initialised)] == [
        (a.shape, a.dtype) for a in jax.tree.leaves(variables)]


def test_init_draws_the_weights_nnx_draws_from_the_params_key():
    config = ResNetConfig(embedding_size=4, hidden_sizes=[8], depths=[1], layer_type="basic")  # few weights to draw
    module, key = jl.LinenBackbone.for_config(config), jax.random.key(7)
    initialised = jax.jit(module.init)(key, _images())
    drawn = jax.jit(lambda key: jl.to_variables(AutoBackbone.from_config(config, rngs=nnx.Rngs(params=key))))(
        _make_rng(key, "params"))
    assert_identical(drawn, initialised, "init")


def _make_rng(key, stream):
    class Probe(nn.Module):
        @nn.compact
        def __call__(self):
            return self.make_rng(stream)

    return Probe().apply({}, rngs={stream: key})


@pytest.mark.parametrize("family", FAMILIES)
def test_two_sgd_steps_in_linen_equal_nnx(family):
    """Train mode: batch statistics and their update, dropout and drop path from the dropout key, gradients of every
    parameter, and two SGD steps under jit: Linen and NNX agree bit for bit (compiled as users compile them: the
    suite's quick compile flags round the two programs differently)."""
    model = fresh_model(family)  # train mode
    module, variables = jl.LinenBackbone.for_config(model.config), jl.to_variables(model)
    tx = optax.sgd(0.1)
    images = [_images(seed=10 + step) for step in range(2)]
    key = jax.random.key(3)

    @jax.jit
    def linen_step(params, opt_state, batch_stats, x, step):
        def loss_fn(params):
            outputs, updates = module.apply({"params": params, **batch_stats}, x, train=True,
                                            mutable=["batch_stats"], rngs={"dropout": jax.random.fold_in(key, step)})
            return _loss(outputs), (updates, outputs)

        (loss, (updates, outputs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        changes, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, changes), opt_state, updates, loss, grads, outputs

    @nnx.jit
    def nnx_step(model, optimizer, x, dropout_key):
        def loss_fn(model):
            outputs = model(x, **_nnx_rngs(model, dropout_key))
            return _loss(outputs), outputs

        (loss, outputs), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, grads, outputs

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    params, opt_state = variables["params"], tx.init(variables["params"])
    batch_stats = {"batch_stats": variables["batch_stats"]} if "batch_stats" in variables else {}
    linen_step = compiled_as_users_compile(linen_step, params, opt_state, batch_stats, images[0], 0)
    nnx_step = compiled_as_users_compile(nnx_step, model, optimizer, images[0], key)
    for step, x in enumerate(images):
        params, opt_state, batch_stats, linen_loss, linen_grads, linen_outputs = linen_step(
            params, opt_state, batch_stats, x, step)
        nnx_loss, nnx_grads, nnx_outputs = nnx_step(model, optimizer, x, jax.random.fold_in(key, step))
        assert np.array_equal(linen_loss, nnx_loss), (step, float(linen_loss), float(nnx_loss))
        assert_identical(nnx_outputs, linen_outputs, f"step {step} outputs")
        assert_same_flat(_flat(nnx_grads), _flat(linen_grads), f"step {step} gradients")
    final = jl.to_variables(model)
    assert_same_flat(_flat(final["params"]), _flat(params), "parameters after two steps")
    if "batch_stats" in final:
        assert_same_flat(_flat(final["batch_stats"]), _flat(batch_stats["batch_stats"]), "running statistics")
        # the first BatchNorm's running variance moved
        first = next(path for path in _flat(variables["batch_stats"]) if path.endswith("bn/var"))
        assert not np.array_equal(_flat(final["batch_stats"])[first], _flat(variables["batch_stats"])[first])


def test_dropout_key_inside_a_model_and_the_errors_of_train_mode():
    model = fresh_model("swin")  # train mode, drop path 0.2, dropout 0.1
    backbone, variables = jl.LinenBackbone.for_config(model.config), jl.to_variables(model)

    class Wrapper(nn.Module):
        backbone: nn.Module

        @nn.compact
        def __call__(self, x, train=False):
            return self.backbone(x, train=train)

    x, key = _images(), jax.random.key(11)
    wrapped = {"params": {"backbone": variables["params"]}}
    outputs = jax.jit(lambda v, x, key: Wrapper(backbone).apply(v, x, train=True, rngs={"dropout": key}))(
        wrapped, x, key)
    forward = nnx.jit(lambda model, x, key: model(x, rngs=nnx.Rngs(dropout=key)))
    assert_identical(forward(model, x, jl.dropout_key(key, "backbone")), outputs)
    # At the top the key differs, and so do the masks.
    assert not np.array_equal(outputs.feature_maps[-1], forward(model, x, jl.dropout_key(key)).feature_maps[-1])

    with pytest.raises(ValueError, match=r"pass rngs=\{'dropout': key\} to apply"):
        backbone.apply(variables, x, train=True)
    with pytest.raises(TypeError, match="pass rngs=.* to apply, not to the call"):
        Wrapper(backbone).apply(wrapped, x, method=lambda self, x: self.backbone(x, rngs=nnx.Rngs(0)))
    resnet_model = fresh_model("resnet")
    resnet, resnet_variables = jl.LinenBackbone.for_config(resnet_model.config), jl.to_variables(resnet_model)
    with pytest.raises(ValueError, match=r"pass mutable=\['batch_stats'\] to apply"):
        resnet.apply(resnet_variables, x, train=True)


def test_rope_augmentation_alone_draws_from_the_dropout_stream():
    """DINOv3's rotary coordinate augmentation is the only random layer here (no drop path): train mode still takes
    the dropout key, as the NNX model does, and says so without one."""
    config = DINOv3ViTConfig.from_dict(SMALL_CONFIGS["dinov3_vit"]().to_dict(), drop_path_rate=0.0)
    module, variables = jl.LinenBackbone.for_config(config), jl.to_variables(fresh_model("dinov3_vit"))
    model = module.to_nnx(variables)
    model.train()
    assert model.random_layers() == ["RotaryPositions(coordinate augmentation)"]
    x, key = _images(), jax.random.key(5)
    outputs = jax.jit(lambda v, x, key: module.apply(v, x, train=True, rngs={"dropout": key}))(variables, x, key)
    forward = nnx.jit(lambda model, x, key: model(x, rngs=nnx.Rngs(dropout=key)))
    assert_identical(forward(model, x, jl.dropout_key(key)), outputs)
    model.eval()
    assert not np.array_equal(outputs.feature_maps[-1], model(x).feature_maps[-1])  # the positions were augmented

    with pytest.raises(ValueError, match=r"RotaryPositions\(coordinate augmentation\): pass rngs=\{'dropout': key\}"):
        module.apply(variables, x, train=True)
    model.train()
    with pytest.raises(ValueError, match=r"position augmentation \(RotaryPositions.* no rngs were given"):
        model(x)


def test_variables_are_checked_and_convert_back_to_nnx():
    module, variables = jl.from_config(SMALL_CONFIGS["resnet"](), rngs=nnx.Rngs(0))
    assert_same_flat(_flat(nnx.state(fresh_model("resnet"))), _flat(nnx.state(module.to_nnx(variables))))

    params = traverse_util.flatten_dict(variables["params"])
    del params[("stem", "conv", "kernel")]
    params[("stem", "extra")] = jnp.zeros(3)
    params[("stages", "0", "blocks", "0", "convs", "0", "kernel")] = jnp.zeros((1, 1, 8, 5))
    broken = {**variables, "params": traverse_util.unflatten_dict(params)}
    with pytest.raises(ValueError, match=r"missing \(1\): params/stem/conv/kernel; unexpected \(1\): "
                                         r"params/stem/extra; wrong shape \(1\): params/stages/0/blocks/0/convs/0/"
                                         r"kernel: \(1, 1, 8, 5\), expected \(1, 1, 8, 4\)"):
        module.apply(broken, _images())
    with pytest.raises(ValueError, match=r"missing \(\d+\): batch_stats/"):
        module.apply({"params": variables["params"]}, _images())


class Classifier(nn.Module):
    """A user's Linen model: a backbone and a linear head."""

    backbone: nn.Module
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        features = self.backbone(x, train=train).feature_maps[-1]
        return nn.Dense(self.num_classes, name="head")(features.mean(axis=(1, 2)))


def test_pretrained_backbone_in_a_linen_model(tmp_path):
    """from_pretrained through the hub cache, as a submodule: init the whole model, put the pretrained variables
    into its subtree, and the backbone computes what the NNX model loaded from the same repo computes."""
    torch_config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 1],
                                             layer_type="basic")
    randomize_torch_module(transformers.ResNetForImageClassification(torch_config), seed=3).save_pretrained(
        tmp_path / "repo")
    write_to_hub_cache(tmp_path / "repo", "test-org/linen-resnet")

    backbone, pretrained = jl.from_pretrained("test-org/linen-resnet", out_indices=[1, 2])
    reference = AutoBackbone.from_pretrained("test-org/linen-resnet", out_indices=[1, 2])
    assert set(pretrained) == {"params", "batch_stats"}
    x = _images()
    assert_identical(reference(x), backbone.apply(pretrained, x))

    model = Classifier(backbone=backbone, num_classes=5)
    variables = jl.load_variables(jax.jit(model.init)(jax.random.key(0), x), pretrained, "backbone")
    assert_same_flat(_flat(pretrained["params"]), _flat(variables["params"]["backbone"]))
    # the same, without drawing (or compiling) the backbone's random weights
    assert_same_flat(_flat(variables), _flat(jl.init_with_pretrained(model, jax.random.key(0), x,
                                                                       pretrained={"backbone": pretrained})))
    logits = model.apply(variables, x)
    features = reference(x).feature_maps[-1].mean(axis=(1, 2))
    head = variables["params"]["head"]
    np.testing.assert_allclose(logits, features @ head["kernel"] + head["bias"], rtol=1e-6, atol=1e-6)

    # train mode through the whole model: statistics of the backbone subtree update
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert set(updates["batch_stats"]) == {"backbone"}

    with pytest.raises(ValueError, match="nothing at 'encoder'; its top-level entries are \\['backbone', 'head'\\]"):
        jl.load_variables(variables, pretrained, "encoder")
    other = jl.to_variables(nnx.eval_shape(lambda: AutoBackbone.from_config(ResNetConfig(
        embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"))))
    with pytest.raises(ValueError, match="wrong shape .*was the backbone built with the same config"):
        jl.load_variables(variables, other, "backbone")


def test_pretrained_swin_has_no_batch_stats_and_reports_loading(tmp_path):
    torch_config = transformers.SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4,
                                           image_size=32)
    randomize_torch_module(transformers.SwinForImageClassification(torch_config), seed=5).save_pretrained(
        tmp_path / "repo")
    write_to_hub_cache(tmp_path / "repo", "test-org/linen-swin")
    module, variables, report = jl.from_pretrained("test-org/linen-swin", out_indices=[1, 2],
                                                   output_loading_info=True)
    assert set(variables) == {"params"} and report.ok
    x = _images()
    assert_identical(AutoBackbone.from_pretrained("test-org/linen-swin", out_indices=[1, 2])(x),
                     module.apply(variables, x))
    assert isinstance(module.config, SwinConfig)
