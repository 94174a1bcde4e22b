"""A pytest plugin that runs timm's own ``tests/test_models.py`` against OUR models.

Loaded with ``-p timm_shim`` (``tests/helpers`` on ``sys.path``) before the test module is
imported, it points timm's factory functions at mobilenets, strictly:

* ``timm.create_model(name, **kwargs)`` -> ``mobilenets.create_model(name, **kwargs)``: the
  name and every keyword passed on unchanged (an unknown keyword must still raise TypeError);
* ``timm.list_models(...)`` / ``timm.list_pretrained(...)``: timm's own answer (its filters,
  tags and module selection), restricted to the names mobilenets has, so each test is
  parametrized over exactly the shared names timm would give it.

Nothing else is patched: every assertion, size limit and helper of the test file is timm's.
Collected items whose ``model_name`` is not one of ours (tests written for one particular timm
model, ``resnet18``) are deselected, and so are the tests that download weights
(``pretrained=True``: no network here); the run says how many of each. ``MOBILENETS_TIMM_NAMES``
(comma-separated, shell patterns allowed) restricts the run to some names.
"""

from __future__ import annotations

import fnmatch
import os

import pytest
import timm
import timm.models

import mobilenets

_timm_list_models = timm.list_models
_timm_list_pretrained = timm.list_pretrained

#: tests that need weights from the network (they call create_model(..., pretrained=True))
NETWORK_TESTS = ("test_model_load_pretrained", "test_model_features_pretrained", "test_model_inference")


def _selected(name: str) -> bool:
    pats = [p for p in os.environ.get("MOBILENETS_TIMM_NAMES", "").split(",") if p]
    base = name.split(".")[0]
    return not pats or any(fnmatch.fnmatch(base, p) or fnmatch.fnmatch(name, p) for p in pats)


def ours(name: str) -> bool:
    """Whether mobilenets has ``name`` (a tagged name: its architecture)."""
    return mobilenets.models.registry.is_model(name.split(".")[0]) and _selected(name)


def list_models(*args, **kwargs):
    return [n for n in _timm_list_models(*args, **kwargs) if ours(n)]


def list_pretrained(*args, **kwargs):
    return [n for n in _timm_list_pretrained(*args, **kwargs) if ours(n)]


def create_model(model_name, *args, **kwargs):
    return mobilenets.create_model(model_name, *args, **kwargs)


for _mod in (timm, timm.models):
    _mod.create_model = create_model
    _mod.list_models = list_models
    _mod.list_pretrained = list_pretrained


#: the markers timm's test file uses (its pyproject registers them; pytest-timeout's too)
MARKERS = ("base", "cfg", "cfg_nonstd", "forward", "backward", "torchscript", "features", "fxforward", "fxbackward",
           "timeout(seconds): pytest-timeout's limit (ignored without the plugin)")


def pytest_configure(config):
    for m in MARKERS:
        config.addinivalue_line("markers", m)


def pytest_collection_modifyitems(config, items):
    keep, foreign, network = [], [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = params.get("model_name")
        if item.originalname in NETWORK_TESTS:
            network.append(item)
        elif not isinstance(name, str) or not ours(name):
            foreign.append(item)
        else:
            keep.append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=foreign + network)
    config._timm_shim_counts = (len(keep), len(foreign), len(network))


def pytest_report_header(config):
    return (f"timm {timm.__version__} test_models.py against mobilenets {mobilenets.__version__} "
            f"(timm.create_model -> mobilenets.create_model)")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    kept, foreign, network = getattr(config, "_timm_shim_counts", (0, 0, 0))
    terminalreporter.write_line(f"timm shim: {kept} items on our models; deselected {foreign} written for "
                                f"other timm models and {network} that download weights")


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
