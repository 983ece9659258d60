"""Fine-tuning switches: frozen BatchNorm, frozen stages, gradient checkpointing, and the optimizer filter.

A backbone reads three config fields (written to `config.json` only when set; any of them can also be passed to
`AutoBackbone.from_pretrained` / `from_config`'s config):

- `freeze_batch_norm=True` (ResNet; timm's `freeze_batch_norm_2d` means the same): every BatchNorm always
  normalises with its running statistics and never updates them, in train mode too; its scale and bias get zero
  gradients (as torch's FrozenBatchNorm2d buffers) and are left out of `trainable_filter(model)`. The usual setting
  for detection fine-tuning with small batches (RT-DETR's `freeze_backbone_batch_norms`, detectron2's FrozenBN).
- `freeze_stages=k`: the first `k` entries of `stage_names` are frozen (detectron2's `FREEZE_AT`): `1` freezes the
  stem, `2` the stem and stage1, ... A frozen stage is every parameter its feature map depends on that no
  unfrozen stage owns: for ResNet the stem / the stage's blocks; for Swin the patch embedding (and absolute
  position embedding) / the stage's blocks and the patch merging in front of them, plus the stage's output norm
  (`hidden_states_norms`); for ConvNeXt the patch embedding / the stage's downsampling and blocks, plus its output
  norm (DINOv3-ConvNeXt's stem is the input and owns nothing; its patch embedding belongs to stage1); for ViTs the
  patch embedding, class / register tokens and position embedding / block K (the final norm goes with the last
  stage). Frozen stages run as in eval mode whatever the model's mode: their BatchNorms are frozen (as above), their
  dropout and drop path are off. Their parameters are left out of `trainable_filter`.
- `gradient_checkpointing=True`: every block runs under `nnx.remat`, so its activations are recomputed in the
  backward pass instead of being kept: same outputs and gradients, less memory, about one more forward pass.

`trainable_filter(model)` is an NNX filter for `nnx.Optimizer(model, tx, wrt=...)` and
`nnx.grad(..., argnums=nnx.DiffState(0, ...))`. Frozen parameters then get neither gradients nor optimizer state,
and JAX skips the backward pass through frozen leading stages altogether (nothing upstream of them is
differentiated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from flax import nnx

from .layers import BatchNorm

Path = tuple  # a state path: ("stages", 0, "blocks", 1, "convs", 0, "kernel")


def _under(path: Path, prefixes: Iterable[Path]) -> bool:
    return any(tuple(path[: len(prefix)]) == tuple(prefix) for prefix in prefixes)


def frozen_stage_names(model: nnx.Module) -> list[str]:
    """The stages `config.freeze_stages` freezes: the first k of `stage_names`."""
    return list(model.stage_names[: getattr(model.config, "freeze_stages", 0)])


def frozen_stage_prefixes(model: nnx.Module) -> list[Path]:
    """State-path prefixes of the modules and parameters of the frozen stages (see the module docstring)."""
    names = frozen_stage_names(model)
    if not names:
        return []
    if not hasattr(model, "stage_paths"):
        raise ValueError(f"{type(model).__name__} does not describe its stages (stage_paths), so freeze_stages="
                         f"{len(names)} cannot be applied; use freeze_stages=0")
    paths = model.stage_paths()
    return [prefix for name in names for prefix in paths[name]]


def _freeze_batch_norm(config) -> bool:
    return bool(getattr(config, "freeze_batch_norm", False) or getattr(config, "freeze_batch_norm_2d", False))


def configure(model: nnx.Module) -> nnx.Module:
    """Apply the config's training switches to the module's attributes; the backbones call it when built and on
    `.train()`.

    Sets `gradient_checkpointing` on every module that has the attribute, `frozen` on every BatchNorm
    (`freeze_batch_norm`, or inside a frozen stage), and `deterministic=True` on the dropout and drop-path layers of
    frozen stages. Returns the module.
    """
    config = model.config
    remat = bool(getattr(config, "gradient_checkpointing", False))
    freeze_all = _freeze_batch_norm(config)
    prefixes = frozen_stage_prefixes(model)
    for path, module in nnx.iter_modules(model):
        if module is model:
            continue
        frozen_stage = _under(path, prefixes)
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = remat
        if isinstance(module, BatchNorm):
            module.frozen = freeze_all or frozen_stage
        elif frozen_stage and hasattr(module, "deterministic"):
            module.deterministic = True
    return model


def reconfigure(model: nnx.Module, *, freeze_stages: int | None = None, freeze_batch_norm: bool | None = None,
               gradient_checkpointing: bool | None = None) -> nnx.Module:
    """Change the training switches of a built model (e.g. unfreeze stages as fine-tuning goes on).

    Updates the config and re-applies it. The stages it unfreezes keep their mode's dropout setting from the next
    `.train()` / `.eval()`. Build a new `trainable_filter` and optimizer afterwards: a filter is a snapshot.
    """
    from .configuration import verify_training_fields

    config = model.config
    for name, value in (("freeze_stages", freeze_stages), ("freeze_batch_norm", freeze_batch_norm),
                        ("gradient_checkpointing", gradient_checkpointing)):
        if value is not None:
            setattr(config, name, value)
    verify_training_fields(config)
    return configure(model)


_IS_PARAM = nnx.filterlib.to_predicate(nnx.Param)


@dataclasses.dataclass(frozen=True)
class Trainable:
    """NNX filter: `nnx.Param`s whose state path is not in `frozen`. Hashable, so it can sit in jit's static args."""

    frozen: frozenset

    def __call__(self, path, value) -> bool:
        return _IS_PARAM(path, value) and tuple(path) not in self.frozen

    def __repr__(self) -> str:
        return f"Trainable(<{len(self.frozen)} frozen parameters>)"


