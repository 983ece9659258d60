"""Repo id or local folder -> local files.

Everything that touches the Hugging Face hub goes through here. huggingface_hub itself honours
`HF_HUB_OFFLINE`, `HF_HUB_CACHE` and `HF_HOME`; this module turns its exceptions into messages that say
what to do, and picks the weight files of a checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath, PureWindowsPath

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .checkpoint import CheckpointError

CONFIG_NAME = "config.json"
# In order of preference: safetensors is read without torch and cannot execute code.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# A shard index -> the one suffix its shards may have: a safetensors index never leads to torch.load.
SHARD_SUFFIXES = {"model.safetensors.index.json": ".safetensors", "pytorch_model.bin.index.json": ".bin"}


def _require_name(name_or_path) -> None:
    # Path("") is the current folder: an empty name would silently load whatever checkpoint is there.
    if name_or_path is None or not str(name_or_path).strip():
        raise ValueError(f"a hub repo id or a local folder is required, got {name_or_path!r}")


def resolve_file(name_or_path: str | os.PathLike, filename: str, *, revision: str | None = None,
                 required: bool = True) -> Path | None:
    """Local path of `filename` in a folder or hub repo; None if it does not exist and is not `required`.

    Raises:
        OSError: the file is required and missing, the repo or revision does not exist, or the hub cannot be
            reached (offline, or `HF_HUB_OFFLINE=1`) and the file is not in the local cache.
        ValueError: `name_or_path` is None or empty.
    """
    _require_name(name_or_path)
    folder = Path(name_or_path)
    if folder.is_dir():
        path = folder / filename
        if path.is_file():
            return path
        if required:
            raise OSError(f"{folder} has no file named {filename}")
        return None

    repo_id = str(name_or_path)
    if repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise OSError(f"{repo_id!r} is neither a local folder nor a hub repo id of the form 'org/name'")
    unreachable = None if constants.HF_HUB_OFFLINE else hub_unreachable(constants.ENDPOINT)
    try:
        # Without a network the hub client retries for ~25 s before it looks in the cache: go to the cache at once.
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=unreachable is not None))
    except RevisionNotFoundError as error:
        raise OSError(f"revision {revision!r} does not exist in hub repo {repo_id!r}") from error
    except RepositoryNotFoundError as error:
        raise OSError(f"{repo_id!r} is not a local folder and not a hub repo you can access") from error
    except LocalEntryNotFoundError as error:
        if not required:
            return None
        where = f"revision {revision!r} of " if revision else ""
        if constants.HF_HUB_OFFLINE:
            reason = "HF_HUB_OFFLINE is set (unset it to download)"
        else:
            reason = (f"the hub ({constants.ENDPOINT}) cannot be reached: {unreachable or 'the download failed'}; "
                      "connect to the internet (behind a proxy, set HTTPS_PROXY) to download it, or set "
                      "HF_HUB_OFFLINE=1 to use the cache without trying")
        raise OSError(
            f"{filename} of {where}{repo_id!r} is not in the local cache ({constants.HF_HUB_CACHE}) and {reason}. "
            "Download it once while online, or pass a local folder."
        ) from error
    except EntryNotFoundError as error:
        if not required:
            return None
        raise OSError(f"hub repo {repo_id!r} has no file named {filename}") from error


HUB_PROBE_SECONDS = 3.0
HUB_PROBE_RETRY_SECONDS = 60.0  # a failed probe is trusted this long, then asked again (the network may be back)
_probes: dict[tuple[str, float], tuple[float, str | None]] = {}


def hub_unreachable(endpoint: str, timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """None if a TCP connection to the hub `endpoint` (or to the proxy the environment sets for it) opens within
    `timeout` seconds; otherwise why not. A success is remembered for the process, a failure for a minute."""
    asked, answer = _probes.get((endpoint, timeout), (None, None))
    if asked is not None and (answer is None or time.monotonic() - asked < HUB_PROBE_RETRY_SECONDS):
        return answer
    answer = _probe(endpoint, timeout)
    _probes[(endpoint, timeout)] = (time.monotonic(), answer)
    return answer


def _probe(endpoint: str, timeout: float) -> str | None:
    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and host and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname, proxy_url.port or (443 if proxy_url.scheme == "https" else 80)
    outcome: dict[str, str | None] = {}

    def connect():  # in a thread: a name lookup can hang longer than any socket timeout
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["error"] = None
        except OSError as error:
            outcome["error"] = f"{host}:{port}: {error.strerror or error}"

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome.get("error", f"{host}:{port} did not answer within {timeout:g} s")


def load_config_dict(name_or_path: str | os.PathLike, *, revision: str | None = None) -> dict:
    """The parsed `config.json` of a folder or hub repo."""
    return read_json(resolve_file(name_or_path, CONFIG_NAME, revision=revision))


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or a `ValueError` naming the file."""
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def resolve_weight_files(name_or_path: str | os.PathLike, *, revision: str | None = None) -> list[Path]:
    """The weight files of a checkpoint: one file, or every shard listed by an index file.

    Every file must lie in the checkpoint (see `checkpoint_root`), and an index's shards are checked by
    `shard_names` before any is opened: a checkpoint decides which files are read only among its own.

    Raises:
        CheckpointError: an index or a shard name is invalid, a shard of a local folder is missing, or a file
            resolves outside the checkpoint.
        OSError: the checkpoint has no weights, or a hub shard cannot be had (see `resolve_file`).
    """
    for filename in WEIGHT_FILES:
        path = resolve_file(name_or_path, filename, revision=revision, required=False)
        if path is None:
            continue
        if filename not in SHARD_SUFFIXES:
            return [inside_checkpoint(path)]
        index = inside_checkpoint(path)
        local = Path(name_or_path).is_dir()
        shards: dict[Path, str] = {}  # real file -> the name the index gives it
        for name in shard_names(index):
            if local and not (index.parent / name).is_file():
                raise CheckpointError(f"{index} lists the shard {name!r}, which is not in {index.parent}")
            try:
                shard = resolve_file(name_or_path, name, revision=revision)
            except OSError as error:
                raise OSError(f"{index} lists the shard {name!r}, which cannot be had: {error}") from error
            real = Path(os.path.realpath(inside_checkpoint(shard, index=index, entry=name)))
            if real in shards:
                raise CheckpointError(f"{index} lists one file twice: the shards {shards[real]!r} and {name!r} are "
                                      f"both {real}")
            shards[real] = name
        return [index.parent / name for name in shards.values()]
    raise OSError(f"{name_or_path} has no weights: looked for {', '.join(WEIGHT_FILES)}")


