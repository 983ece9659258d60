"""Flax Linen modules for every jaxbackbones backbone, built on `flax.nnx.bridge`.

    module, variables = jaxbackbones.linen.from_pretrained("microsoft/resnet-50", out_indices=[1, 2, 3, 4])
    outputs = module.apply(variables, images)                                  # eval mode: a BackboneOutput
    outputs, updates = module.apply(variables, images, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": key})                      # batch statistics, drop path

`module` is a `LinenBackbone`, a `flax.nnx.bridge.ToLinen` around the NNX backbone that `AutoBackbone` builds for
the config (any family of `auto.FAMILIES`); `variables` holds the NNX model's variables by Linen collection:
`params` (`nnx.Param`) and, for families with BatchNorm, `batch_stats` (`nnx.BatchStat`), nested dicts keyed by the
NNX state path with every key a string (`params["stages"]["0"]["blocks"]["1"]...`), as Linen names submodules.
Every call runs the NNX module itself, so outputs, gradients and statistics updates are the NNX model's, bit for bit.

What `ToLinen` does not do, `LinenBackbone` adds once, for every family:
- `train=True` / `False` switches the NNX module's mode (`.train()` / `.eval()`: batch statistics and their update,
  dropout, drop path and position augmentation; frozen BatchNorms and frozen stages stay as the config says).
- Dropout, drop path and DINOv3's rotary coordinate augmentation draw from Linen's `dropout` rng stream: the NNX
  module is called with `rngs=nnx.Rngs(dropout=self.make_rng("dropout"))` (only when one of them is active: the
  model's `random_layers()`). `dropout_key(key, path)` is that key, so
  `nnx_model(x, rngs=nnx.Rngs(dropout=dropout_key(key, path)))` reproduces `apply(..., rngs={"dropout": key})`.
- Applying builds the module from an `nnx.eval_shape` skeleton (cached per config) filled with `variables`, instead
  of initialising random weights on every call; missing, unexpected or misshapen variables raise `ValueError`.
- An update of a collection that `apply` was not allowed to change (the BatchNorm statistics in train mode without
  `mutable=["batch_stats"]`) raises, as Linen's `nn.BatchNorm` does, instead of being dropped silently.
- `init` stores the freshly initialised variables (statistics included) and does not update them.

Inside a Linen model the backbone is a submodule like any other; `load_variables` puts pretrained variables into the
subtree of a whole model's variables (see the README).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx, traverse_util
from flax.core import FrozenDict, meta
from flax.nnx import bridge
from flax.nnx.variablelib import variable_name_from_type

from .auto import FAMILIES, AutoBackbone
from .initializers import abstract_module

Path = tuple[str, ...]


def _collection(variable: nnx.Variable) -> str:
    """The Linen collection of an NNX variable type (`nnx.Param` -> "params", `nnx.BatchStat` -> "batch_stats")."""
    return variable_name_from_type(type(variable), allow_register=True)


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(jnp.shape(value))


def _linen_path(path) -> Path:
    return tuple(str(key) for key in path)


def to_variables(model: nnx.Module) -> dict[str, dict]:
    """The Linen variables of an NNX backbone: `{collection: nested dict}`, keys the state path as strings."""
    collections: dict[str, dict[Path, Any]] = {}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        collections.setdefault(_collection(variable), {})[_linen_path(path)] = variable.get_value()
    return {name: traverse_util.unflatten_dict(flat) for name, flat in collections.items()}


@functools.lru_cache(maxsize=16)
def _skeleton(nnx_class, args: tuple, kwargs: FrozenDict):
    """(graphdef, abstract state) of the module `nnx_class(*args, **kwargs)` builds: no arrays are made."""
    return nnx.split(abstract_module(lambda: nnx_class(*args, **kwargs, rngs=nnx.Rngs(0))))


def _values(model: nnx.Module) -> dict[tuple, Any]:
    return {tuple(path): variable.get_value() for path, variable in nnx.to_flat_state(nnx.state(model))}


class LinenBackbone(bridge.ToLinen):
    """A jaxbackbones backbone as a Flax Linen module: `nnx.bridge.ToLinen` with train mode, dropout keys and
    checked variables (see the module docstring).

    Build it with `LinenBackbone.for_config(config)`, `from_config` or `from_pretrained`. Call it as the NNX backbone
    is called, plus `train`:

        outputs = module.apply(variables, pixel_values)                        # eval mode
        outputs, updates = module.apply(variables, pixel_values, train=True, mutable=["batch_stats"],
                                        rngs={"dropout": key})

    `pixel_values` and the other arguments (`output_hidden_states`, `output_attentions`) go to the NNX module
    unchanged, and its `BackboneOutput` comes back.
    """

    @classmethod
    def for_config(cls, config, *, dtype=jnp.float32, param_dtype=jnp.float32, data_format: str = "channels_last",
                   name: str | None = None, parent=None) -> LinenBackbone:
        """The Linen module of the backbone `AutoBackbone.from_config(config, ...)` builds."""
        model_type = getattr(config, "model_type", None)
        if model_type not in FAMILIES:
            raise ValueError(f"{type(config).__name__} has model_type {model_type!r}, which jaxbackbones does not "
                             f"support; supported model types: {sorted(FAMILIES)}")
        options = FrozenDict(dtype=dtype, param_dtype=param_dtype, data_format=data_format)
        linen_options = {} if parent is None else {"parent": parent}
        return cls(FAMILIES[model_type].backbone_class, args=(config,), kwargs=options, metadata_fn=None, name=name,
                   **linen_options)

    @property
    def config(self):
        return self.args[0]

    @nn.compact
    def __call__(self, pixel_values, *args, train: bool = False, **kwargs):
        if "rngs" in kwargs:
            raise TypeError("LinenBackbone takes its dropout keys from Linen: pass rngs={'dropout': key} to "
                            "apply, not to the call")
        if self.is_initializing():
            model = self.nnx_class(*self.args, **self.kwargs, rngs=nnx.Rngs(params=self.make_rng("params")))
            self._store(model, _values(model))
        else:
            model = self.to_nnx(self.variables)
        if train:
            model.train()
        else:
            model.eval()
        random_layers = model.random_layers()
        if random_layers:
            if not (self.has_rng("dropout") or self.is_initializing()):
                raise ValueError(f"{type(model).__name__} is in train mode with {', '.join(random_layers)}: pass "
                                 "rngs={'dropout': key} to apply (or train=False)")
            kwargs["rngs"] = nnx.Rngs(dropout=self.make_rng("dropout"))
        before = _values(model)
        outputs = model(pixel_values, *args, **kwargs)
        if not self.is_initializing():
            self._store(model, before)
        return outputs

    def _store(self, model: nnx.Module, before: dict[tuple, Any]) -> None:
        """Put the model's variables into the mutable collections; raise if an immutable one changed."""
        changed: dict[str, int] = {}
        collections: dict[str, dict[Path, Any]] = {}
        for path, variable in nnx.to_flat_state(nnx.state(model)):
            name, value = _collection(variable), variable.get_value()
            collections.setdefault(name, {})[_linen_path(path)] = value
            if value is not before[tuple(path)]:
                changed[name] = changed.get(name, 0) + 1
        for name, flat in collections.items():
            if self.is_mutable_collection(name):
                for key, value in traverse_util.unflatten_dict(flat).items():
                    self.put_variable(name, key, value)
            elif name in changed:
                raise ValueError(
                    f"the call updated {changed[name]} variables of the {name!r} collection (with train=True: the "
                    f"BatchNorm running statistics), which apply may not change; pass mutable=[{name!r}] to apply and "
                    "use the updated variables it returns, or call with train=False"
                )

    def to_nnx(self, variables: Mapping) -> nnx.Module:
        """The NNX backbone holding `variables` (a Linen variables dict of this module), e.g. to `save_pretrained`
        a model trained in Linen. Raises `ValueError` naming missing, unexpected and misshapen variables."""
        graphdef, abstract = _skeleton(self.nnx_class, tuple(self.args), FrozenDict(self.kwargs))
        given = {name: traverse_util.flatten_dict(meta.unbox(dict(tree)))
                 for name, tree in variables.items() if isinstance(tree, Mapping)}
        filled, missing, misshapen, used = [], [], [], set()
        for path, variable in nnx.to_flat_state(abstract):
            name, key = _collection(variable), _linen_path(path)
            value = given.get(name, {}).get(key)
            where = "/".join((name, *key))
            if value is None:
                missing.append(where)
                continue
            used.add((name, key))
            if _shape(value) != tuple(variable.shape):
                misshapen.append(f"{where}: {_shape(value)}, expected {tuple(variable.shape)}")
            filled.append((path, variable.replace(value)))
        owned = {_collection(variable) for _, variable in nnx.to_flat_state(abstract)}
        unexpected = ["/".join((name, *key)) for name in sorted(owned & set(given)) for key in given[name]
                      if (name, key) not in used]
        if missing or unexpected or misshapen:
            problems = [f"{label} ({len(items)}): {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
                        for label, items in (("missing", missing), ("unexpected", unexpected),
                                             ("wrong shape", misshapen)) if items]
            raise ValueError(f"the variables do not fit {self.nnx_class.__name__} ({self.config.model_type}): "
                             + "; ".join(problems))
        return nnx.merge(graphdef, nnx.from_flat_state(filled))


