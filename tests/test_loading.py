"""Loading through the public path: hub cache layout, offline, file formats, and every error a user can hit."""

import dataclasses
import json
import struct

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from helpers import assert_parity, randomize_torch_module, write_sharded_safetensors, write_to_hub_cache

from jaxbackbones import AutoBackbone, AutoConfig, CheckpointError, CheckpointMismatchError
from jaxbackbones.checkpoint import flat_state, iter_checkpoint, read_safetensors
from jaxbackbones.convert import hf_swin

SMALL = dict(embedding_size=8, hidden_sizes=[16, 24, 32], depths=[1, 2, 1], out_indices=[0, 1, 2, 3])


@pytest.fixture(scope="module")
def torch_model():
    config = transformers.ResNetConfig(**SMALL)
    return randomize_torch_module(transformers.ResNetBackbone(config).eval(), seed=7)


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(1).standard_normal((2, 3, 45, 50)).astype(np.float32)


def reference_maps(model, pixels, **kwargs):
    with torch.no_grad():
        return [m.numpy() for m in model(torch.from_numpy(pixels), **kwargs).feature_maps]


def assert_loaded_matches(model, reference, pixels):
    outputs = model(jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    assert len(outputs.feature_maps) == len(reference)
    for ref, ours in zip(reference, outputs.feature_maps):
        assert_parity(ref, np.asarray(ours).transpose(0, 3, 1, 2))


def test_safetensors_by_repo_id_offline(torch_model, pixels, tmp_path):
    torch_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    write_to_hub_cache(tmp_path, "test-org/resnet-safetensors")

    model = AutoBackbone.from_pretrained("test-org/resnet-safetensors")
    assert model.out_indices == [0, 1, 2, 3]
    assert_loaded_matches(model, reference_maps(torch_model, pixels), pixels)

    # the caller's selection overrides the saved one, with negative indices
    model = AutoBackbone.from_pretrained("test-org/resnet-safetensors", out_indices=(-2, -1))
    assert model.out_features == ["stage2", "stage3"]
    assert_loaded_matches(model, reference_maps(torch_model, pixels)[2:], pixels)

    model = AutoBackbone.from_pretrained("test-org/resnet-safetensors", out_features=["stem"],
                                         data_format="channels_first")
    outputs = model(jnp.asarray(pixels))
    assert_parity(reference_maps(torch_model, pixels)[0], np.asarray(outputs.feature_maps[0]))


def test_torch_bin_checkpoint(torch_model, pixels, tmp_path):
    torch_model.config.save_pretrained(tmp_path)
    torch.save(torch_model.state_dict(), tmp_path / "pytorch_model.bin")
    write_to_hub_cache(tmp_path, "test-org/resnet-bin")
    model = AutoBackbone.from_pretrained("test-org/resnet-bin")
    assert_loaded_matches(model, reference_maps(torch_model, pixels), pixels)


def test_sharded_safetensors(torch_model, pixels, tmp_path):
    torch_model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    write_to_hub_cache(tmp_path, "test-org/resnet-sharded")
    model = AutoBackbone.from_pretrained("test-org/resnet-sharded")
    assert_loaded_matches(model, reference_maps(torch_model, pixels), pixels)


def test_classification_checkpoint_drops_the_head(torch_model, pixels, tmp_path):
    config = transformers.ResNetConfig(**SMALL, num_labels=5)
    classifier = transformers.ResNetForImageClassification(config).eval()
    classifier.resnet.load_state_dict({k: v for k, v in torch_model.state_dict().items()})
    randomize_torch_module(classifier.classifier, seed=3)
    classifier.save_pretrained(tmp_path)
    write_to_hub_cache(tmp_path, "test-org/resnet-classifier")

    model, report = AutoBackbone.from_pretrained("test-org/resnet-classifier", output_loading_info=True)
    assert report.ok and not report.initialized
    assert sorted(k for k in report.ignored if k.startswith("classifier")) == ["classifier.1.bias",
                                                                               "classifier.1.weight"]
    assert_loaded_matches(model, reference_maps(torch_model, pixels), pixels)


def test_local_folder_and_resnet_model_layout(torch_model, pixels, tmp_path):
    plain = transformers.ResNetModel(torch_model.config).eval()
    plain.load_state_dict(torch_model.state_dict())
    plain.save_pretrained(tmp_path)
    model = AutoBackbone.from_pretrained(tmp_path)
    assert_loaded_matches(model, reference_maps(torch_model, pixels), pixels)


def test_revisions_pick_the_snapshot(torch_model, pixels, tmp_path):
    torch_model.save_pretrained(tmp_path / "v1")
    old_commit = write_to_hub_cache(tmp_path / "v1", "test-org/resnet-revisions")
    newer = randomize_torch_module(transformers.ResNetBackbone(torch_model.config).eval(), seed=99)
    newer.save_pretrained(tmp_path / "v2")
    write_to_hub_cache(tmp_path / "v2", "test-org/resnet-revisions")

    assert_loaded_matches(AutoBackbone.from_pretrained("test-org/resnet-revisions"),
                          reference_maps(newer, pixels), pixels)
    assert_loaded_matches(AutoBackbone.from_pretrained("test-org/resnet-revisions", revision=old_commit),
                          reference_maps(torch_model, pixels), pixels)
    with pytest.raises(OSError, match="revision 'v9'.*not in the local cache.*HF_HUB_OFFLINE"):
        AutoBackbone.from_pretrained("test-org/resnet-revisions", revision="v9")


def test_offline_and_not_cached_says_so():
    with pytest.raises(OSError, match="config.json of 'nobody/not-cached' is not in the local cache.*HF_HUB_OFFLINE"):
        AutoBackbone.from_pretrained("nobody/not-cached")
    with pytest.raises(OSError, match="neither a local folder nor a hub repo id"):
        AutoConfig.from_pretrained("a/b/c")


def test_folder_without_weights(tmp_path, torch_model):
    torch_model.config.save_pretrained(tmp_path)
    with pytest.raises(OSError, match="has no weights: looked for model.safetensors"):
        AutoBackbone.from_pretrained(tmp_path)


def save_state_dict(folder, config, tensors):
    config.save_pretrained(folder)
    safetensors.numpy.save_file(tensors, folder / "model.safetensors")


def numpy_state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_truncated_safetensors(tmp_path, torch_model):
    torch_model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"model.safetensors is truncated: tensor .* ends at byte"):
        AutoBackbone.from_pretrained(tmp_path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="too short for a safetensors header"):
        AutoBackbone.from_pretrained(tmp_path)
    path.write_bytes(data[:200])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        AutoBackbone.from_pretrained(tmp_path)


