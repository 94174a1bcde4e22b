"""CUDA checks: forward parity with the CPU for every registered model, mixed precision,
channels_last, and a short AMP training run (single process and torchrun/NCCL).

Skipped where there is no GPU (CI never has one); run them on a GPU machine with
``pytest -m gpu tests/test_gpu.py``.
"""

import os
import subprocess
import sys

import pytest
import torch

import mobilenets
from conftest import randomize_bn

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(autouse=True)
def _strict_fp32():
    # compare true fp32 on the GPU (TF32 matmuls/convs would differ from the CPU by ~1e-3)
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("name", mobilenets.list_models(task="classification"))
def test_cuda_forward_matches_cpu(name):
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(name)).eval()
    x = torch.randn(2, 3, 193, 161)
    with torch.no_grad():
        ref = model(x)
        out = model.cuda()(x.cuda()).cpu()
        out_cl = model.to(memory_format=torch.channels_last)(
            x.cuda().contiguous(memory_format=torch.channels_last)).cpu()
    scale = ref.abs().max()
    assert (out - ref).abs().max() <= 1e-4 * scale
    assert (out_cl - ref).abs().max() <= 1e-4 * scale


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "mobilenetv4_hybrid_medium", "mobileformer_151m"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_forward_and_backward(name, dtype):
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(name)).cuda().eval()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ref = model(x).float()
        with torch.autocast("cuda", dtype=dtype):
            out = model(x).float()
    assert torch.isfinite(out).all()
    # reduced precision: logits agree to a few percent of their range, and the top-1 mostly
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
    model.train()
    with torch.autocast("cuda", dtype=dtype):
        loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_amp_channels_last_training_on_digits(tmp_path):
    from mobilenets.train import get_recipe
    from mobilenets.train.loop import train

    # the main job's recipe, unchanged but for the GPU settings: it must reach the same >= 97%
    r = get_recipe("digits").replace(device="cuda", amp=True, channels_last=True)
    lines = []
    res = train(r, tmp_path / "run", progress=False, log=lines.append)
    assert res.exit_code == 0
    assert next(res.model.parameters()).is_cuda
    assert "on cuda:0, mixed precision" in lines[0] and "channels_last" in lines[0]
    assert res.best_top1 >= 97.0
    assert (tmp_path / "run" / "best.pt").exists()


def _torchrun(tmp_path, nproc: int) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "mobilenets.train",
           "--model", "mobilenetv3_small_050", "--set", "epochs=1", "--set", "device=cuda",
           "--out", str(tmp_path / "ddp"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "last.pt").exists()
    return proc.stdout + proc.stderr


def test_torchrun_one_gpu(tmp_path):
    assert "1 process(es) on cuda:0" in _torchrun(tmp_path, 1)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per process: 2 GPUs")
def test_torchrun_nccl(tmp_path):
    """The same command on 2 GPUs runs DistributedDataParallel over NCCL."""
    assert "2 process(es) on cuda:0 (nccl)" in _torchrun(tmp_path, 2)
