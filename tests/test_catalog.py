"""jaxbackbones.catalog: architectures known without the network, and the stage listing of `jaxbackbones models`."""

from __future__ import annotations

import pytest
import transformers
from helpers import SMALL_CONFIGS

from jaxbackbones import AutoConfig, catalog
from jaxbackbones.auto import FAMILIES
from jaxbackbones.models.timm import supported_architectures


@pytest.mark.parametrize("family", sorted(SMALL_CONFIGS))
def test_listed_stages_are_the_modules_stages(family):
    """`stages` builds one block per stage, or reads a timm spec: it must agree with the full module."""
    config = SMALL_CONFIGS[family]()
    assert catalog.stages(config) == catalog._traced_stages(config)


def test_every_family_and_timm_architecture_is_listed():
    listing = {model_type: names for model_type, _, names in catalog.models()}
    assert set(listing) == set(FAMILIES)
    assert set(listing["timm_backbone"]) >= set(supported_architectures())
    for model_type, names in listing.items():
        for name in names:
            assert catalog.config_of_listing(model_type, name).model_type == model_type


@pytest.mark.parametrize("name", sorted(catalog.KNOWN_CHECKPOINTS))
def test_known_checkpoints_are_valid_transformers_configs(name):
    """Each row builds our config, and the same values build transformers' config (no misspelt field)."""
    known = catalog.KNOWN_CHECKPOINTS[name]
    ours = catalog.offline_config(name)
    theirs = {"resnet": transformers.ResNetConfig, "swin": transformers.SwinConfig}[known.model_type](**known.config)
    assert ours == AutoConfig.for_model(known.model_type, **{
        key: value for key, value in theirs.to_dict().items() if key in type(ours).defaults})
    processor = catalog.offline_processor(name, ours)
    assert processor.size in ({"shortest_edge": 224}, {"height": 224, "width": 224}, {"height": 384, "width": 384})


def test_timm_names_with_tags_and_repo_ids():
    assert catalog.timm_architecture("timm/resnet50.a1_in1k") == "resnet50"
    assert catalog.timm_architecture("swin_tiny_patch4_window7_224.ms_in1k") == "swin_tiny_patch4_window7_224"
    assert catalog.timm_architecture("someone/resnet50") is None and catalog.timm_architecture("vgg16") is None
    assert catalog.offline_config("microsoft/resnet-50", out_indices=[1, 4]).out_features == ["stage1", "stage4"]
    assert catalog.offline_config("someone/mystery-net") is None