def test_corrupt_safetensors(tmp_path, torch_model):
    torch_model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    (header_size,) = struct.unpack("<Q", data[:8])
    data[8:12] = b"\xff\xfe{{"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="header is not UTF-8"):
        AutoBackbone.from_pretrained(tmp_path)
    data[8:12] = b"{{{{"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        AutoBackbone.from_pretrained(tmp_path)

    header = {"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 8]}}
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(64))
    with pytest.raises(CheckpointError, match=r"tensor 'x' of shape \(4, 4\) and dtype F32 needs 64 bytes, its byte "
                                              r"range \[0, 8\) has 8"):
        read_safetensors(path)


def test_bin_with_code_is_refused(tmp_path, torch_model):
    torch_model.config.save_pretrained(tmp_path)
    torch.save({"weights": torch.zeros(2), "extra": object()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="holds more than plain tensors and is refused"):
        AutoBackbone.from_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(CheckpointError, match="pytorch_model.bin is truncated or corrupt"):
        AutoBackbone.from_pretrained(tmp_path)


def test_checkpoint_of_another_architecture(tmp_path):
    swin = transformers.SwinBackbone(transformers.SwinConfig(embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                                                             image_size=32, window_size=2))
    save_state_dict(tmp_path, transformers.ResNetConfig(**SMALL), numpy_state(swin))
    with pytest.raises(CheckpointMismatchError) as error:
        AutoBackbone.from_pretrained(tmp_path)
    message = str(error.value)
    assert "no key matched at all: a checkpoint of another architecture" in message
    assert "missing from the checkpoint (" in message and "stages.0.blocks.0.bns.0.bias" in message
    assert "unexpected in the checkpoint (" in message and "layernorm_before.weight" in message


def test_mismatched_shapes_are_named(tmp_path, torch_model):
    save_state_dict(tmp_path, transformers.ResNetConfig(**{**SMALL, "embedding_size": 12}), numpy_state(torch_model))
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches .*embedder\.embedder\.convolution\.weight "
                                                      r"-> stem\.conv\.kernel: checkpoint \(7, 7, 3, 8\) vs model "
                                                      r"\(7, 7, 3, 12\)"):
        AutoBackbone.from_pretrained(tmp_path)