def frozen_parameter_paths(model: nnx.Module) -> list[Path]:
    """State paths of the parameters fine-tuning leaves alone: frozen stages, and the scale and bias of frozen
    BatchNorms. `model` is a backbone or any module that holds backbones (a detection model, a classifier)."""
    prefixes = []
    for path, module in nnx.iter_modules(model):
        if isinstance(module, BatchNorm) and module.frozen:
            prefixes.append(tuple(path))
        elif hasattr(module, "stage_paths") and hasattr(module, "stage_names") and hasattr(module, "config"):
            prefixes += [tuple(path) + tuple(prefix) for prefix in frozen_stage_prefixes(module)]
    return [tuple(path) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)) if _under(path, prefixes)]


def trainable_filter(model: nnx.Module) -> Trainable:
    """The filter of the parameters to train, for `nnx.Optimizer(model, tx, wrt=trainable_filter(model))`.

    Excludes frozen stages and frozen BatchNorm affine parameters (and every non-`Param` variable, such as the
    BatchNorm statistics). `model` may be the backbone or a module that contains it (a head's parameters are
    trainable). A snapshot of the model's current freezing: build it after changing the switches.
    """
    return Trainable(frozenset(frozen_parameter_paths(model)))


def count_parameters(model: nnx.Module, wrt=nnx.Param) -> int:
    """Number of scalars in the variables `wrt` selects (a filter such as `trainable_filter(model)`)."""
    return sum(int(variable.size) for _, variable in nnx.to_flat_state(nnx.state(model, wrt)))


def _default_loss(model, x):
    return sum(feature_map.astype("float32").mean() for feature_map in model(x).feature_maps)


def saved_activation_bytes(model: nnx.Module, x, loss_fn=None) -> int:
    """Bytes autodiff keeps from the forward pass for the backward pass of `grad(loss_fn)` with respect to the
    parameters (the residuals of `jax.vjp`: activations, and the weights the backward pass reads).

    Computed abstractly (`jax.eval_shape`: no FLOPs, `x` may be a `jax.ShapeDtypeStruct`). This is what
    `gradient_checkpointing` reduces, whichever backend; it bounds the activation part of a training step's peak
    memory on GPU and TPU. (XLA:CPU drops rematerialisation when it compiles, so there compiled memory does not
    change.) `loss_fn(model, x)` defaults to the sum of the feature maps' means.
    """
    import jax

    loss_fn = loss_fn or _default_loss
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def residuals(params, rest, x):
        def loss(params, rest):
            module = nnx.merge(graphdef, params, rest)
            return loss_fn(module, x), nnx.state(module)

        _, pullback, _ = jax.vjp(loss, params, rest, has_aux=True)
        return jax.tree.leaves(pullback)

    leaves = jax.eval_shape(residuals, params, rest, x)
    return sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)
