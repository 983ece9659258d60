"""Backbone semantics shared by every family: stage selection (`out_features`/`out_indices`) and the output pytree.

The stage-selection rules and their error messages follow `transformers.backbone_utils.BackboneConfigMixin`
exactly, so a config behaves the same whichever library reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx


class BackboneConfigMixin:
    """Adds `stage_names`, `out_features` and `out_indices` to a config, with transformers' semantics.

    A subclass sets `self.stage_names` and then calls `set_output_features_output_indices`.
    If neither is given the last stage is selected; if one is given the other is derived from it;
    if both are given they must name the same stages. Negative indices are kept as given.
    """

    stage_names: list[str]

    def set_output_features_output_indices(self, out_features: list | None, out_indices: list | tuple | None):
        """Set both selections and align whichever was not given with `stage_names`."""
        self._out_features = out_features
        self._out_indices = list(out_indices) if isinstance(out_indices, tuple) else out_indices

        self.verify_out_features_out_indices()

        out_features, out_indices = self._out_features, self._out_indices
        if out_indices is None and out_features is None:
            out_indices = [len(self.stage_names) - 1]
            out_features = [self.stage_names[-1]]
        elif out_indices is None:
            out_indices = [self.stage_names.index(layer) for layer in out_features]
        elif out_features is None:
            out_features = [self.stage_names[idx] for idx in out_indices]

        self._out_features, self._out_indices = out_features, out_indices
        self.verify_out_features_out_indices()

    def verify_out_features_out_indices(self):
        """Raise `ValueError` unless `out_features`/`out_indices` are a valid, ordered selection of `stage_names`."""
        if self.stage_names is None:
            raise ValueError("Stage_names must be set for transformers backbones")

        if self._out_features is not None:
            if not isinstance(self._out_features, list):
                raise ValueError(f"out_features must be a list got {type(self._out_features)}")
            if any(feat not in self.stage_names for feat in self._out_features):
                raise ValueError(
                    f"out_features must be a subset of stage_names: {self.stage_names} got {self._out_features}"
                )
            if len(self._out_features) != len(set(self._out_features)):
                raise ValueError(f"out_features must not contain any duplicates, got {self._out_features}")
            sorted_feats = [feat for feat in self.stage_names if feat in self._out_features]
            if self._out_features != sorted_feats:
                raise ValueError(
                    f"out_features must be in the same order as stage_names, expected {sorted_feats} "
                    f"got {self._out_features}"
                )

        if self._out_indices is not None:
            if not isinstance(self._out_indices, list):
                raise ValueError(f"out_indices must be a list, got {type(self._out_indices)}")
            num_stages = len(self.stage_names)
            # transformers wraps any negative index modulo len(stage_names) here and then crashes with an
            # IndexError when it looks the stage up; an index outside [-len, len) is rejected instead.
            if any(not isinstance(idx, int) or not -num_stages <= idx < num_stages for idx in self._out_indices):
                raise ValueError(
                    f"out_indices must be valid indices for stage_names {self.stage_names}, got {self._out_indices}"
                )
            positive_indices = tuple(idx % num_stages for idx in self._out_indices)
            if len(positive_indices) != len(set(positive_indices)):
                # Word for word what transformers says (its tuple-vs-list check always appends the equivalent).
                raise ValueError(
                    f"out_indices must not contain any duplicates, got {self._out_indices}"
                    f"(equivalent to {positive_indices}))"
                )
            if positive_indices != tuple(sorted(positive_indices)):
                sorted_negative = [
                    idx for _, idx in sorted(zip(positive_indices, self._out_indices), key=lambda pair: pair[0])
                ]
                raise ValueError(
                    f"out_indices must be in the same order as stage_names, expected {sorted_negative} "
                    f"got {self._out_indices}"
                )

        if self._out_features is not None and self._out_indices is not None:
            if len(self._out_features) != len(self._out_indices):
                raise ValueError("out_features and out_indices should have the same length if both are set")
            if self._out_features != [self.stage_names[idx] for idx in self._out_indices]:
                raise ValueError("out_features and out_indices should correspond to the same stages if both are set")

    @property
    def out_features(self) -> list[str]:
        return self._out_features

    @out_features.setter
    def out_features(self, out_features: list[str]):
        self.set_output_features_output_indices(out_features=out_features, out_indices=None)

    def to_dict(self) -> dict:
        """The config's dict with `stage_names`, `out_features` and `out_indices`, as transformers writes them."""
        output = super().to_dict()
        output.update(stage_names=list(self.stage_names), out_features=self.out_features, out_indices=self.out_indices)
        return output

    @property
    def out_indices(self) -> list[int]:
        return self._out_indices

    @out_indices.setter
    def out_indices(self, out_indices: tuple[int, ...] | list[int]):
        out_indices = list(out_indices) if out_indices is not None else out_indices
        self.set_output_features_output_indices(out_features=None, out_indices=out_indices)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BackboneOutput:
    """What every backbone returns; a pytree, so it passes through `jax.jit` and `jax.grad` as is.

    Attributes:
        feature_maps: one array per selected stage, in `out_features` order; (batch, height, width, channels)
            by default, (batch, channels, height, width) with `data_format="channels_first"`.
        hidden_states: with `output_hidden_states=True`, the output of the stem and of every stage, in the
            same layout; otherwise None.
        attentions: with `output_attentions=True` on attention backbones, the attention probabilities of every
            block, (batch * windows, heads, tokens, tokens); otherwise None.
        cls_tokens: DINOv3 with `return_class_token=True`: the class token of every selected stage, (batch,
            channels), as transformers' `DINOv3ViTBackboneOutput.cls_tokens`; otherwise None.
    """

    feature_maps: tuple[jax.Array, ...]
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None
    cls_tokens: tuple[jax.Array, ...] | None = None

    def __getitem__(self, key: str) -> Any:
        """`outputs["feature_maps"]`, as on transformers' ModelOutput."""
        if not isinstance(key, str) or key not in {field.name for field in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


class BackboneModuleMixin:
    """Stage and channel attributes every backbone module exposes, read from its config and `num_features`."""

    config: Any
    num_features: tuple[int, ...]  # channels of every stage
    reductions: tuple[int, ...]  # stride of every stage's map relative to the input

    @property
    def stage_names(self) -> list[str]:
        return self.config.stage_names

    @property
    def out_features(self) -> list[str]:
        return self.config.out_features

    @out_features.setter
    def out_features(self, out_features: list[str]):
        self.config.out_features = out_features

    @property
    def out_indices(self) -> list[int]:
        return self.config.out_indices

    @out_indices.setter
    def out_indices(self, out_indices: list[int] | tuple[int, ...]):
        self.config.out_indices = out_indices

    @property
    def out_feature_channels(self) -> dict[str, int]:
        """Channels of every stage, selected or not."""
        return dict(zip(self.stage_names, self.num_features))

    @property
    def channels(self) -> list[int]:
        """Channels of each selected feature map, in `out_features` order."""
        return [self.out_feature_channels[name] for name in self.out_features]

    def random_layers(self) -> list[str]:
        """The kinds of layer a call would draw random numbers for, from the `dropout` stream of its `rngs` (e.g.
        `["DropPath(2 layers, rate <= 0.2)", "RotaryPositions(coordinate augmentation)"]`): in train mode, active
        dropout and drop path, and DINOv3's rotary coordinate augmentation; none in eval mode (`.eval()`; frozen
        stages turn theirs off)."""
        from .layers import DropPath, RotaryPositions

        rates: dict[str, list[float]] = {}
        augmented = False
        for _, node in nnx.iter_graph(self):
            if isinstance(node, (nnx.Dropout, DropPath)) and node.rate > 0 and not node.deterministic:
                rates.setdefault(type(node).__name__, []).append(node.rate)
            augmented = augmented or (isinstance(node, RotaryPositions) and node.augments)
        active = [f"{name}({len(found)} layer{'s' * (len(found) > 1)}, rate <= {max(found):g})"
                  for name, found in sorted(rates.items())]
        return active + (["RotaryPositions(coordinate augmentation)"] if augmented else [])

    def check_rngs(self, rngs) -> None:
        """`ValueError` when the call gives no `rngs` but the model would draw random numbers (`random_layers`)."""
        if rngs is not None:
            return
        active = self.random_layers()
        if active:
            raise ValueError(
                f"{type(self).__name__} is in train mode with active dropout, stochastic depth or position "
                f"augmentation ({', '.join(active)}) but no rngs were given; pass rngs=nnx.Rngs(dropout=seed), or call "
                ".eval() for deterministic inference"
            )

    def train(self, **attributes):
        """Train mode (dropout, drop path, BatchNorm batch statistics), except where the config freezes: frozen
        BatchNorms and frozen stages stay as in eval mode (see `jaxbackbones.training`)."""
        from .training import configure

        super().train(**attributes)
        configure(self)

    def gradient_checkpointing_enable(self):
        """Recompute every block's activations in the backward pass (`nnx.remat`), as transformers' method does."""
        from .training import reconfigure

        reconfigure(self, gradient_checkpointing=True)

    def gradient_checkpointing_disable(self):
        from .training import reconfigure

        reconfigure(self, gradient_checkpointing=False)

    def save_pretrained(self, save_directory, *, overwrite: bool = True):
        """Write the native format (config.json + model.nnx.safetensors, statistics included), atomically.

        `AutoBackbone.from_pretrained(save_directory)` loads it back bit-exact, without torch.
        """
        from .checkpoint import save_native

        return save_native(self, save_directory, overwrite=overwrite)
