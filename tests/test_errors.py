"""Bad input gets errors that say what was expected and what was given."""

import pytest
import torch

import mobilenets
from mobilenets import create_model


def test_unknown_model_names_closest_matches():
    with pytest.raises(KeyError) as e:
        create_model("mobilenetv4_conv_smal")
    assert "mobilenetv4_conv_small" in str(e.value) and "did you mean" in str(e.value)
    with pytest.raises(ValueError):  # also a ValueError, for callers that catch bad arguments
        create_model("mobilenet_v3_large")


@pytest.mark.parametrize("name", ["mobilenetv2_050", "mobilenetv4_hybrid_medium_075"])
def test_wrong_channels_and_too_small_inputs(name):
    model = create_model(name).eval()
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\) with H, W >= 32, got \(1, 4, 64, 64\)"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"got \(1, 3, 31, 64\)"):
        model(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match=r"got \(3, 64, 64\)"):
        model(torch.randn(3, 64, 64))
    feats = create_model(name, features_only=True)
    with pytest.raises(ValueError, match="expected input of shape"):
        feats(torch.randn(1, 1, 64, 64))


def test_in_chans_is_honoured_in_the_message():
    model = create_model("mobilenetv1_025", in_chans=1)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("kwargs,match", [
    ({"width_mult": 0}, "width_mult must be > 0"),
    ({"output_stride": 4}, "output_stride must be 8, 16 or 32"),
    ({"drop_path_rate": 1.5}, r"drop_path_rate must be in \[0, 1\)"),
    ({"in_chans": 0}, "in_chans must be >= 1"),
    ({"out_indices": (0,)}, "only used with features_only"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("mobilenetv2_050", **kwargs)


def test_unknown_keyword_names_the_model():
    with pytest.raises(TypeError, match="mobilenetv2_050"):
        create_model("mobilenetv2_050", reduced_tail=True)  # a V3-only option


def test_duplicate_registration_raises():
    entry = mobilenets.get_entry("mobilenetv2_100")
    with pytest.raises(ValueError, match="already registered"):
        mobilenets.models.register("mobilenetv2_100", "mobilenetv2", entry.builder)