def test_missing_and_unexpected_keys_are_named(tmp_path, torch_model):
    tensors = numpy_state(torch_model)
    del tensors["encoder.stages.1.layers.1.layer.1.normalization.running_var"]
    tensors["encoder.stages.9.layers.0.layer.0.convolution.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    tensors["something.else"] = np.zeros(1, np.float32)
    save_state_dict(tmp_path, transformers.ResNetConfig(**SMALL), tensors)
    with pytest.raises(CheckpointMismatchError) as error:
        AutoBackbone.from_pretrained(tmp_path)
    message = str(error.value)
    assert "missing from the checkpoint (1): stages.1.blocks.1.bns.1.var" in message
    assert "unexpected in the checkpoint (2)" in message
    assert "encoder.stages.9.layers.0.layer.0.convolution.weight" in message and "something.else" in message


def test_bfloat16_checkpoint_is_read_without_torch(tmp_path, torch_model, pixels):
    half = transformers.ResNetBackbone(torch_model.config)
    half.load_state_dict(torch_model.state_dict())
    half.to(torch.bfloat16).save_pretrained(tmp_path)
    model = AutoBackbone.from_pretrained(tmp_path)
    reference = [m.float() for m in half.float().eval()(torch.from_numpy(pixels)).feature_maps]
    outputs = model(jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    for ref, ours in zip(reference, outputs.feature_maps):
        assert_parity(ref.detach().numpy(), np.asarray(ours).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------------------------------
# Sharded checkpoints, read file by file

SWIN = dict(embed_dim=16, depths=[1, 2], num_heads=[1, 2], window_size=4, image_size=32, out_indices=[1, 2])
SPLIT_BLOCK = "encoder.layers.1.blocks.1.attention.self."


@pytest.fixture(scope="module")
def torch_swin():
    return randomize_torch_module(transformers.SwinBackbone(transformers.SwinConfig(**SWIN)).eval(), seed=5)


@pytest.fixture(scope="module")
def swin_tensors(torch_swin, tmp_path_factory):
    """The tensors of `torch_swin` as save_pretrained writes them (the hub's names, not the in-memory ones)."""
    folder = tmp_path_factory.mktemp("swin")
    torch_swin.save_pretrained(folder)
    return {key: np.array(array) for key, array in read_safetensors(folder / "model.safetensors").items()}


def split_shards(keys):
    """Three files, with one attention's query, key and value in different files (so its fusion waits for the last)."""
    keys = sorted(keys)
    split = [SPLIT_BLOCK + f"{role}.weight" for role in ("query", "key", "value")]
    rest = [key for key in keys if key not in split]
    third = len(rest) // 3
    return [rest[:third] + split[:1], rest[third:2 * third] + split[1:2], rest[2 * third:] + split[2:]]


def swin_pixels():
    return np.random.default_rng(2).standard_normal((1, 3, 40, 36)).astype(np.float32)


def test_sharded_checkpoint_with_an_attention_split_across_files(torch_swin, swin_tensors, tmp_path):
    tensors = swin_tensors
    torch_swin.config.save_pretrained(tmp_path / "sharded")
    write_sharded_safetensors(tmp_path / "sharded", tensors, split_shards(tensors))
    write_to_hub_cache(tmp_path / "sharded", "test-org/swin-split")
    model = AutoBackbone.from_pretrained("test-org/swin-split")
    assert_loaded_matches(model, reference_maps(torch_swin, swin_pixels()), swin_pixels())

    torch_swin.save_pretrained(tmp_path / "single")
    single = AutoBackbone.from_pretrained(tmp_path / "single")
    expected = {path: np.asarray(v[...]) for path, v in flat_state(single).items()}
    for path, variable in flat_state(model).items():
        np.testing.assert_array_equal(np.asarray(variable[...]), expected[path], err_msg=path)
    # The cached conversion is the same too.
    cached = AutoBackbone.from_pretrained("test-org/swin-split")
    for path, variable in flat_state(cached).items():
        np.testing.assert_array_equal(np.asarray(variable[...]), expected[path], err_msg=path)


def test_iter_checkpoint_reads_file_by_file_and_keeps_groups_together(swin_tensors, tmp_path):
    tensors = swin_tensors
    shards = split_shards(tensors)
    files = write_sharded_safetensors(tmp_path, tensors, shards)
    parts = list(iter_checkpoint(files, hf_swin.TABLE))
    for part in parts:
        for key, array in part.items():
            np.testing.assert_array_equal(array, tensors[key], err_msg=key)
    assert sorted(key for part in parts for key in part) == sorted(tensors)
    # Per file, the keys prepare takes alone, then one part per attention whose query, key and value are all read.
    groups = [part for part in parts if {hf_swin.prepare_group(key) for key in part} != {None}]
    assert all(len({hf_swin.prepare_group(key) for key in part}) == 1 for part in groups)
    alone = [set(part) for part in parts if part not in groups]
    assert alone == [{key for key in keys if hf_swin.prepare_group(key) is None} for keys in shards]
    split = {SPLIT_BLOCK + f"{role}.weight" for role in ("query", "key", "value")}
    (joined,) = [index for index, part in enumerate(parts) if split & set(part)]
    third_file = next(index for index, part in enumerate(parts) if set(part) == alone[2])
    assert split < set(parts[joined]) and joined > third_file  # prepared once the third file is read
    assert all(len(part) == 6 for part in groups)  # query, key and value, weight and bias
    # A prepare without groups sees the whole checkpoint at once; a table without prepare goes file by file.
    ungrouped = dataclasses.replace(hf_swin.TABLE, prepare_groups=None)
    assert [len(part) for part in iter_checkpoint(files, ungrouped)] == [len(tensors)]
    unprepared = dataclasses.replace(hf_swin.TABLE, prepare=None, prepare_groups=None)
    assert [set(part) for part in iter_checkpoint(files, unprepared)] == [set(keys) for keys in shards]
    # A key in two files is refused.
    safetensors.numpy.save_file({shards[0][0]: tensors[shards[0][0]]}, files[2])
    with pytest.raises(CheckpointError, match=f"{shards[0][0]!r} appears in more than one shard"):
        list(iter_checkpoint(files, hf_swin.TABLE))


def test_sharded_checkpoint_errors_name_keys_of_every_file(torch_swin, swin_tensors, tmp_path):
    tensors = dict(swin_tensors)
    shards = split_shards(tensors)
    missing = shards[0].pop(0)  # from the first file
    del tensors[missing]
    shards[1].append("encoder.layers.7.blocks.0.layernorm_before.weight")  # unexpected, in the second
    tensors[shards[1][-1]] = np.ones(16, np.float32)
    mismatched = shards[2][0]  # misshapen, in the third
    tensors[mismatched] = tensors[mismatched][..., :1]
    torch_swin.config.save_pretrained(tmp_path)
    write_sharded_safetensors(tmp_path, tensors, shards)
    with pytest.raises(CheckpointMismatchError) as error:
        AutoBackbone.from_pretrained(tmp_path)
    message = str(error.value)
    assert "missing from the checkpoint (" in message and "unexpected in the checkpoint (1): " in message
    assert "encoder.layers.7.blocks.0.layernorm_before.weight" in message
    assert f"shape mismatches (1): {mismatched} ->" in message
    assert "model-00001-of-00003.safetensors, " in message and "model-00003-of-00003.safetensors" in message


def test_an_unreachable_hub_is_detected_at_once_and_the_cache_still_serves(tmp_path, monkeypatch, torch_model):
    import socket

    from jaxbackbones import hub

    with socket.socket() as server:  # a listening port answers the probe
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub.hub_unreachable(f"http://127.0.0.1:{server.getsockname()[1]}") is None
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"  # nothing listens there any more
    assert "127.0.0.1" in hub.hub_unreachable(endpoint)

    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub.constants, "ENDPOINT", endpoint)
    torch_model.save_pretrained(tmp_path / "repo")
    write_to_hub_cache(tmp_path / "repo", "test-org/probe-cached")
    assert hub.resolve_file("test-org/probe-cached", "config.json").is_file()  # from the cache, no retries
    with pytest.raises(OSError, match=rf"not in the local cache .* the hub \({endpoint}\) cannot be reached: .*"
                                      r"connect to the internet .*HF_HUB_OFFLINE=1"):
        hub.resolve_file("test-org/probe-missing", "config.json")


def test_every_table_with_a_prepare_reads_checkpoints_file_by_file():
    """A `prepare` without `prepare_groups` makes `iter_checkpoint` hold the whole checkpoint at once."""
    from jaxbackbones.convert import (
        hf_convnext,
        hf_resnet,
        hf_vit,
        timm_convnext,
        timm_resnet,
        timm_swin,
        timm_vit,
    )

    tables = [hf_resnet.TABLE, hf_swin.TABLE, hf_convnext.TABLE, hf_convnext.DINOV3_TABLE, timm_swin.TABLE,
              timm_vit.VIT_TABLE]
    tables += [table(flag) for table in (hf_vit.dinov2_table, hf_vit.dinov3_table, timm_vit.eva_table)
               for flag in (False, True)]
    tables += [timm_resnet.table(deep, avg) for deep in (False, True) for avg in (False, True)]
    tables += [timm_convnext.table(stem, conv_mlp) for stem in timm_convnext.STEM_LAYOUTS
               for conv_mlp in (False, True)]
    for table in tables:
        assert table.prepare is None or table.prepare_groups is not None, table


@pytest.mark.parametrize("family", ["dinov2_with_registers", "dinov3_vit"])
def test_vit_sharded_checkpoint_with_fused_tensors_split_across_files(family, tmp_path):
    """q, k and v (and a gated MLP's gate and up projections) in different files: read file by file, each fusion
    once its last part is read, the same model as from one file."""
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, patch_size=4,
                  image_size=16, num_register_tokens=2)
    if family == "dinov3_vit":
        config, model_class = transformers.DINOv3ViTConfig(**common, use_gated_mlp=True), transformers.DINOv3ViTModel
    else:
        config = transformers.Dinov2WithRegistersConfig(**common, use_swiglu_ffn=True)
        model_class = transformers.Dinov2WithRegistersModel
    torch_model = randomize_torch_module(model_class(config).eval(), seed=3)
    torch_model.save_pretrained(tmp_path / "single")
    tensors = {key: np.array(array) for key, array in
               read_safetensors(tmp_path / "single" / "model.safetensors").items()}
    keys = sorted(tensors)
    shards = [keys[i::3] for i in range(3)]  # neighbours (q, k, v; gate, up) land in different files
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "config.json").write_text((tmp_path / "single" / "config.json").read_text())
    files = write_sharded_safetensors(tmp_path / "sharded", tensors, shards)

    from jaxbackbones.auto import FAMILIES

    table = FAMILIES[family].table_for(AutoConfig.from_pretrained(tmp_path / "single"))
    parts = list(iter_checkpoint(files, table))
    assert len(parts) > 3 and max(len(part) for part in parts) < len(tensors) // 2
    for part in parts:
        fused = {table.prepare_groups(key) for key in part} - {None}
        assert len(fused) <= 1 and (not fused or all(table.prepare_groups(key) for key in part))

    sharded = AutoBackbone.from_pretrained(tmp_path / "sharded")
    single = AutoBackbone.from_pretrained(tmp_path / "single")
    expected = {path: np.asarray(v[...]) for path, v in flat_state(single).items()}
    assert set(flat_state(sharded)) == set(expected)
    for path, variable in flat_state(sharded).items():
        np.testing.assert_array_equal(np.asarray(variable[...]), expected[path], err_msg=path)
