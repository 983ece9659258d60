"""The `jaxbackbones` command against the offline hub cache: in this process, or in a subprocess where a test needs
another environment."""

import os
import socket

import numpy as np
import pytest
import torch
import transformers
from helpers import randomize_torch_module, run_cli, write_to_hub_cache



def test_extract_offline_falls_back_to_random_weights_and_says_so(tmp_path):
    # An empty cache of its own: other tests put a microsoft/resnet-50 fixture in the session's.
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "JAXBACKBONES_CACHE": str(tmp_path / "converted")}
    result = run_cli("extract", "--out-indices", "0", "-1", env=env)
    assert result.returncode == 0, result.stderr
    assert "NOTE: could not load 'microsoft/resnet-50'" in result.stderr
    assert "HF_HUB_OFFLINE is set" in result.stderr and "RANDOM weights" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 image(s), pixel_values (1, 224, 224, 3) (NHWC)"
    assert lines[2].split()[:5] == ["stem", "(1,", "56,", "56,", "64)"]
    assert lines[3].split()[:5] == ["stage4", "(1,", "7,", "7,", "2048)"]


def test_extract_with_a_cached_checkpoint(tmp_path):
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 1], layer_type="basic")
    randomize_torch_module(transformers.ResNetBackbone(config), seed=2).save_pretrained(tmp_path / "repo")
    transformers.ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.5).save_pretrained(tmp_path / "repo")
    write_to_hub_cache(tmp_path / "repo", "test-org/cli-resnet")

    result = run_cli("extract", "--model", "test-org/cli-resnet", "--out-features", "stem", "stage2",
                     "--save", str(tmp_path / "features.npz"))
    assert result.returncode == 0, result.stderr
    assert "NOTE" not in result.stderr
    assert "1 image(s), pixel_values (1, 64, 64, 3) (NHWC)" in result.stdout
    saved = np.load(tmp_path / "features.npz")
    assert saved["stem"].shape == (1, 16, 16, 8) and saved["stage2"].shape == (1, 8, 8, 24)


def test_convert_verify_and_info(tmp_path):
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 1], out_indices=[1, 2])
    randomize_torch_module(transformers.ResNetForImageClassification(config), seed=4).save_pretrained(tmp_path / "src")
    transformers.ConvNextImageProcessor(size={"shortest_edge": 64}).save_pretrained(tmp_path / "src")
    write_to_hub_cache(tmp_path / "src", "test-org/cli-convert")
    out = tmp_path / "converted"

    result = run_cli("convert", "test-org/cli-convert", str(out), "--verify")
    assert result.returncode == 0, result.stderr
    assert "ignored on purpose (" in result.stdout and "classifier.1.weight" in result.stdout
    assert "OK: worst relative difference" in result.stdout
    for stage in ("stem", "stage1", "stage2"):
        assert any(line.startswith(stage) for line in result.stdout.splitlines())
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.nnx.safetensors",
                                                     "preprocessor_config.json"]

    again = run_cli("convert", "test-org/cli-convert", str(out))
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
    assert run_cli("convert", "test-org/cli-convert", str(out), "--force", "--dtype", "bfloat16",
                   "--verify").returncode == 0

    info = run_cli("info", str(out))
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert lines[0] == "model_type   resnet (native jaxbackbones format)"
    assert lines[2] == "dtype        bfloat16"
    assert lines[-2:] == ["stage1           16         4", "stage2           24         8"]


def test_convert_of_an_unknown_architecture_fails_clearly(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text('{"model_type": "bert"}')
    result = run_cli("convert", str(tmp_path / "src"), str(tmp_path / "out"))
    assert result.returncode != 0
    assert "model_type 'bert', which jaxbackbones does not support" in result.stderr
    assert not (tmp_path / "out").exists()


ROUND_TRIP = {
    "resnet": (transformers.ResNetConfig, transformers.ResNetBackbone,
               dict(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 2], out_indices=[0, 1, 2])),
    "swin": (transformers.SwinConfig, transformers.SwinBackbone,
             dict(embed_dim=8, depths=[2, 1], num_heads=[1, 2], window_size=3, image_size=36, patch_size=2,
                  out_features=["stage1", "stage2"])),
}