def shard_names(index: Path) -> list[str]:
    """The shard file names a `model.safetensors.index.json` or `pytorch_model.bin.index.json` lists, sorted.

    Each must be a plain file name beside the index (not empty, not absolute, no `..`, no folder) with the
    index's suffix (`.safetensors` or `.bin`: a safetensors index never leads to `torch.load`), and no tensor
    may be listed twice. Raises `CheckpointError` naming the index and the entry.
    """
    suffix = SHARD_SUFFIXES[index.name]
    try:
        content = json.loads(index.read_text(), object_pairs_hook=_pairs_without_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{index} is not a valid shard index (not JSON): {error}") from None
    except _DuplicateKey as error:
        raise CheckpointError(f"{index} lists {error.args[0]!r} twice") from None
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} is not a valid shard index: it needs a non-empty 'weight_map' object "
                              "(tensor name -> shard file name)")
    for key, name in weight_map.items():
        problem = _shard_name_problem(name, suffix)
        if problem:
            raise CheckpointError(f"{index}: the shard of tensor {key!r}, {name!r}, {problem}; a shard must be a "
                                  f"plain {suffix} file name in the index's folder")
    return sorted(set(weight_map.values()))


def _shard_name_problem(name, suffix: str) -> str | None:
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a file name"
    if not name.strip():
        return "is empty"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return "is an absolute path"
    parts = PureWindowsPath(name).parts  # split at / and at \\, which is a separator on Windows
    if ".." in parts:
        return "goes up a folder ('..')"
    if len(parts) > 1 or name == "." or "\0" in name:
        return "is not a plain file name"
    if not name.endswith(suffix):
        return f"does not end in {suffix}"
    return None


class _DuplicateKey(Exception):
    pass


def _pairs_without_duplicates(pairs: list[tuple]) -> dict:
    # json.loads keeps the last of repeated keys silently; an index that lists a tensor twice is ambiguous.
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def checkpoint_root(folder: Path) -> Path:
    """The folder a checkpoint's files must resolve into: its own, or for a hub cache snapshot
    (`models--org--name/snapshots/<commit>/`) the repo's cache folder, since a snapshot's files are symlinks into
    its `blobs/` (`huggingface_hub` keeps a repo's pointers under `snapshots/` and their contents in `blobs/`)."""
    if folder.parent.name == "snapshots" and (folder.parent.parent / "blobs").is_dir():
        return folder.parent.parent
    return folder


def inside_checkpoint(path: Path, *, index: Path | None = None, entry: str | None = None) -> Path:
    """`path`, after checking that it resolves (symlinks followed) inside `checkpoint_root` of its folder;
    otherwise `CheckpointError` (naming the `index` and its `entry` when it was listed by one)."""
    root = checkpoint_root(path.parent)
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(os.path.realpath(root)):
        listed = f"{index} lists the shard {entry!r}, but " if index is not None else ""
        raise CheckpointError(f"{listed}{path} is a link to {real}, outside the checkpoint ({root}); copy the "
                              "file into the checkpoint's folder instead of linking to it")
    return path


def snapshot_commit(path: Path) -> str | None:
    """The commit hash of a file resolved from the hub cache (`.../snapshots/<commit>/<file>`), else None."""
    return path.parent.name if path.parent.parent.name == "snapshots" else None


def conversion_cache_dir() -> Path | None:
    """Where converted torch checkpoints are kept: `$JAXBACKBONES_CACHE`, else `$HF_HOME/jaxbackbones`.

    `JAXBACKBONES_CACHE=0` (or `off`, `false`, `none`) disables the cache.
    """
    setting = os.environ.get("JAXBACKBONES_CACHE")
    if setting is not None and setting.strip().lower() in ("", "0", "off", "false", "none"):
        return None
    return Path(setting) if setting else Path(constants.HF_HOME) / "jaxbackbones"
