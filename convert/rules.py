"""A small rule engine that maps a torch state dict onto the state of an NNX module, and back.

A `Table` lists `Rule`s: a torch key template, the NNX state path template it fills, and a `Transform` with
both directions. Templates are literal text with `{name}` placeholders (one dotted component each) or
`{name*}` (any remainder); the same placeholders appear on both sides, so every rule reads both ways and
`jaxbackbones export` needs no second table. Keys a table drops on purpose (a classifier head,
`num_batches_tracked`) are `ignore` regexes. Every key and every state entry is accounted for in a
`ConversionReport`: nothing is skipped silently.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import numpy as np
from tqdm.auto import tqdm


@dataclasses.dataclass(frozen=True)
class Transform:
    """A tensor transform and its inverse."""

    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


IDENTITY = Transform(lambda array: array, lambda array: array)
# torch Conv2d weight (out, in, kh, kw) <-> Flax kernel (kh, kw, in, out).
CONV_KERNEL = Transform(lambda array: array.transpose(2, 3, 1, 0), lambda array: array.transpose(3, 2, 0, 1))
# torch Linear weight (out, in) <-> Flax kernel (in, out).
LINEAR_KERNEL = Transform(lambda array: array.T, lambda array: array.T)

_PLACEHOLDER = re.compile(r"\{(\w+)(\*?)\}")


def _compile(template: str) -> re.Pattern:
    pattern, seen, position = [], set(), 0
    for match in _PLACEHOLDER.finditer(template):
        pattern.append(re.escape(template[position:match.start()]))
        name, rest = match.groups()
        if name in seen:
            pattern.append(f"(?P={name})")
        else:
            pattern.append(f"(?P<{name}>{'.+' if rest else '[^.]+'})")
            seen.add(name)
        position = match.end()
    pattern.append(re.escape(template[position:]))
    return re.compile("".join(pattern))


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


@dataclasses.dataclass(frozen=True)
class Rule:
    """torch key template <-> NNX state path template, through `transform`."""

    torch: str
    flax: str
    transform: Transform = IDENTITY

    def __post_init__(self):
        object.__setattr__(self, "_torch_regex", _compile(self.torch))
        object.__setattr__(self, "_flax_regex", _compile(self.flax))

    def to_flax_path(self, key: str) -> str | None:
        match = self._torch_regex.fullmatch(key)
        return _fill(self.flax, match.groupdict()) if match else None

    def to_torch_key(self, path: str) -> str | None:
        match = self._flax_regex.fullmatch(path)
        return _fill(self.torch, match.groupdict()) if match else None


def norm_rules(torch_prefix: str, target: str) -> list[Rule]:
    """A torch LayerNorm (`weight`, `bias`) <-> an NNX LayerNorm (`scale`, `bias`)."""
    return [Rule(f"{torch_prefix}.weight", f"{target}.scale"), Rule(f"{torch_prefix}.bias", f"{target}.bias")]


def linear_rules(torch_prefix: str, target: str, bias: bool = True) -> list[Rule]:
    """A torch Linear <-> an NNX Linear (kernel transposed)."""
    rules = [Rule(f"{torch_prefix}.weight", f"{target}.kernel", LINEAR_KERNEL)]
    return rules + ([Rule(f"{torch_prefix}.bias", f"{target}.bias")] if bias else [])


def conv_rules(torch_prefix: str, target: str, bias: bool = True) -> list[Rule]:
    """A torch Conv2d (OIHW) <-> an NNX Conv (HWIO)."""
    rules = [Rule(f"{torch_prefix}.weight", f"{target}.kernel", CONV_KERNEL)]
    return rules + ([Rule(f"{torch_prefix}.bias", f"{target}.bias")] if bias else [])


def identity_norm(state_dict: dict[str, np.ndarray], name: str, features: int, dtype) -> None:
    """Export placeholder: a norm `name` that is not part of the backbone, as its library initialises it (1, 0)."""
    state_dict[f"{name}.weight"] = np.ones((features,), dtype)
    state_dict[f"{name}.bias"] = np.zeros((features,), dtype)


def zero_linear(state_dict: dict[str, np.ndarray], name: str, in_features: int, out_features: int, dtype) -> None:
    """Export placeholder: a Linear `name` (a classifier) that is not part of the backbone, all zeros."""
    state_dict[f"{name}.weight"] = np.zeros((out_features, in_features), dtype)
    state_dict[f"{name}.bias"] = np.zeros((out_features,), dtype)


@dataclasses.dataclass(frozen=True)
class Table:
    """How one torch layout maps onto one module family.

    rules: the first rule that matches decides; on export the first rule for a path names its torch key,
        so the layout the hub writes comes first.
    ignore: regexes of (prefix-stripped) torch keys dropped on purpose; reported as ignored.
    prefixes: wrappers a checkpoint may nest the model in (`resnet.` of a classification model); stripped.
    allow_missing: (regex, init) pairs: state paths a checkpoint may lack, and how the source library
        initialises them (e.g. `np.ones` for a norm's scale); init takes the shape.
    prepare: torch state dict -> torch state dict, run before the rules (several keys -> one entry).
    prepare_groups: which keys `prepare` must see in one call, for checkpoints converted in parts (a sharded
        checkpoint, file by file): torch key -> the name of its group (None: the key can be prepared alone). Without
        it, `prepare` sees the whole checkpoint at once.
    unprepare: (torch state dict, config) -> torch state dict, run after export (inverse of `prepare`, plus
        keys the layout needs that carry no weights).
    """

    rules: tuple[Rule, ...]
    ignore: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    allow_missing: tuple[tuple[str, Callable[[tuple[int, ...]], np.ndarray]], ...] = ()
    prepare: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    prepare_groups: Callable[[str], str | None] | None = None
    unprepare: Callable[[dict[str, np.ndarray], object], dict[str, np.ndarray]] | None = None


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the module: names missing, unexpected and mismatched entries."""


@dataclasses.dataclass
class ConversionReport:
    """Where every torch key and every module state entry went.

    loaded: state paths filled from the checkpoint.
    missing: state paths the checkpoint did not fill.
    initialized: missing paths the table allows, filled with the source library's initial value (reported,
        not fatal).
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


def _strip_prefix(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    table: Table,
    target_shapes: Mapping[str, tuple[int, ...]],
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], ConversionReport]:
    """Map a torch state dict onto state paths with `table`.

    Args:
        state_dict: torch key -> numpy array (before `table.prepare`).
        table: the layout's rules.
        target_shapes: every state path of the module (dot-joined) -> its shape.
        progress: show a progress bar over the checkpoint's tensors.

    Returns:
        (state path -> converted array, report). Arrays keep the checkpoint's dtype; entries the table allows
        to be missing are filled with its initial values.
    """
    conversion = Conversion(table, target_shapes)
    converted = dict(conversion.convert(state_dict, progress))
    converted.update(conversion.finish())
    return converted, conversion.report


@dataclasses.dataclass
class Conversion:
    """A checkpoint converted in parts (`convert` once per part: a shard file, or the whole state dict), then
    `finish`ed; `report` accounts for every key of every part and every state path."""

    table: Table
    target_shapes: Mapping[str, tuple[int, ...]]
    report: ConversionReport = dataclasses.field(default_factory=ConversionReport)

    def __post_init__(self):
        self._ignore = [re.compile(pattern) for pattern in self.table.ignore]
        self._filled: set[str] = set()

    def convert(self, state_dict: Mapping[str, np.ndarray], progress: bool = False):
        """Yield (state path, converted array) for each key of `state_dict` (after `table.prepare`), one at a time,
        so that each array can be placed and freed before the next is made; keys that do not fit are reported (the
        report is complete once the generator is exhausted)."""
        table, target_shapes, report = self.table, self.target_shapes, self.report
        if table.prepare is not None:
            state_dict = table.prepare(state_dict)
        for key, array in tqdm(state_dict.items(), desc="converting", unit="tensor", disable=not progress):
            name = _strip_prefix(key, table.prefixes)
            if any(regex.fullmatch(name) for regex in self._ignore):
                report.ignored.append(key)
                continue
            rule, path = next(((rule, path) for rule in table.rules if (path := rule.to_flax_path(name))),
                              (None, None))
            if path is None or path not in target_shapes:
                report.unexpected.append(key)
                continue
            if path in self._filled:
                raise CheckpointMismatchError(f"two checkpoint keys map to {path}; the last was {key}")
            try:
                value = rule.transform.to_flax(np.asarray(array))
            except ValueError:  # a tensor of another rank than the rule expects (a norm weight where a kernel belongs)
                report.mismatched.append((key, path, tuple(np.shape(array)), tuple(target_shapes[path])))
                continue
            if tuple(value.shape) != tuple(target_shapes[path]):
                report.mismatched.append((key, path, tuple(value.shape), tuple(target_shapes[path])))
                continue
            self._filled.add(path)
            report.loaded.append(path)
            yield path, value

    def finish(self) -> dict[str, np.ndarray]:
        """After the last part: report the state paths no key filled; return the initial values of those the table
        allows to be missing (state path -> array)."""
        allowed = [(re.compile(pattern), init) for pattern, init in self.table.allow_missing]
        mismatched_paths = {path for _, path, _, _ in self.report.mismatched}
        initialized = {}
        for path, shape in self.target_shapes.items():
            if path in self._filled or path in mismatched_paths:
                continue
            init = next((init for regex, init in allowed if regex.fullmatch(path)), None)
            if init is None:
                self.report.missing.append(path)
            else:
                self.report.initialized.append(path)
                initialized[path] = init(tuple(shape))
        return initialized


def export_state_dict(state: Mapping[str, np.ndarray], table: Table, config, prefix: str = "") -> dict[str, np.ndarray]:
    """The inverse of `convert_state_dict`: state paths -> the table's torch keys (with `prefix`), torch layout.

    Raises `CheckpointMismatchError` naming any path no rule maps back.
    """
    exported: dict[str, np.ndarray] = {}
    unmapped = []
    for path, array in state.items():
        rule, key = next(((rule, key) for rule in table.rules if (key := rule.to_torch_key(path))), (None, None))
        if key is None:
            unmapped.append(path)
            continue
        exported[prefix + key] = rule.transform.to_torch(np.asarray(array))
    if unmapped:
        raise CheckpointMismatchError(f"no rule maps these entries back to the torch layout: {unmapped}")
    return table.unprepare(exported, config) if table.unprepare is not None else exported


def add_num_batches_tracked(state_dict: dict[str, np.ndarray], config=None) -> dict[str, np.ndarray]:
    """torch's BatchNorm keeps an update counter beside its statistics; ours has none, so export writes 0."""
    for key in [key for key in state_dict if key.endswith(".running_mean")]:
        state_dict[key[: -len("running_mean")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return state_dict


def fuse_parts(state_dict: Mapping[str, np.ndarray], pattern: re.Pattern, parts: Mapping[str, int],
               fused: Callable[[re.Match], str]) -> dict[str, np.ndarray]:
    """Concatenate (axis 0) the tensors that several torch keys hold and one of ours holds (q, k and v into qkv).

    `pattern` matches a part's key; its group "part" names the part, which `parts` orders (name -> position); keys
    whose match gives the same `fused(match)` name form a group. A complete group becomes one entry under that
    name; an incomplete one is left as it is, so its keys are reported unexpected and its target missing. Returns a
    new dict in the input's order (the fused entry where its first part was).
    """
    groups: dict[str, dict[int, str]] = {}
    for key in state_dict:
        match = pattern.fullmatch(key)
        if match:
            groups.setdefault(fused(match), {})[parts[match.group("part")]] = key
    complete = {name: roles for name, roles in groups.items() if sorted(roles) == list(range(len(set(parts.values()))))}
    first = {roles[min(roles)]: name for name, roles in complete.items()}
    consumed = {key for roles in complete.values() for key in roles.values()}
    output: dict[str, np.ndarray] = {}
    for key, array in state_dict.items():
        if key in first:
            roles = complete[first[key]]
            output[first[key]] = np.concatenate([np.asarray(state_dict[roles[i]]) for i in sorted(roles)], axis=0)
        elif key not in consumed:
            output[key] = array
    return output


def fused_groups(*fusions: tuple[re.Pattern, Callable[[re.Match], str]]) -> Callable[[str], str | None]:
    """`Table.prepare_groups` of a `prepare` made of `fuse_parts(state_dict, pattern, parts, fused)` calls: a key
    that one of the (pattern, fused) pairs matches is prepared with the other parts of its fused name; any other
    key alone."""

    def group(key: str) -> str | None:
        for pattern, fused in fusions:
            if match := pattern.fullmatch(key):
                return fused(match)
        return None

    return group


def each_key_alone(key: str) -> None:
    """`Table.prepare_groups` of a `prepare` that renames or splits keys one at a time."""
    return None


def split_parts(state_dict: dict[str, np.ndarray], fused: str, parts: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Export's inverse of `fuse_parts`: every key containing `fused` becomes len(parts) keys (the name replaced by
    each part's), its tensor split into equal parts along axis 0."""
    output: dict[str, np.ndarray] = {}
    for key, array in state_dict.items():
        if fused in key:
            for part, piece in zip(parts, np.split(array, len(parts), axis=0)):
                output[key.replace(fused, part)] = piece
        else:
            output[key] = array
    return output
