"""End to end: hub checkpoint + preprocessing -> feature maps, ours against the transformers pipeline."""

import numpy as np
import torch
import transformers
from helpers import assert_parity, randomize_torch_module, write_to_hub_cache
from PIL import Image

from jaxbackbones import AutoBackbone, AutoImageProcessor


def test_resnet_pipeline_matches_transformers(tmp_path):
    config = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[32, 48, 64, 96], depths=[1, 1, 2, 1],
                                       out_features=["stage1", "stage2", "stage3", "stage4"])
    torch_model = randomize_torch_module(transformers.ResNetBackbone(config).eval(), seed=11)
    torch_model.save_pretrained(tmp_path)
    transformers.ConvNextImageProcessorPil(size={"shortest_edge": 128}, crop_pct=0.875).save_pretrained(tmp_path)
    write_to_hub_cache(tmp_path, "test-org/pipeline-resnet")

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(180, 240), (300, 170)]]

    their_processor = transformers.AutoImageProcessor.from_pretrained("test-org/pipeline-resnet", backend="pil")
    their_inputs = their_processor(images, return_tensors="pt")
    with torch.no_grad():
        reference = torch_model(**their_inputs).feature_maps

    processor = AutoImageProcessor.from_pretrained("test-org/pipeline-resnet")
    model = AutoBackbone.from_pretrained("test-org/pipeline-resnet")
    outputs = model(**processor(images, return_tensors="jax"))
    assert len(outputs.feature_maps) == 4
    for ref, ours in zip(reference, outputs.feature_maps):
        assert_parity(ref.numpy(), np.asarray(ours).transpose(0, 3, 1, 2))