@pytest.mark.parametrize("family", sorted(ROUND_TRIP))
def test_convert_verify_export_round_trip_is_bit_exact(family, tmp_path):
    config_class, backbone_class, kwargs = ROUND_TRIP[family]
    original = randomize_torch_module(backbone_class(config_class(**kwargs)).eval(), seed=5)
    original.save_pretrained(tmp_path / "src")
    write_to_hub_cache(tmp_path / "src", f"test-org/round-trip-{family}")

    converted = run_cli("convert", f"test-org/round-trip-{family}", str(tmp_path / "flax"), "--verify")
    assert converted.returncode == 0, converted.stdout + converted.stderr
    assert "OK: worst relative difference" in converted.stdout
    exported = run_cli("export", str(tmp_path / "flax"), str(tmp_path / "torch"))
    assert exported.returncode == 0, exported.stderr

    reloaded = backbone_class.from_pretrained(tmp_path / "torch").eval()
    before, after = original.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys()
    # transformers' SwinBackbone carries SwinModel's final `layernorm`, which its forward never uses; the
    # conversion drops it (reported as ignored), so it comes back freshly initialised.
    unused = {"swin.layernorm.weight", "swin.layernorm.bias"} if family == "swin" else set()
    for key, tensor in before.items():
        if key in unused:
            continue
        if tensor.is_floating_point():
            assert torch.equal(tensor, after[key]), key
    pixels = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 40, 44)).astype(np.float32))
    with torch.no_grad():
        for a, b in zip(original(pixels).feature_maps, reloaded(pixels).feature_maps):
            assert torch.equal(a, b)


def test_export_refuses_a_torch_folder(tmp_path):
    transformers.ResNetConfig().save_pretrained(tmp_path / "src")
    result = run_cli("export", str(tmp_path / "src"), str(tmp_path / "out"))
    assert result.returncode == 1 and "is not a native jaxbackbones folder" in result.stderr


