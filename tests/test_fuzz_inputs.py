"""Fuzzed inputs: random sizes (below the minimum, non-square, batch 0), channel counts, dtypes
(fp16/bf16/fp64/integers), NCHW or channels_last -> the right output, or a clear error saying
what was expected and what was given; never an error from deep inside torch."""

import functools

import pytest
import torch

import mobilenets

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None)
# one small model per family (and the attention ones: MQA, Mobile-Former's bridges)
NAMES = ["mobilenetv1_025", "mobilenetv2_035", "mobilenetv3_small_050", "mobilenetv4_conv_small_035",
         "mobilenetv4_hybrid_medium_075", "mobileformer_26m"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8]


@functools.lru_cache(maxsize=None)
def _model(name: str, dtype: torch.dtype = torch.float32, in_chans: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return mobilenets.create_model(name, num_classes=5, in_chans=in_chans).eval().to(dtype)


def _input(n, c, h, w, dtype, channels_last, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g) * 2 - 1
    x = (x * 100).to(dtype) if not dtype.is_floating_point else x.to(dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x


@FUZZ
@given(name=st.sampled_from(NAMES), n=st.integers(0, 2), c=st.sampled_from([1, 3, 4]),
       h=st.sampled_from([0, 1, 16, 31, 32, 33, 47, 64]), w=st.sampled_from([1, 31, 32, 40, 71]),
       dtype=st.sampled_from(DTYPES), channels_last=st.booleans())
def test_any_input_gives_output_or_a_clear_error(name, n, c, h, w, dtype, channels_last):
    model = _model(name)
    x = _input(n, c, h, w, dtype, channels_last)
    if c != 3 or h < 32 or w < 32:
        with pytest.raises(ValueError, match=rf"expected input of shape \(N, 3, H, W\) with H, W >= 32, "
                                             rf"got \({n}, {c}, {h}, {w}\)"):
            model(x)
        return
    if dtype != torch.float32:
        with pytest.raises(TypeError, match=rf"expected .*torch.float32.*got .*{dtype}"):
            model(x)
        return
    with torch.no_grad():
        y = model(x)
    assert y.shape == (n, 5) and y.dtype == torch.float32 and torch.isfinite(y).all()
    if channels_last and n:
        with torch.no_grad():  # memory format never changes the result
            ref = model(x.contiguous())
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_models_run_in_their_own_dtype(name, dtype):
    # a model converted with .to(dtype) takes inputs of that dtype; it agrees with fp32
    x = _input(2, 3, 64, 48, torch.float32, False)
    with torch.no_grad():
        ref = _model(name)(x)
        y = _model(name, dtype)(x.to(dtype))
    assert y.dtype == dtype and y.shape == ref.shape
    tol = 1e-6 if dtype == torch.float64 else 0.1
    assert float((y.float() - ref).abs().max()) <= tol * max(float(ref.abs().max()), 1e-12) + 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_in_chans_and_non_square_and_channels_last_model(name):
    model = _model(name, torch.float32, 1)
    x = _input(3, 1, 57, 33, torch.float32, True)
    with torch.no_grad():
        y = model(x)
        ref = model(x.contiguous())
        cl = _model(name, torch.float32, 1).to(memory_format=torch.channels_last)(x)
        _model(name, torch.float32, 1).to(memory_format=torch.contiguous_format)
    assert y.shape == (3, 5)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_autocast_accepts_lower_precision_inputs():
    # under CPU autocast a bf16 input to an fp32 model is what autocast itself produces
    model = _model("mobilenetv3_small_050")
    x = _input(1, 3, 64, 64, torch.bfloat16, False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == (1, 5)


def test_integer_images_are_told_to_convert():
    with pytest.raises(TypeError, match=r"floating-point.*got torch.uint8.*x.float\(\) / 255"):
        _model("mobilenetv2_035")(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