def from_config(config, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32, param_dtype=jnp.float32,
                data_format: str = "channels_last") -> tuple[LinenBackbone, dict]:
    """(module, variables) of the backbone `config` describes, with the random weights
    `AutoBackbone.from_config(config, rngs=rngs, ...)` draws (`module.init(key, x)` draws others, from `key`)."""
    model = AutoBackbone.from_config(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, data_format=data_format)
    module = LinenBackbone.for_config(config, dtype=dtype, param_dtype=param_dtype, data_format=data_format)
    return module, to_variables(model)


def from_pretrained(name_or_path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32,
                    data_format: str = "channels_last", **kwargs):
    """(module, variables) of a pretrained backbone: what `AutoBackbone.from_pretrained(name_or_path, **kwargs)` loads
    (a hub repo id or folder, in any supported layout; `out_indices`, `out_features`, `revision`, training switches,
    `mesh`... as there), as a `LinenBackbone` and its variables. With `output_loading_info=True`, the
    `ConversionReport` comes third."""
    loaded = AutoBackbone.from_pretrained(name_or_path, dtype=dtype, param_dtype=param_dtype, data_format=data_format,
                                          **kwargs)
    model, report = loaded if kwargs.get("output_loading_info") else (loaded, None)
    module = LinenBackbone.for_config(model.config, dtype=dtype, param_dtype=param_dtype, data_format=data_format)
    variables = to_variables(model)
    return (module, variables) if report is None else (module, variables, report)


