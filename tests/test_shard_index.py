"""A shard index decides which files are read: only plain file names of its own checkpoint, of its own format.

Each bad index is tried as a local folder and as a hub repo (the HF cache layout, whose snapshot files are
symlinks into the repo's blobs/), through from_pretrained, `jaxbackbones convert` and `info`, and verify; nothing
is written when it fails (no conversion cache entry, no convert output).
"""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from helpers import randomize_torch_module, write_to_hub_cache

from jaxbackbones import AutoBackbone, AutoConfig, AutoImageProcessor, CheckpointError, load_backbone
from jaxbackbones.auto import export_pretrained
from jaxbackbones.cli import main
from jaxbackbones.verify import verify

SMALL = dict(embedding_size=8, hidden_sizes=[16, 24, 32], depths=[1, 2, 1], out_indices=[0, 1, 2, 3])
INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A small ResNet saved in safetensors shards with their index."""
    model = randomize_torch_module(transformers.ResNetBackbone(transformers.ResNetConfig(**SMALL)).eval(), seed=3)
    folder = tmp_path_factory.mktemp("sharded")
    model.save_pretrained(folder, max_shard_size="20KB")
    assert len(list(folder.glob("model-*.safetensors"))) >= 2
    return folder


@pytest.fixture(scope="module")
def bin_sharded(sharded, tmp_path_factory):
    """The same checkpoint as `.bin` shards and `pytorch_model.bin.index.json` (transformers' legacy layout)."""
    import safetensors.torch

    folder = tmp_path_factory.mktemp("bin-sharded")
    shutil.copyfile(sharded / "config.json", folder / "config.json")
    weight_map = {}
    for shard in sorted(sharded.glob("model-*.safetensors")):
        name = shard.name.replace("model-", "pytorch_model-").replace(".safetensors", ".bin")
        tensors = safetensors.torch.load_file(shard)
        torch.save(tensors, folder / name)
        weight_map.update(dict.fromkeys(tensors, name))
    (folder / BIN_INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.fixture
def no_torch_load(monkeypatch):
    """Records every torch.load call, and fails it."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    return calls


def first_key(folder: Path, index=INDEX) -> str:
    return sorted(json.loads((folder / index).read_text())["weight_map"])[0]


def with_entry(source: Path, folder: Path, name, *, index=INDEX) -> Path:
    """A copy of the checkpoint `source` whose index maps its first tensor to the shard `name`."""
    shutil.copytree(source, folder)
    content = json.loads((folder / index).read_text())
    content["weight_map"][first_key(source, index)] = name
    (folder / index).write_text(json.dumps(content))
    return folder


def to_hub(folder: Path, repo_id: str) -> tuple[str, Path]:
    """`folder` as hub repo `repo_id` in the offline cache: (repo id, its snapshot folder)."""
    commit = write_to_hub_cache(folder, repo_id)
    from huggingface_hub import constants

    return repo_id, Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit


def conversion_cache_entries() -> list[str]:
    root = Path(os.environ["JAXBACKBONES_CACHE"])
    return sorted(os.listdir(root)) if root.is_dir() else []


def assert_refused(source, index_path_part: str, entry: str, match: str, tmp_path, capsys):
    """from_pretrained, convert and info all refuse `source` naming the index and the entry; nothing is written."""
    cached_before = conversion_cache_entries()
    with pytest.raises(CheckpointError, match=match) as error:
        AutoBackbone.from_pretrained(source)
    assert index_path_part in str(error.value) and repr(entry) in str(error.value), error.value
    assert conversion_cache_entries() == cached_before

    out_dir = tmp_path / "converted-out"
    assert main(["convert", str(source), str(out_dir)]) == 1
    message = capsys.readouterr().err
    assert index_path_part in message and repr(entry) in message and re.search(match, message), message
    assert not out_dir.exists() and not list(tmp_path.glob(".converted-out*")), "convert left output behind"
    assert conversion_cache_entries() == cached_before
    return message


BAD_NAMES = [
    ("/etc/passwd", "absolute path"),
    ("../../etc/passwd", r"goes up a folder \('..'\)"),
    ("../model-00001-of-00002.safetensors", r"goes up a folder"),
    ("sub/model.safetensors", "not a plain file name"),
    ("", "is empty"),
    ("pytorch_model.bin", r"does not end in \.safetensors"),
]


@pytest.mark.parametrize("name, match", BAD_NAMES, ids=["absolute", "dotdot", "dotdot-real-shard", "subfolder",
                                                        "empty", "bin-in-safetensors-index"])
@pytest.mark.parametrize("where", ["folder", "hub"])
def test_bad_shard_names_are_refused(sharded, name, match, where, tmp_path, capsys, no_torch_load):
    folder = with_entry(sharded, tmp_path / "checkpoint", name)
    if name == "pytorch_model.bin":  # a real torch file is there: it must still not reach torch.load
        torch.save({"x": torch.zeros(1)}, folder / name)
    source = folder if where == "folder" else to_hub(folder, f"test-shards/{where}-{abs(hash(name))}")[0]
    message = assert_refused(source, INDEX, name, match, tmp_path, capsys)
    assert "the shard of tensor" in message
    assert no_torch_load == []
    main(["info", str(source)])
    assert repr(name) in capsys.readouterr().err


def test_a_bin_index_lists_only_bin_shards(bin_sharded, sharded, tmp_path, capsys):
    shard = sorted(sharded.glob("model-*.safetensors"))[0].name
    folder = with_entry(bin_sharded, tmp_path / "checkpoint", shard, index=BIN_INDEX)
    shutil.copyfile(sharded / shard, folder / shard)
    assert_refused(folder, BIN_INDEX, shard, r"does not end in \.bin", tmp_path, capsys)


def test_bin_shards_load(bin_sharded, sharded):
    from jaxbackbones.checkpoint import flat_state

    ours, reference = AutoBackbone.from_pretrained(bin_sharded), AutoBackbone.from_pretrained(sharded)
    for (key, a), (_, b) in zip(flat_state(ours).items(), flat_state(reference).items()):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=key)


@pytest.mark.parametrize("where", ["folder", "hub"])
def test_a_symlink_out_of_the_checkpoint_is_refused(sharded, where, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shard = sorted(sharded.glob("model-*.safetensors"))[0].name
    secret = elsewhere / "secret.safetensors"  # a valid safetensors file: only where it lies is wrong
    shutil.copyfile(sharded / shard, secret)
    folder = with_entry(sharded, tmp_path / "checkpoint", "linked.safetensors")
    if where == "folder":
        (folder / "linked.safetensors").symlink_to(secret)
        source = folder
    else:
        source, snapshot = to_hub(folder, "test-shards/symlink-out")
        (snapshot / "linked.safetensors").symlink_to(secret)
    assert_refused(source, INDEX, "linked.safetensors", "outside the checkpoint", tmp_path, capsys)


def test_a_symlink_into_another_repos_blobs_is_refused(sharded, tmp_path, capsys):
    _, other = to_hub(sharded, "test-shards/other-repo")
    shard = sorted(sharded.glob("model-*.safetensors"))[0].name
    folder = with_entry(sharded, tmp_path / "checkpoint", "linked.safetensors")
    source, snapshot = to_hub(folder, "test-shards/borrows-a-blob")
    (snapshot / "linked.safetensors").symlink_to(os.path.relpath(os.path.realpath(other / shard), snapshot))
    assert_refused(source, INDEX, "linked.safetensors", "outside the checkpoint", tmp_path, capsys)


def test_hub_snapshots_link_into_their_blobs(sharded):
    """The HF cache layout itself: every shard a symlink to ../../blobs/<sha256>, by repo id and as a folder."""
    repo_id, snapshot = to_hub(sharded, "test-shards/legit")
    assert all((snapshot / path.name).is_symlink() for path in sharded.glob("model-*.safetensors"))
    reference = AutoBackbone.from_pretrained(sharded, cache_conversion=False)
    x = np.random.default_rng(0).standard_normal((1, 40, 36, 3)).astype(np.float32)
    want = [np.asarray(m) for m in reference(x).feature_maps]
    for source in (repo_id, snapshot):
        got = [np.asarray(m) for m in AutoBackbone.from_pretrained(source, cache_conversion=False)(x).feature_maps]
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("where", ["folder", "hub"])
def test_a_missing_shard(sharded, where, tmp_path, capsys):
    folder = with_entry(sharded, tmp_path / "checkpoint", "model-00099-of-00099.safetensors")
    if where == "folder":
        assert_refused(folder, INDEX, "model-00099-of-00099.safetensors", "which is not in", tmp_path, capsys)
        return
    repo_id, _ = to_hub(folder, "test-shards/missing")
    with pytest.raises(OSError, match="lists the shard 'model-00099-of-00099.safetensors', which cannot be had"):
        AutoBackbone.from_pretrained(repo_id)
    assert main(["convert", repo_id, str(tmp_path / "out")]) == 1
    assert "model-00099-of-00099.safetensors" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_tensor_listed_twice(sharded, tmp_path, capsys):
    folder = shutil.copytree(sharded, tmp_path / "checkpoint")
    key = first_key(sharded)
    text = (folder / INDEX).read_text()
    # json.loads would keep only the second of the two entries: the index is ambiguous and is refused.
    shard = json.loads(text)["weight_map"][key]
    text = text.replace('"weight_map": {', f'"weight_map": {{\n    "{key}": "{shard}",', 1)
    (folder / INDEX).write_text(text)
    assert_refused(folder, INDEX, key, "twice", tmp_path, capsys)


def test_a_shard_listed_twice_under_two_names(sharded, tmp_path, capsys):
    folder = shutil.copytree(sharded, tmp_path / "checkpoint")
    content = json.loads((folder / INDEX).read_text())
    shard = content["weight_map"][first_key(sharded)]
    (folder / "again.safetensors").symlink_to(shard)  # inside the folder, but the same file as `shard`
    moved = [key for key, name in content["weight_map"].items() if name == shard][-1]
    content["weight_map"][moved] = "again.safetensors"
    (folder / INDEX).write_text(json.dumps(content))
    assert_refused(folder, INDEX, "again.safetensors", "lists one file twice", tmp_path, capsys)


def test_verify_checks_the_source_before_torch_reads_it(sharded, tmp_path, monkeypatch):
    converted = tmp_path / "converted"
    assert main(["convert", str(sharded), str(converted)]) == 0
    bad = with_entry(sharded, tmp_path / "bad", "../../etc/passwd")
    monkeypatch.setattr(transformers.ResNetBackbone, "from_pretrained",
                        lambda *a, **k: pytest.fail("the reference was loaded from an unchecked index"))
    with pytest.raises(CheckpointError, match=r"goes up a folder"):
        verify(str(bad), None, converted)


def test_native_weights_linked_out_are_refused(sharded, tmp_path):
    native = tmp_path / "native"
    AutoBackbone.from_pretrained(sharded, cache_conversion=False).save_pretrained(native)
    elsewhere = tmp_path / "elsewhere.safetensors"
    (native / "model.nnx.safetensors").rename(elsewhere)
    (native / "model.nnx.safetensors").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match="outside the checkpoint"):
        AutoBackbone.from_pretrained(native)
    with pytest.raises(CheckpointError, match="outside the checkpoint"):
        export_pretrained(native, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


@pytest.mark.parametrize("name", ["", None, "  "])
def test_a_name_or_path_is_required(sharded, name, monkeypatch):
    monkeypatch.chdir(sharded)  # a loadable checkpoint in the current folder must not be picked up
    loads = [AutoBackbone.from_pretrained, AutoConfig.from_pretrained, AutoImageProcessor.from_pretrained]
    if name is not None:  # a backbone of None means "none named": the config is then the backbone's own
        loads += [lambda n: load_backbone({"backbone": n, "use_pretrained_backbone": True}),
                  lambda n: load_backbone({"backbone": n})]
    for load in loads:
        with pytest.raises(ValueError, match="a hub repo id or a local folder is required"):
            load(name)
