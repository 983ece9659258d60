"""A small rule engine that maps a torch state dict onto the state of an NNX module.

A table is a list of `Rule`s: a regex over the torch key, the NNX state path it fills (a template that
may use the regex's groups), and a transform of the tensor. Keys a table drops on purpose (a classifier,
`num_batches_tracked`) have `target=None`. Every key and every state entry is accounted for in a
`ConversionReport`: nothing is skipped silently.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm


def identity(array: np.ndarray) -> np.ndarray:
    return array


def conv_kernel(array: np.ndarray) -> np.ndarray:
    """torch Conv2d weight (out, in, kh, kw) -> Flax kernel (kh, kw, in, out)."""
    return array.transpose(2, 3, 1, 0)


def linear_kernel(array: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) -> Flax kernel (in, out)."""
    return array.T


@dataclasses.dataclass(frozen=True)
class Rule:
    """`pattern` (a regex matched against the whole torch key) -> `target` NNX path, via `transform`.

    `target` is expanded with `re.Match.expand`, so it can use `\\1` or `\\g<name>`. `target=None` drops
    the key on purpose; it is then reported as ignored, not unexpected.
    """

    pattern: str
    target: str | None
    transform: Callable[[np.ndarray], np.ndarray] = identity

    def __post_init__(self):
        object.__setattr__(self, "_regex", re.compile(self.pattern))

    def match(self, key: str) -> re.Match | None:
        return self._regex.fullmatch(key)


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the module: names missing, unexpected and mismatched entries."""


@dataclasses.dataclass
class ConversionReport:
    """Where every torch key and every module state entry went.

    loaded: state paths filled from the checkpoint.
    missing: state paths the checkpoint did not fill.
    initialized: missing paths that are allowed to keep their initial value (reported, not fatal).
    unexpected: torch keys that no rule maps, or that map to a path the module does not have.
    mismatched: (torch key, state path, checkpoint shape after transform, expected shape).
    ignored: torch keys dropped on purpose (e.g. a classifier head).
    """

    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    initialized: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, str, tuple, tuple]] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 20) -> str:
        def listing(items):
            shown = ", ".join(map(str, items[:limit]))
            return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

        lines = [f"loaded {len(self.loaded)} arrays"]
        if self.missing:
            lines.append(f"missing from the checkpoint ({len(self.missing)}): {listing(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected in the checkpoint ({len(self.unexpected)}): {listing(self.unexpected)}")
        if self.mismatched:
            rows = [f"{key} -> {path}: checkpoint {src} vs model {dst}" for key, path, src, dst in self.mismatched]
            lines.append(f"shape mismatches ({len(rows)}): {listing(rows)}")
        if self.initialized:
            lines.append(f"newly initialised, not in the checkpoint ({len(self.initialized)}): "
                         f"{listing(self.initialized)}")
        if self.ignored:
            lines.append(f"ignored on purpose ({len(self.ignored)}): {listing(self.ignored)}")
        return "\n".join(lines)

    def raise_if_incomplete(self, source: str = "checkpoint"):
        if not self.ok:
            hint = ""
            if not self.loaded and self.unexpected:
                hint = " (no key matched at all: a checkpoint of another architecture or layout?)"
            raise CheckpointMismatchError(f"{source} does not fit the model{hint}:\n{self.summary()}")


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    rules: Sequence[Rule],
    target_shapes: Mapping[str, tuple[int, ...]],
    allow_missing: Sequence[str] = (),
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], ConversionReport]:
    """Apply `rules` to `state_dict`.

    Args:
        state_dict: torch key -> numpy array.
        rules: the first rule whose pattern matches a key decides its fate.
        target_shapes: every state path of the module (dot-joined) -> its shape.
        allow_missing: regexes of state paths the checkpoint may lack (they keep their initial value).
        progress: show a progress bar over the checkpoint's tensors.

    Returns:
        (state path -> converted array, report). Arrays keep the checkpoint's dtype.
    """
    report = ConversionReport()
    converted: dict[str, np.ndarray] = {}
    for key, array in tqdm(state_dict.items(), desc="converting", unit="tensor", disable=not progress):
        rule = next((rule for rule in rules if rule.match(key)), None)
        if rule is None:
            report.unexpected.append(key)
            continue
        if rule.target is None:
            report.ignored.append(key)
            continue
        path = rule.match(key).expand(rule.target)
        if path not in target_shapes:
            report.unexpected.append(key)
            continue
        if path in converted:
            raise CheckpointMismatchError(f"two checkpoint keys map to {path}; the last was {key}")
        value = rule.transform(np.asarray(array))
        if tuple(value.shape) != tuple(target_shapes[path]):
            report.mismatched.append((key, path, tuple(value.shape), tuple(target_shapes[path])))
            continue
        converted[path] = value
        report.loaded.append(path)

    allowed = [re.compile(pattern) for pattern in allow_missing]
    mismatched_paths = {path for _, path, _, _ in report.mismatched}
    for path in target_shapes:
        if path not in converted and path not in mismatched_paths:
            if any(regex.fullmatch(path) for regex in allowed):
                report.initialized.append(path)
            else:
                report.missing.append(path)
    return converted, report
