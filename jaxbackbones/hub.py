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
from pathlib import Path

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

CONFIG_NAME = "config.json"
# In order of preference: safetensors is read without torch and cannot execute code.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def resolve_file(name_or_path: str | os.PathLike, filename: str, *, revision: str | None = None,
                 required: bool = True) -> Path | None:
    """Local path of `filename` in a folder or hub repo; None if it does not exist and is not `required`.

    Raises:
        OSError: the file is required and missing, the repo or revision does not exist, or the hub cannot be
            reached (offline, or `HF_HUB_OFFLINE=1`) and the file is not in the local cache.
    """
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
    """The weight files of a checkpoint: one file, or every shard listed by an index file."""
    for filename in WEIGHT_FILES:
        path = resolve_file(name_or_path, filename, revision=revision, required=False)
        if path is None:
            continue
        if not filename.endswith(".index.json"):
            return [path]
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a valid shard index (no 'weight_map'): {error}") from error
        return [resolve_file(name_or_path, shard, revision=revision) for shard in sorted(set(weight_map.values()))]
    raise OSError(f"{name_or_path} has no weights: looked for {', '.join(WEIGHT_FILES)}")


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
