"""BackboneConfigMixin and ResNetConfig against transformers' semantics and wording."""

import itertools
import json

import pytest
import transformers

from jaxbackbones import AutoConfig, BackboneConfigMixin, ResNetConfig

STAGES = ["stem", "stage1", "stage2", "stage3", "stage4"]


class StageConfig(BackboneConfigMixin):
    """The mixin alone, over arbitrary stage names."""

    def __init__(self, stage_names, out_features=None, out_indices=None):
        self.stage_names = stage_names
        self.set_output_features_output_indices(out_features, out_indices)


# The conditions transformers' tests/utils/test_backbone_utils.py checks.
def test_defaults_to_last_stage():
    config = StageConfig(["a", "b", "c"])
    assert config.out_features == ["c"] and config.out_indices == [2]


def test_indices_follow_features_and_features_follow_indices():
    assert StageConfig(["a", "b", "c"], out_features=["a", "c"]).out_indices == [0, 2]
    assert StageConfig(["a", "b", "c"], out_indices=[0, 2]).out_features == ["a", "c"]
    config = StageConfig(["a", "b", "c"], out_indices=(-3, -1))
    assert config.out_features == ["a", "c"] and config.out_indices == [-3, -1]


@pytest.mark.parametrize(
    "stage_names, out_features, out_indices, message",
    [
        (None, ["a", "b"], [0, 1], "Stage_names must be set"),
        (["a", "b"], ("a", "b"), [0, 1], "out_features must be a list"),
        (["a"], ["a", "b"], [0, 1], "out_features must be a subset of stage_names"),
        (["a", "b"], None, 0, "out_indices must be a list"),
        (["a"], None, [0, 1], "out_indices must be valid indices"),
        (["a", "b", "c"], ["a", "b"], [0], "should have the same length"),
        (["a", "b", "c"], ["a", "b"], [0, 2], "should correspond to the same stages"),
        (["a", "b"], ["b", "a"], [0, 1], "out_features must be in the same order"),
        (["a", "b"], ["a", "a"], None, "out_features must not contain any duplicates"),
        (["a", "b", "c"], None, [0, -3], "out_indices must not contain any duplicates"),
        (["a", "b", "c"], None, [2, 0], "out_indices must be in the same order"),
        (["a", "b", "c"], None, [-4], "out_indices must be valid indices"),
        (["a", "b", "c"], None, [1.0], "out_indices must be valid indices"),
    ],
)
def test_invalid_selections_raise_value_error(stage_names, out_features, out_indices, message):
    with pytest.raises(ValueError, match=message):
        StageConfig(stage_names, out_features, out_indices)


def test_valid_mixed_selection_passes():
    config = StageConfig(["a", "b", "c", "d"], out_features=["a", "b", "d"], out_indices=(0, 1, -1))
    assert config.out_indices == [0, 1, -1]


def test_setters_realign():
    config = StageConfig(["a", "b", "c"], out_features=["a", "c"])
    config.out_features = ["a", "b"]
    assert config.out_features == ["a", "b"] and config.out_indices == [0, 1]
    config.out_indices = (-3, -1)
    assert config.out_features == ["a", "c"] and config.out_indices == [-3, -1]
    with pytest.raises(ValueError, match="out_indices must be valid"):
        config.out_indices = [7]


def _outcome(factory):
    """(out_features, out_indices) or (exception type name, message)."""
    try:
        config = factory()
    except Exception as error:  # the comparison is about which error, so every kind is caught
        return type(error).__name__, str(error)
    return config.out_features, config.out_indices


SELECTIONS = [None, [], ["stem"], ["stage4"], ["stem", "stage2"], ["stage1", "stem"], ["stage2", "stage2"],
              ["bogus"], ("stem",), "stem"]
INDICES = [None, [], [0], [-1], [0, 2], (1, 2), [-5, -1], [2, 1], [1, 1], [-1, 4], [5], [-6], [0, -1], 0, [1.0]]


