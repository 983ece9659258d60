"""ViTDet, SAM's image encoder and timm's SAM ViTs: the shared position ops against torch's, feature-map parity with
transformers' VitDetBackbone, SamModel / SamVisionModel (through the hub cache, by repo id) and timm's samvit
features_only models at odd, non-square sizes (windows that leave padding, global blocks, resampled relative and
absolute positions), full-size SAM ViT-B at 1024, SAM's size check and its interpolation option, configs, export,
errors."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import assert_parity, nhwc, randomize_torch_module, state_dict_numpy, write_to_hub_cache

from jaxbackbones import (
    AutoBackbone,
    AutoConfig,
    CheckpointMismatchError,
    SamConfig,
    SamVisionBackbone,
    SamVisionConfig,
    TimmBackbone,
    VitDetBackbone,
    VitDetConfig,
)
from jaxbackbones.auto import FAMILIES, export_pretrained
from jaxbackbones.checkpoint import flat_state, load_converted
from jaxbackbones.layers import linear_resize_matrix, relative_positions, rewrites

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

# windows that leave padding (3 over grids of 5, 7...), a global block, relative positions, a residual block
VITDET_SMALL = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, patch_size=8, image_size=40,
                    pretrain_image_size=32, window_size=3, window_block_indices=[0, 2], residual_block_indices=[1],
                    use_relative_position_embeddings=True, layer_norm_eps=1e-5)
# no relative positions, global blocks only, another activation, patch and channels (transformers cannot build a
# ViTDet without absolute positions: its init dereferences the missing embedding)
VITDET_PLAIN = dict(hidden_size=12, num_hidden_layers=2, num_attention_heads=3, patch_size=4, image_size=24,
                    pretrain_image_size=16, hidden_act="gelu_new", num_channels=2, qkv_bias=False)
SAM_SMALL = dict(hidden_size=16, output_channels=8, num_hidden_layers=3, num_attention_heads=2, image_size=40,
                 patch_size=8, window_size=3, global_attn_indexes=[1], mlp_dim=24)
SAM_STAGES = ["stem", "stage1", "stage2", "stage3", "neck"]
TIMM_SMALL = dict(embed_dim=16, depth=3, num_heads=2, img_size=48, patch_size=8, window_size=4,
                  global_attn_indexes=[1])

forward_all = nnx.jit(lambda model, x: model(x, output_hidden_states=True))
forward_features = nnx.jit(lambda model, x: model(x).feature_maps)


@pytest.fixture(autouse=True)
def _highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def pixels(batch, height, width, channels=3, seed=0):
    return np.random.RandomState(seed).randn(batch, channels, height, width).astype(np.float32)


def save_to_hub(model, tmp_path, repo_id):
    model.save_pretrained(tmp_path / repo_id)
    write_to_hub_cache(tmp_path / repo_id, repo_id)


# ---------------------------------------------------------------------------------------------------------------
# the shared position ops


@pytest.mark.parametrize("sizes", [(27, 127), (127, 27), (5, 9), (13, 7), (7, 7), (3, 1)])
def test_linear_resize_and_relative_positions_match_torch(sizes):
    from transformers.models.vitdet.modeling_vitdet import get_rel_pos

    in_size, out_size = sizes
    x = torch.randn(1, 6, in_size, generator=torch.Generator().manual_seed(in_size))
    expected = torch.nn.functional.interpolate(x, size=out_size, mode="linear")[0].numpy().T
    assert_parity(expected, linear_resize_matrix(in_size, out_size) @ x[0].numpy().T)
    table = torch.randn(in_size, 4, generator=torch.Generator().manual_seed(out_size))
    for q_size in {max((out_size + 1) // 2, 1), (in_size + 1) // 2}:
        assert_parity(get_rel_pos(q_size, q_size, table).numpy(),
                      relative_positions(table.numpy(), q_size, q_size))


# ---------------------------------------------------------------------------------------------------------------
# transformers' ViTDet


@pytest.mark.parametrize("kwargs, sizes", [
    (VITDET_SMALL, [(40, 40), (59, 45), (32, 32)]),  # the config's size, odd non-square, the pretraining size
    (VITDET_PLAIN, [(24, 24), (37, 18)]),
])
def test_vitdet_parity_through_the_hub(kwargs, sizes, tmp_path, hub_cache):
    reference = randomize_torch_module(transformers.VitDetBackbone(transformers.VitDetConfig(**kwargs)).eval(), 1)
    repo = f"test-org/vitdet-{kwargs['hidden_size']}"
    save_to_hub(reference, tmp_path, repo)
    model, report = AutoBackbone.from_pretrained(repo, out_indices=[0, 2], output_loading_info=True)
    assert isinstance(model, VitDetBackbone) and report.ok and not report.ignored and not report.initialized
    model.eval()
    channels = kwargs.get("num_channels", 3)
    for height, width in sizes:
        x = pixels(2, height, width, channels, seed=height)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x), output_hidden_states=True)
        ours = forward_all(model, nhwc(x))
        assert len(ours.hidden_states) == len(expected.hidden_states) == kwargs["num_hidden_layers"] + 1
        for index, (theirs, mine) in enumerate(zip(expected.hidden_states, ours.hidden_states)):
            assert_parity(nhwc(theirs.numpy()), mine, name=f"{height}x{width} stage {index}")
        for index, mine in zip([0, 2], ours.feature_maps, strict=True):
            assert_parity(nhwc(expected.hidden_states[index].numpy()), mine)


def test_vitdet_config_round_trip_and_errors(tmp_path):
    transformers.VitDetConfig(**VITDET_SMALL, id2label={0: "x"}).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, out_indices=[1, 3])
    assert type(config) is VitDetConfig and config.out_features == ["stage1", "stage3"]
    written = json.loads((tmp_path / "config.json").read_text())
    ours = json.loads(config.to_json_string())
    assert all(ours[key] == value for key, value in written.items() if key not in ("out_features", "out_indices"))
    theirs = transformers.VitDetConfig.from_dict(ours)
    assert theirs.window_block_indices == [0, 2] and theirs.out_indices == [1, 3]
    with pytest.raises(ValueError, match="window_block_indices must be a list of block indices"):
        VitDetConfig(num_hidden_layers=2, window_block_indices=[-1])
    with pytest.raises(ValueError, match="square one"):
        VitDetConfig(pretrain_image_size=[224, 160])


# ---------------------------------------------------------------------------------------------------------------
# transformers' SAM


def sam_model(seed=0, **kwargs):
    config = transformers.SamConfig(vision_config={**SAM_SMALL, **kwargs},
                                    prompt_encoder_config=dict(hidden_size=8, image_size=SAM_SMALL["image_size"],
                                                               patch_size=8, mask_input_channels=4),
                                    mask_decoder_config=dict(hidden_size=8, mlp_dim=16, num_attention_heads=2,
                                                             iou_head_hidden_dim=8))
    return randomize_torch_module(transformers.SamModel._from_config(config, attn_implementation="eager").eval(), seed)


@pytest.fixture(scope="module")
def small_sam(tmp_path_factory, hub_cache):
    """A small SamModel (prompt encoder and mask decoder included), saved by save_pretrained, loaded by repo id."""
    reference = sam_model(seed=3)
    save_to_hub(reference, tmp_path_factory.mktemp("sam"), "test-org/sam-small")
    return reference


def test_sam_model_checkpoint_parity(small_sam):
    model, report = AutoBackbone.from_pretrained("test-org/sam-small", out_features=SAM_STAGES,
                                                 output_loading_info=True)
    assert isinstance(model, SamVisionBackbone) and isinstance(model.config, SamConfig) and report.ok
    assert report.ignored and all(key.startswith(("prompt_encoder.", "mask_decoder.", "shared_image_embedding."))
                                  for key in report.ignored)
    assert model.channels == [16, 16, 16, 16, 8]
    model.eval()
    x = pixels(2, 40, 40, seed=5)
    with torch.no_grad():
        expected = small_sam.vision_encoder(torch.from_numpy(x), output_hidden_states=True)
    ours = forward_features(model, nhwc(x))
    references = [*expected.hidden_states, nhwc(expected.last_hidden_state.numpy())]
    for name, theirs, mine in zip(SAM_STAGES, references, ours, strict=True):
        assert_parity(np.asarray(theirs), mine, name=name)
    # the plain attention (GPU and TPU: jax.nn.dot_product_attention with the relative positions as its bias), and
    # the explicit one that returns the attention probabilities (transformers': (windows * heads, T, T))
    with rewrites.override("per_head_attention", False):
        plain = nnx.jit(lambda model, x: model(x).feature_maps)(model, nhwc(x))
    for name, theirs, mine in zip(SAM_STAGES, references, plain, strict=True):
        assert_parity(np.asarray(theirs), mine, name=f"plain attention {name}")
    with torch.no_grad():
        attentions = small_sam.vision_encoder(torch.from_numpy(x), output_attentions=True).attentions
    ours = model(nhwc(x), output_attentions=True).attentions
    for theirs, mine in zip(attentions, ours, strict=True):
        assert_parity(theirs.numpy(), np.asarray(mine).reshape(theirs.shape))
    # the default selection is the image embedding, SamModel's `get_image_embeddings`
    default = AutoBackbone.from_pretrained("test-org/sam-small")
    default.eval()
    assert default.out_features == ["neck"]
    with torch.no_grad():
        embedding = small_sam.get_image_embeddings(torch.from_numpy(x)).numpy()
    assert_parity(nhwc(embedding), forward_features(default, nhwc(x))[0])


def test_convert_verify_on_a_sam_repo(small_sam, tmp_path, capsys):
    from jaxbackbones import cli

    assert cli.main(["convert", "test-org/sam-small", str(tmp_path / "native"), "--verify"]) == 0
    output = capsys.readouterr().out
    assert "OK: worst relative difference" in output and "neck" in output and "stage3" in output
    assert cli.main(["info", str(tmp_path / "native")]) == 0
    assert "model_type   sam" in capsys.readouterr().out


def test_sam_refuses_other_sizes_and_interpolates_as_timm_on_request(small_sam):
    from timm.layers import resample_abs_pos_embed_nhwc

    model = AutoBackbone.from_pretrained("test-org/sam-small")
    with pytest.raises(ValueError, match=r"Input image size \(48\*40\) doesn't match model \(40\*40\)"):
        model(nhwc(pixels(1, 48, 40)))
    with pytest.raises(ValueError, match=r"doesn't match model"):
        small_sam.vision_encoder(torch.from_numpy(pixels(1, 48, 40)))
    model = AutoBackbone.from_pretrained("test-org/sam-small", interpolate_pos_encoding=True,
                                         out_features=SAM_STAGES)
    model.eval()
    assert json.loads(model.config.to_json_string())["interpolate_pos_encoding"] is True
    for height, width in [(56, 72), (24, 32)]:
        # the reference: transformers' encoder with timm's resampling of its position embedding (its global blocks
        # resample their relative position tables themselves)
        encoder = transformers.SamVisionModel._from_config(small_sam.config.vision_config,
                                                           attn_implementation="eager").eval()
        encoder.vision_encoder.load_state_dict(small_sam.vision_encoder.state_dict())
        with torch.no_grad():
            encoder.vision_encoder.pos_embed.data = resample_abs_pos_embed_nhwc(
                encoder.vision_encoder.pos_embed.data, [height // 8, width // 8])
        encoder.vision_encoder.patch_embed.image_size = (height, width)
        x = pixels(1, height, width, seed=height)
        with torch.no_grad():
            expected = encoder(torch.from_numpy(x), output_hidden_states=True)
        references = [*expected.hidden_states, nhwc(expected.last_hidden_state.numpy())]
        for name, theirs, mine in zip(SAM_STAGES, references, forward_features(model, nhwc(x)), strict=True):
            assert_parity(np.asarray(theirs), mine, name=f"{height}x{width} {name}")


def test_sam_vision_model_checkpoint_and_export_round_trip(tmp_path, hub_cache):
    vision = transformers.SamVisionConfig(**{**SAM_SMALL, "use_abs_pos": False})
    reference = randomize_torch_module(
        transformers.SamVisionModel._from_config(vision, attn_implementation="eager").eval(), 4)
    save_to_hub(reference, tmp_path, "test-org/sam-vision")
    model, report = AutoBackbone.from_pretrained("test-org/sam-vision", output_loading_info=True)
    assert type(model.config) is SamVisionConfig and report.ok and not report.ignored
    model.eval()
    x = pixels(1, 40, 40, seed=6)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).last_hidden_state.numpy()
    assert_parity(nhwc(expected), forward_features(model, nhwc(x))[0])
    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    reloaded = transformers.SamVisionModel.from_pretrained(tmp_path / "torch").eval()
    for key, tensor in reference.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[key]), key


def test_sam_config_round_trip_and_export(small_sam, tmp_path):
    small_sam.config.save_pretrained(tmp_path / "config")
    written = json.loads((tmp_path / "config" / "config.json").read_text())
    config = AutoConfig.from_pretrained(tmp_path / "config", out_indices=[1, -1])
    assert type(config) is SamConfig and config.hidden_size == 16 and config.out_features == ["stage1", "neck"]
    ours = json.loads(config.to_json_string())
    assert ours["prompt_encoder_config"] == written["prompt_encoder_config"]
    assert ours["mask_decoder_config"] == written["mask_decoder_config"]
    assert all(ours["vision_config"][key] == value for key, value in written["vision_config"].items()
               if key not in ("model_type",))
    theirs = transformers.SamConfig.from_dict(ours)
    assert theirs.vision_config.global_attn_indexes == [1] and theirs.vision_config.mlp_dim == 24
    assert SamConfig.from_dict(ours) == config
    assert SamConfig(hidden_size=32, num_attention_heads=4).to_dict()["vision_config"]["hidden_size"] == 32
    # export writes the encoder under vision_encoder. as SamModel loads it, bit for bit
    model = AutoBackbone.from_pretrained("test-org/sam-small")
    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "torch")
    assert json.loads((tmp_path / "torch" / "config.json").read_text())["architectures"] == ["SamModel"]
    reloaded = transformers.SamModel.from_pretrained(tmp_path / "torch").eval()
    for key, tensor in small_sam.vision_encoder.state_dict().items():
        assert torch.equal(tensor, reloaded.vision_encoder.state_dict()[key]), key
    with pytest.raises(ValueError, match="global_attn_indexes must be a list of block indices"):
        SamConfig(global_attn_indexes=["2"])
    with pytest.raises(ValueError, match="interpolate_pos_encoding must be True or False"):
        SamConfig(interpolate_pos_encoding="yes")


def test_wrong_checkpoints_are_reported():
    reference = sam_model(seed=7)
    state = state_dict_numpy(reference)
    config = SamConfig(**SAM_SMALL)
    table = FAMILIES["sam"].table_for(config)
    missing = {key: value for key, value in state.items() if "layers.1.attn.rel_pos_h" not in key}
    with pytest.raises(CheckpointMismatchError, match=r"missing(.|\n)*blocks\.1\.attn\.rel_pos_h"):
        load_converted(lambda: SamVisionBackbone(config, rngs=nnx.Rngs(0)), missing, table)
    other = SamConfig(**{**SAM_SMALL, "window_size": 4})  # windowed blocks' tables of another size
    with pytest.raises(CheckpointMismatchError, match=r"layers\.0\.attn\.rel_pos_h -> blocks\.0\.attn\.rel_pos_h: "
                                                      r"checkpoint \(5, 8\) vs model \(7, 8\)"):
        load_converted(lambda: SamVisionBackbone(other, rngs=nnx.Rngs(0)), state, table)


# ---------------------------------------------------------------------------------------------------------------
# full-size SAM ViT-B at 1024


def test_full_size_sam_vit_b_at_1024():
    """facebook/sam-vit-base's encoder (ViT-B, windows of 14 over a 64x64 grid: padding to 70, global blocks 2, 5,
    8, 11), randomized: the image embedding and blocks 3 and 12 at the only size transformers accepts."""
    vision = transformers.SamVisionConfig()
    reference = randomize_torch_module(
        transformers.SamVisionModel._from_config(vision, attn_implementation="eager").eval(), 11)
    config = SamVisionConfig(out_features=["stage3", "stage12", "neck"])
    model, report = load_converted(lambda: SamVisionBackbone(config, rngs=nnx.Rngs(0)), state_dict_numpy(reference),
                                   FAMILIES["sam_vision_model"].table_for(config))
    assert report.ok
    model.eval()
    x = pixels(1, 1024, 1024, seed=12)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x), output_hidden_states=True)
    ours = forward_features(model, nhwc(x))
    for name, theirs, mine in zip(["stage3", "stage12", "neck"],
                                  [expected.hidden_states[3], expected.hidden_states[12],
                                   nhwc(expected.last_hidden_state.numpy())], ours):
        assert_parity(np.asarray(theirs), mine, name=name)


# ---------------------------------------------------------------------------------------------------------------
# timm's SAM ViTs


@pytest.mark.parametrize("name, sizes", [
    ("samvit_base_patch16", [(48, 48), (56, 40), (24, 72)]),  # windows of 4 over grids of 6, 7, 5 and 9
    ("samvit_base_patch16_224", [(48, 48), (40, 64)]),  # no absolute position embedding, a LayerNorm as its neck
])
def test_timm_samvit_parity_through_the_hub(name, sizes, tmp_path, hub_cache):
    from timm.models._hub import save_for_hf

    source = randomize_torch_module(timm.create_model(name, **TIMM_SMALL).eval(), 5)
    repo = f"test-org/{name}"
    save_for_hf(source, tmp_path / repo, safe_serialization=True)
    write_to_hub_cache(tmp_path / repo, repo)
    model, report = AutoBackbone.from_pretrained(repo, out_indices=[0, 1, 2], output_loading_info=True)
    assert isinstance(model, TimmBackbone) and report.ok
    assert report.ignored and all(key.startswith(("neck", "head.")) for key in report.ignored)
    reference = timm.create_model(name, features_only=True, out_indices=(0, 1, 2), pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(tmp_path / repo / "model.safetensors")),
                                  **TIMM_SMALL).eval()
    model.eval()
    for height, width in sizes:
        x = pixels(2, height, width, seed=width)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x))
        for index, (theirs, mine) in enumerate(zip(expected, forward_features(model, nhwc(x)), strict=True)):
            assert_parity(nhwc(theirs.numpy()), mine, name=f"{height}x{width} blocks.{index}")
    with pytest.raises(ValueError, match="not a multiple of the 8x8 patch"):
        model(nhwc(pixels(1, 44, 48)))
    model.save_pretrained(tmp_path / "native")
    export_pretrained(tmp_path / "native", tmp_path / "timm")
    reloaded = timm.create_model(name, pretrained=True, **TIMM_SMALL,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "timm" / "model.safetensors")))
    for key, tensor in source.state_dict().items():
        if not key.startswith(("neck", "head")):
            assert torch.equal(tensor, reloaded.state_dict()[key]), key


# ---------------------------------------------------------------------------------------------------------------
# SAM's image processor


def test_sam_image_processor_is_bit_exact_with_transformers_pil_backend(tmp_path):
    from PIL import Image

    from jaxbackbones.image_processing import AutoImageProcessor, SamImageProcessor

    transformers.SamImageProcessorPil().save_pretrained(tmp_path)
    ours = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(ours) is SamImageProcessor and ours.size == {"longest_edge": 1024}
    theirs = transformers.SamImageProcessorPil()
    rng = np.random.RandomState(0)
    # landscape, portrait, extreme strips, exact, larger than 1024, rounding half up (333 * 1024 / 777 = 438.9)
    for height, width in [(480, 640), (640, 480), (1, 1000), (999, 3), (1024, 1024), (2000, 1500), (333, 777),
                          (17, 1023)]:
        image = Image.fromarray(rng.randint(0, 256, (height, width, 3), dtype=np.uint8))
        expected = np.asarray(theirs(image, return_tensors="np")["pixel_values"])
        np.testing.assert_array_equal(nhwc(expected), ours(image)["pixel_values"], err_msg=f"{height}x{width}")
    small = dict(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    images = [Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(30, 50), (70, 20)]]
    expected = np.asarray(transformers.SamImageProcessorPil(**small)(images, return_tensors="np")["pixel_values"])
    np.testing.assert_array_equal(expected, SamImageProcessor(**small)(images, data_format="channels_first")
                                  ["pixel_values"])
