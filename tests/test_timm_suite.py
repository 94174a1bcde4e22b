"""timm's own tests/test_models.py, run on our models (tests/helpers/timm_shim.py: timm's
create_model sends each shared name and every keyword, unchanged, to mobilenets.create_model;
timm's list_models gives the shared names). The file is timm's, from the sdist of the installed
version (downloaded once from the package registry and cached; never vendored here).

The default run covers two names of different families; ``-m slow`` every shared name."""

import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("torchvision")

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import timm_suite  # noqa: E402


def _run(names: str, timeout: float):
    try:
        timm_suite.fetch_tests(__import__("timm").__version__)
    except RuntimeError as e:  # no registry: say so rather than pass
        pytest.skip(str(e))
    res = timm_suite.run(names=names, timeout=timeout)
    out = res.stdout + res.stderr
    kept = re.search(r"timm shim: (\d+) items on our models", out)
    assert kept and int(kept.group(1)) > 0, out[-3000:]
    failures = [ln for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    assert res.returncode == 0 and not failures, "\n".join(failures) or out[-3000:]
    return out


def test_timm_model_tests_pass_on_two_families():
    out = _run("mobilenetv3_small_050,mobilenetv4_conv_small", timeout=900)
    assert re.search(r"\b(\d+) passed", out)


@pytest.mark.slow
def test_timm_model_tests_pass_on_every_shared_name():
    _run("*", timeout=5400)