@pytest.mark.parametrize("out_features, out_indices", list(itertools.product(SELECTIONS, INDICES)))
def test_matches_transformers_resnet_config(out_features, out_indices):
    kwargs = {}
    if out_features is not None:
        kwargs["out_features"] = out_features
    if out_indices is not None:
        kwargs["out_indices"] = out_indices
    expected = _outcome(lambda: transformers.ResNetConfig(**kwargs))
    ours = _outcome(lambda: ResNetConfig(**kwargs))
    if ours == expected:
        return
    # Where they differ, transformers crashed (IndexError, TypeError) or accepted an index outside
    # [-len, len) or a non-integer by wrapping it around; we reject those with a ValueError naming the index.
    bad_index = isinstance(out_indices, (list, tuple)) and any(
        not isinstance(idx, int) or idx < -len(STAGES) for idx in out_indices
    )
    assert expected[0] != "ValueError" or bad_index, (ours, expected)
    assert ours[0] == "ValueError" and "out_indices must be valid indices" in ours[1]


def test_config_fields_and_defaults_match_transformers():
    theirs = transformers.ResNetConfig().to_dict()
    # jaxbackbones' own training switches (freeze_stages, freeze_batch_norm, gradient_checkpointing) are not
    # transformers fields: written only when set, and left out of this comparison explicitly.
    training_fields = set(ResNetConfig.training_defaults)
    assert not training_fields & set(ResNetConfig().to_dict())
    ours = ResNetConfig(freeze_stages=1, freeze_batch_norm=True, gradient_checkpointing=True).to_dict()
    assert training_fields <= set(ours)
    for key, value in ours.items():
        if key not in training_fields:
            assert theirs[key] == value, key
    model_fields = ["num_channels", "embedding_size", "hidden_sizes", "depths", "layer_type", "hidden_act",
                    "downsample_in_first_stage", "downsample_in_bottleneck"]
    assert set(model_fields) <= set(ours)


def test_config_json_round_trip_keeps_unknown_keys(tmp_path):
    hub_style = transformers.ResNetConfig(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic",
                                          out_features=["stage2", "stage4"], id2label={0: "cat", 1: "dog"})
    hub_style.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())

    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, ResNetConfig)
    assert config.out_features == ["stage2", "stage4"] and config.out_indices == [2, 4]
    assert config.id2label == {"0": "cat", "1": "dog"}

    config.save_pretrained(tmp_path / "again")
    rewritten = json.loads((tmp_path / "again" / "config.json").read_text())
    assert rewritten == written
    # and transformers reads ours back to the same config
    assert transformers.ResNetConfig.from_pretrained(tmp_path / "again").to_dict() == \
        transformers.ResNetConfig.from_pretrained(tmp_path).to_dict()


def test_caller_selection_replaces_the_files(tmp_path):
    ResNetConfig(out_features=["stage1", "stage2"]).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, out_indices=[-1])
    assert config.out_features == ["stage4"] and config.out_indices == [-1]
    theirs = transformers.ResNetConfig.from_pretrained(tmp_path, out_indices=[-1])
    assert (theirs.out_features, theirs.out_indices) == (config.out_features, config.out_indices)


def test_stage_names_are_recomputed_not_trusted():
    config = ResNetConfig(depths=[1, 1], hidden_sizes=[8, 16], stage_names=["x", "y", "z"])
    assert config.stage_names == ["stem", "stage1", "stage2"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer_type": "resnext"}, "layer_type=resnext is not one of basic,bottleneck"),
        ({"hidden_act": "swoosh"}, "hidden_act 'swoosh' is not supported"),
        ({"depths": [1, 1], "hidden_sizes": [8]}, "one entry per stage"),
    ],
)
def test_invalid_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetConfig(**kwargs)


def test_unknown_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match=r"model_type 'vit'.*supported model types: \[.*'resnet'"):
        AutoConfig.from_pretrained(tmp_path)
