import copy
import os

import pytest
import torch

from mobilenets.layers.bn_stats import calibrate_bn_stats, eval_pass_with_hooks

# two threads per test process; under pytest-xdist (`make test` runs `-n 2`) the cores are shared
# by the workers, one thread each on this 2-core machine
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

_BN = torch.nn.modules.batchnorm._BatchNorm

# the largest activation RMS (activation_scale) a well-conditioned test model may reach ("O(1)";
# parity models measure <= 7): beyond it, fp32 rounding is amplified (sharp attention softmaxes,
# cancellation) and parity checks turn flaky
MAX_ACTIVATION_RMS = 20.0


def _first_conv(model: torch.nn.Module):
    return next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)


def randomize_bn(model: torch.nn.Module, seed: int = 0, calib_size=(224, 224),
                 calib: "torch.Tensor | None" = None, calibrate: bool = True) -> torch.nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, every RMSNorm
    a non-trivial scale, and layer scales values far from their 1e-5 init, so a mapping mistake
    (or a wrong eps) shows up in the logits, while keeping the network well conditioned.

    Conditioning matters: with running statistics drawn at random (independent of what each
    BatchNorm actually sees), random-init convs grow activations by a constant factor per
    layer, to ~1e9 at the end of a MobileNetV4-Hybrid, where fp32 rounding differences between
    two correct kernels (oneDNN's AVX-512 vs AVX2 paths) decide the logits. So the statistics
    are *calibrated*: one eval-mode forward pass on a fixed random batch sets each BatchNorm's
    running mean / variance, just before it runs, to the statistics of its real input, perturbed
    per channel (mean shifted by up to ~0.2 std, variance scaled by 0.7-1.4) so they are still
    not the trivial ones. Every normalised output is then O(1) and activations stay O(1) through
    the whole network (:func:`activation_scale` measures it; the parity tests assert it).
    On small test images, pass ``calib=`` the very batch the test runs: at 48x64 the last stage
    of a MobileNetV4 is 2x2, and statistics from another batch (16 positions per channel) are
    too noisy to keep the residual stream O(1).

    A module without a Conv2d (a bare BatchNorm) gets random statistics, as there is nothing to
    calibrate against.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BN):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            if "rmsnorm" in type(m).__name__.lower() and isinstance(getattr(m, "weight", None), torch.nn.Parameter):
                # MobileNetV5's RMSNorm (ours and timm's RmsNorm2d / RmsNormAct2d): a scale only,
                # no statistics; away from its ones init so a mis-mapped norm shows up
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
            if hasattr(m, "gamma") and isinstance(m.gamma, torch.nn.Parameter):
                # layer scale at its 1e-5 init would hide the whole residual branch
                m.gamma.copy_(torch.rand(m.gamma.shape, generator=g) * 0.5 + 0.5)
        conv = _first_conv(model)
        if conv is None or not calibrate or not any(isinstance(m, _BN) for m in model.modules()):
            return model  # nothing to calibrate (MobileNetV5's RMSNorm has no statistics)

        x = torch.randn(4, conv.in_channels, *calib_size, generator=g) if calib is None else calib
        calibrate_bn_stats(model, x, g)
    return model


@torch.no_grad()
def activation_scale(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The largest root-mean-square of any module's tensor output in one eval forward pass:
    how far activations grow inside the network (O(1) for a well-conditioned test model)."""
    worst = 0.0

    def record(_m, _args, out):
        nonlocal worst
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                worst = max(worst, float(t.double().pow(2).mean().sqrt()))

    eval_pass_with_hooks(model, x, lambda m: m.register_forward_hook(record))
    return worst


@pytest.fixture
def rand_bn():
    return randomize_bn


def pytest_report_header(config):
    # which CPU kernels this run exercises (the suite must pass under each limit: see Makefile)
    limits = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    return (f"ATen CPU capability: {torch.backends.cpu.get_cpu_capability()}; "
            f"limits: {limits or 'none (native)'}")


def rel_max_err(ref: torch.Tensor, other: torch.Tensor) -> float:
    """max |ref - other| / max |ref| (shapes must agree)."""
    assert ref.shape == other.shape, (ref.shape, other.shape)
    return float((ref - other).abs().max() / ref.abs().max())


def rel_rms_err(ref: torch.Tensor, other: torch.Tensor) -> float:
    """rms(ref - other) / rms(ref) (shapes must agree)."""
    assert ref.shape == other.shape, (ref.shape, other.shape)
    return float((ref - other).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())


@torch.no_grad()
def assert_same_function(model: torch.nn.Module, transform, x: torch.Tensor) -> torch.nn.Module:
    """``transform(model)`` (BN folding, a module swap) computes the same function as ``model``.

    Checked the way it is well conditioned: in float64 (the transform applied to a float64 copy,
    so folded weights are computed in float64 too) the two agree to 1e-12: that is the proof of
    exactness. In fp32 the transform must cost no precision: its error against that float64
    truth stays within twice the original's own fp32 error, measured as a root-mean-square over
    the whole output (every logit of every image of ``x``). Not as a maximum: a swap that
    reorders arithmetic (Mobile MQA with the heads folded into the queries, softmax on another
    axis) draws a different fp32 rounding, and the largest single-logit error of two such correct
    fp32 computations is a heavy-tailed random quantity (measured on MNv4-Hybrid-M 0.75, 48x64,
    one image per seed: swapped/original max error 0.7-2.2 over 12 seeds, 4.6 once in a full
    run) while the RMS over a batch stays within 0.76-1.59. A transform that loses precision
    (fp16 arithmetic, a variance as E[x^2] - E[x]^2) raises the RMS error by orders of magnitude.
    The largest error is still bounded, at four times the original's, and the two fp32 outputs
    agree to 1e-4 relative.
    Returns the transformed fp32 model (``transform`` may work in place).
    """
    model64 = copy.deepcopy(model).double()
    truth = model64(x.double())
    assert rel_max_err(truth, transform(model64)(x.double())) <= 1e-12
    a = model(x).double()
    out = transform(model)
    b = out(x).double()
    assert rel_rms_err(truth, b) <= 2 * rel_rms_err(truth, a) + 1e-7, (rel_rms_err(truth, b), rel_rms_err(truth, a))
    assert rel_max_err(truth, b) <= 4 * rel_max_err(truth, a) + 1e-6, (rel_max_err(truth, b), rel_max_err(truth, a))
    assert rel_max_err(a, b) <= 1e-4
    return out