def load_variables(variables: Mapping, pretrained: Mapping, path: str | Sequence[str] = "backbone") -> dict:
    """`variables` (a whole Linen model's, e.g. from `model.init`) with the subtree at `path` replaced by `pretrained`
    (a backbone's, e.g. from `from_pretrained`), collection by collection. Returns a new dict.

    `path` names the backbone submodule: "backbone", or "encoder/backbone" (a tuple works too). Raises `ValueError`
    if the subtree does not have exactly the pretrained variables' entries and shapes (a different config, or the
    wrong path).
    """
    keys = tuple(path.split("/")) if isinstance(path, str) else tuple(path)
    result = {name: traverse_util.flatten_dict(dict(tree)) if isinstance(tree, Mapping) else tree
              for name, tree in variables.items()}
    for name, tree in pretrained.items():
        target = result.get(name)
        if not isinstance(target, dict):
            raise ValueError(f"the model's variables have no {name!r} collection; the pretrained backbone has one "
                             f"(collections: {sorted(variables)})")
        old = {key[len(keys):]: value for key, value in target.items() if key[:len(keys)] == keys}
        new = traverse_util.flatten_dict(dict(tree))
        if not old:
            raise ValueError(f"the model's {name!r} collection has nothing at {'/'.join(keys)!r}; its top-level "
                             f"entries are {sorted({key[0] for key in target})}")
        missing, unexpected = sorted(set(old) - set(new)), sorted(set(new) - set(old))
        misshapen = [key for key in set(old) & set(new) if _shape(old[key]) != _shape(new[key])]
        if missing or unexpected or misshapen:
            def show(items):
                return ", ".join("/".join(key) for key in items[:5]) + (" ..." if len(items) > 5 else "")
            raise ValueError(
                f"the pretrained {name!r} variables do not fit the model's at {'/'.join(keys)!r}: "
                f"missing {show(missing) or 'none'}; unexpected {show(unexpected) or 'none'}; "
                f"wrong shape {show(sorted(misshapen)) or 'none'} (was the backbone built with the same config?)"
            )
        target.update({keys + key: value for key, value in new.items()})
    return {name: traverse_util.unflatten_dict(tree) if isinstance(tree, dict) else tree
            for name, tree in result.items()}


def init_with_pretrained(model: nn.Module, rngs, *args, pretrained: Mapping[str, Mapping], **kwargs) -> dict:
    """`model.init(rngs, *args, **kwargs)` with the variables of the submodules at the paths of `pretrained`
    (`{"backbone": backbone_variables}`) taken from there, as `load_variables` puts them.

    Runs under `jax.jit`, so the random weights the replaced submodules would draw are never computed (nor their
    forward pass): for a ResNet-50 backbone this is the difference between compiling its whole initialisation and
    compiling the head's.
    """
    def init(rngs, args, pretrained):
        variables = model.init(rngs, *args, **kwargs)
        for path, tree in pretrained.items():
            variables = load_variables(variables, tree, path)
        return variables

    return jax.jit(init)(rngs, args, dict(pretrained))


class _KeyProbe(nn.Module):
    names: tuple[str, ...] = ()
    stream: str = "dropout"

    @nn.compact
    def __call__(self):
        if self.names:
            return _KeyProbe(names=self.names[1:], stream=self.stream, name=self.names[0])()
        return self.make_rng(self.stream)


def dropout_key(key: jax.Array, path: str | Sequence[str] = ()) -> jax.Array:
    """The dropout key a `LinenBackbone` at `path` (() at the top, "backbone" inside a model that names it so) passes
    to its NNX module when `apply` gets `rngs={"dropout": key}`: its first `make_rng("dropout")`.

    `nnx_model(x, rngs=nnx.Rngs(dropout=dropout_key(key, path)))` then draws the same dropout and drop-path masks.
    """
    keys = tuple(path.split("/")) if isinstance(path, str) and path else tuple(path)
    return _KeyProbe(names=keys, stream="dropout").apply({}, rngs={"dropout": key})
