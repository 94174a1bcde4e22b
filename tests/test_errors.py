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


@pytest.mark.parametrize("name", ["mobilenetv4_conv_small", "mobileformer_26m"])
def test_batch_of_one_in_training_mode_says_to_call_eval(name):
    """create_model returns a model in training mode (as timm and torchvision); one image through
    a head with BatchNorm over pooled features has no batch statistics: the error says .eval()."""
    model = create_model(name, num_classes=10)
    assert model.training
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"batch of 1 image in training mode.*call model\.eval\(\)"):
        model(x)
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        model.forward_head(model.forward_features(x))
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)  # training batches of 2+ work
    assert model.eval()(x).shape == (1, 10)


@pytest.mark.parametrize("name,bad,meant", [
    ("mobilenetv2_100", "widht_mult", "width_mult"),
    ("mobilenetv3_large_100", "reduce_tail", "reduced_tail"),
    ("mobileformer_26m", "drop_path", "drop_path_rate"),
    ("mobilenetv4_conv_small", "num_class", "num_classes"),
    ("ssdlite320_mobilenetv2_100", "widht_mult", "width_mult"),
])
def test_misspelt_keyword_suggests_the_option(name, bad, meant):
    with pytest.raises(TypeError, match=rf"{name}: .*'{bad}'.*did you mean {meant}\b"):
        create_model(name, **{bad: 1})


def test_misspelt_name_suggests_models_of_the_same_task():
    with pytest.raises(KeyError) as e:
        create_model("mobilenetv4_conv_smal")
    hint = str(e.value).split("did you mean", 1)[1]
    assert "mobilenetv4_conv_small" in hint and "lraspp" not in hint and "fcn" not in hint
    with pytest.raises(KeyError) as e:
        create_model("lraspp_mobilenetv3_larg")
    assert all(n.strip().startswith("lraspp_") for n in str(e.value).split("did you mean", 1)[1]
               .split("?")[0].split(","))


def test_list_models_warns_when_nothing_matches():
    with pytest.warns(UserWarning, match=r"no model matches 'resnet\*'.*mobilenetv4"):
        assert mobilenets.list_models("resnet*") == []
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mobilenets.list_models("mobilenetv4_conv_small")  # a match is silent