def test_extract_a_folder_with_plot(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for index, size in enumerate([(60, 90), (120, 80), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{index}.png")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    result = run_cli("extract", str(tmp_path / "images"), "--random-init", "--out-indices", "1", "4",
                     "--batch-size", "2", "--plot", str(tmp_path / "grid.png"), "--save", str(tmp_path / "f.npz"))
    assert result.returncode == 0, result.stderr
    assert "NOTE: --random-init" in result.stderr
    assert "3 image(s), pixel_values (3, 224, 224, 3) (NHWC)" in result.stdout
    assert np.load(tmp_path / "f.npz")["stage4"].shape == (3, 7, 7, 2048)
    assert Image.open(tmp_path / "grid.png").size == (160 * 3, 176 * 3)


def test_extract_missing_image_is_an_error(tmp_path):
    result = run_cli("extract", str(tmp_path / "nope.jpg"), "--random-init")
    assert result.returncode == 1 and "nope.jpg is neither an image file nor a folder" in result.stderr


def test_extract_random_init_builds_the_named_architecture():
    result = run_cli("extract", "--model", "microsoft/swin-tiny-patch4-window7-224", "--random-init")
    assert result.returncode == 0, result.stderr
    assert "--random-init; using the microsoft/swin-tiny-patch4-window7-224 architecture with RANDOM" in result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["stage1", "stage2", "stage3", "stage4"]
    assert lines[2].split()[1:5] == ["(1,", "56,", "56,", "96)"] and lines[5].split()[1:5] == ["(1,", "7,", "7,", "768)"]


def test_random_init_knows_timm_names_and_known_repos_offline(tmp_path):
    from jaxbackbones import ResNetConfig, SwinConfig, TimmBackboneConfig
    from jaxbackbones.cli import _architecture
    from jaxbackbones.image_processing import (
        BitImageProcessor,
        ConvNextImageProcessor,
        DINOv3ViTImageProcessor,
        TimmImageProcessor,
        ViTImageProcessor,
    )

    for name in ("resnet50", "resnet50.a1_in1k", "timm/resnet50.a1_in1k"):
        config, processor = _architecture(name, {"out_indices": [1]}, "test")
        assert config == TimmBackboneConfig("resnet50", out_indices=[1]) and isinstance(processor, TimmImageProcessor)
    config, processor = _architecture("swin_base_patch4_window12_384", {}, "test")
    assert config.timm_spec.img_size == (384, 384) and processor.input_size == (3, 384, 384)
    config, processor = _architecture("microsoft/swin-tiny-patch4-window7-224", {}, "test")
    assert config == SwinConfig() and isinstance(processor, ViTImageProcessor) and processor.size == {
        "height": 224, "width": 224}
    config, processor = _architecture("microsoft/resnet-18", {}, "test")
    assert (config.layer_type, config.depths) == ("basic", [2, 2, 2, 2]) and isinstance(processor,
                                                                                     ConvNextImageProcessor)
    config, processor = _architecture("facebook/dinov2-small", {"out_indices": [-1]}, "test")
    assert (config.hidden_size, config.image_size, config.out_features) == (384, 518, ["stage12"])
    assert isinstance(processor, BitImageProcessor) and processor.size == {"shortest_edge": 256}
    config, processor = _architecture("facebook/dinov3-convnext-tiny-pretrain-lvd1689m", {}, "test")
    assert config.model_type == "dinov3_convnext" and isinstance(processor, DINOv3ViTImageProcessor)
    config, processor = _architecture("convnext_tiny", {}, "test")
    assert config == TimmBackboneConfig("convnext_tiny") and processor.crop_pct == 0.875
    # a local folder (or a cached repo) names its architecture in config.json
    ResNetConfig(depths=[1, 1], hidden_sizes=[8, 16], embedding_size=4).save_pretrained(tmp_path / "local")
    transformers.ConvNextImageProcessor().save_pretrained(tmp_path / "local")
    config, _ = _architecture(str(tmp_path / "local"), {}, "test")
    assert config.hidden_sizes == [8, 16]
    with pytest.raises(ValueError, match="cannot know the architecture of 'someone/mystery-net'"):
        _architecture("someone/mystery-net", {}, "test")


def test_extract_of_an_unknown_architecture_says_so_and_stops():
    for flags in (["--random-init"], []):
        result = run_cli("extract", "--model", "someone/mystery-net", *flags)
        assert result.returncode == 1 and not result.stdout
        assert "cannot know the architecture of 'someone/mystery-net'" in result.stderr
        assert "jaxbackbones models" in result.stderr


def test_an_unreachable_hub_is_detected_at_once():
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    result = run_cli("extract", "--model", "someone/mystery-net", env=env)
    assert result.returncode == 1
    assert f"the hub (http://127.0.0.1:{port}) cannot be reached" in result.stderr
    assert "connect to the internet" in result.stderr and "HF_HUB_OFFLINE=1" in result.stderr
    assert "Retrying" not in result.stderr  # the hub client's ~25 s of retries were skipped


def test_models_lists_every_family_and_timm_architecture():
    from jaxbackbones import catalog
    from jaxbackbones.auto import FAMILIES
    from jaxbackbones.models.timm import supported_architectures

    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert {line.split(":")[0] for line in lines if line and not line.startswith(" ")} >= set(FAMILIES)
    names = {line.split()[0] for line in lines if line.startswith("  ")}
    assert names >= set(supported_architectures()) | set(catalog.KNOWN_CHECKPOINTS)
    dinov3 = next(line for line in lines if line.startswith("  facebook/dinov3-convnext-large-pretrain-lvd1689m "))
    assert dinov3.split()[1:3] == ["0:stem", "3/1"] and dinov3.split()[-2:] == ["4:stage4", "1536/32"]
    swin = next(line for line in lines if line.startswith("  microsoft/swin-base-patch4-window12-384"))
    assert swin.split()[1:] == ["0:stem", "128/4", "1:stage1", "128/4", "2:stage2", "256/8", "3:stage3", "512/16",
                                "4:stage4", "1024/32"]
    resnet = next(line for line in lines if line.startswith("  resnet50d "))
    assert resnet.split()[1:3] == ["0:act1", "64/2"] and resnet.split()[-2:] == ["4:layer4", "2048/32"]

    only = run_cli("models", "swin_s3").stdout.splitlines()
    assert {line.split()[0] for line in only if line.startswith("  ")} == {
        "swin_s3_tiny_224", "swin_s3_small_224", "swin_s3_base_224"}
