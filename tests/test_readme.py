"""The README's Python blocks run, in order, against hub-layout fixtures of the repos they name."""

import json
import os
import re
from pathlib import Path

import pytest
import transformers
from helpers import randomize_torch_module, write_to_hub_cache

README = Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
REPO_ID = re.compile(r"""["']((?:microsoft|timm|facebook|google)/[\w.-]+)["']""")

# What the hub's repos hold, in their own layout: a classification checkpoint and an old-style preprocessor config.
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def _resnet_50(folder):
    model = transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=10))
    randomize_torch_module(model, seed=0).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_pct": 0.875, "do_normalize": True, "do_resize": True, "feature_extractor_type": "ConvNextFeatureExtractor",
        "resample": 3, "size": 224, **IMAGENET}))


def _swin_tiny(folder):
    model = transformers.SwinForImageClassification(transformers.SwinConfig(num_labels=10))
    randomize_torch_module(model, seed=0).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor", "resample": 3,
        "size": 224, **IMAGENET}))


def _convnextv2_tiny(folder):
    config = transformers.ConvNextV2Config(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3], num_labels=10)
    randomize_torch_module(transformers.ConvNextV2ForImageClassification(config), seed=0).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_pct": 0.875, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_processor_type": "ConvNextImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
        "size": {"shortest_edge": 224}, **IMAGENET}))


def _dinov2_small(folder):
    config = transformers.Dinov2Config(hidden_size=384, num_attention_heads=6, image_size=518, patch_size=14)
    randomize_torch_module(transformers.Dinov2Model(config), seed=0).save_pretrained(folder)


def _timm(architecture):
    def build(folder):
        import timm
        from timm.models._hub import save_for_hf

        save_for_hf(randomize_torch_module(timm.create_model(architecture, num_classes=10), seed=0), str(folder))

    return build


FIXTURES = {
    "microsoft/resnet-50": _resnet_50,
    "microsoft/swin-tiny-patch4-window7-224": _swin_tiny,
    "facebook/convnextv2-tiny-1k-224": _convnextv2_tiny,
    "facebook/dinov2-small": _dinov2_small,
    "timm/resnet50.a1_in1k": _timm("resnet50.a1_in1k"),
    "timm/swin_tiny_patch4_window7_224.ms_in1k": _timm("swin_tiny_patch4_window7_224.ms_in1k"),
}


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = BLOCK.findall(README.read_text())
    assert blocks, "the README has no Python blocks"
    code = "\n".join(blocks)
    repos = sorted(set(REPO_ID.findall(code)))
    unknown = [repo for repo in repos if repo not in FIXTURES]
    assert not unknown, f"add a fixture for {unknown} to tests/test_readme.py"
    for repo in repos:
        folder = tmp_path / repo.replace("/", "--")
        folder.mkdir()
        FIXTURES[repo](folder)
        write_to_hub_cache(folder, repo)

    monkeypatch.chdir(README.parent)
    namespace = {"__name__": "readme"}
    for index, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
        except Exception as error:  # noqa: BLE001 - re-raised with the block that failed
            pytest.fail(f"README python block {index + 1} failed: {type(error).__name__}: {error}\n{block}")


def test_readme_names_the_two_commands_and_ci_runs_the_test_command():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", text, re.DOTALL)
    assert len(commands) >= 2
    main_job, test_command = commands[0], commands[1]
    assert "jaxbackbones extract" in main_job
    assert "pytest" in test_command and "--durations=20" in test_command
    assert test_command in (README.parent / ".ci" / "run").read_text()
    assert os.access(README.parent / ".ci" / "run", os.X_OK)
