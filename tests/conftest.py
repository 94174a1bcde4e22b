import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, so a
    mapping mistake (or a wrong eps) shows up in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            if hasattr(m, "gamma") and isinstance(m.gamma, torch.nn.Parameter):
                # layer scale at its 1e-5 init would hide the whole residual branch
                m.gamma.copy_(torch.rand(m.gamma.shape, generator=g) * 0.5 + 0.5)
    return model


@pytest.fixture
def rand_bn():
    return randomize_bn
