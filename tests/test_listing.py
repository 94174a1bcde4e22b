"""``mobilenets list``'s counts (mobilenets.tasks.listing): the same numbers as counting a
randomly initialised model, each model built once, and the per-version cache."""

import json

import pytest
import torch

import mobilenets
from mobilenets.analysis import profile
from mobilenets.tasks import listing
from mobilenets.tasks.listing import model_costs, zero_init
from mobilenets.cli import main
from mobilenets.tasks.cost import task_macs

# one model per family and task: every backbone family (V4 hybrid: attention; Mobile-Former:
# tokens), SSDLite, Faster R-CNN at 320 and at 800 (its box head runs on the RPN's proposals),
# RetinaNet at 800, LR-ASPP, DeepLabV3 and FCN; fasterrcnn_mobileformer_26m_320_fpn: its RPN keeps
# fewer proposals than its cap with the seed-0 random weights (see _reference)
SAMPLE = {
    "classification": ["mobilenetv1_025", "mobilenetv2_035", "mobilenetv3_small_050", "mobilenetv4_conv_small",
                       "mobilenetv4_hybrid_medium", "mobileformer_26m"],
    "detection": ["ssdlite320_mobilenetv3_small_050", "fasterrcnn_mobilenetv1_025_320_fpn",
                  "fasterrcnn_mobileformer_26m_fpn", "retinanet_mobilenetv4_conv_small_035_fpn",
                  "fasterrcnn_mobileformer_26m_320_fpn"],
    "segmentation": ["lraspp_mobilenetv3_small_050", "deeplabv3_mobileformer_26m", "fcn_mobilenetv2_035"],
}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _reference(name: str, task: str) -> dict:
    """The counts as ``mobilenets list`` made them before the fast path: a randomly initialised
    model, :func:`profile` at 224 / ``task_macs`` at the task's size.

    With one correction: a Faster R-CNN's box head runs on the proposals its RPN keeps, which
    with random weights is mostly, not always, the RPN's ``post_nms_top_n`` cap: it depends on
    the global RNG state. Before the fast path a full ``list --task detection`` showed 3705.7 M
    MACs (143 proposals) for fasterrcnn_mobilenetv4_hybrid_medium_075_320_fpn, the state the 40
    models built before it left, and 3806.2 M (150) when listed alone; seed 0 gives
    fasterrcnn_mobileformer_26m_320_fpn 140. The fast path's zero weights give the cap every
    time, so the reference is taken at the cap: the box head's MACs per proposal times the
    proposals missing from it are added."""
    torch.manual_seed(0)
    m = mobilenets.create_model(name)
    if task == "classification":
        return {"params": mobilenets.count_params(m), "macs": profile(m, (224, 224)).macs}
    roi = getattr(m, "roi_heads", None)
    seen = []
    hook = roi.box_head.register_forward_hook(lambda mod, i, o: seen.append(i[0].shape)) if roi else None
    macs = task_macs(m, task)
    if roi is not None:
        hook.remove()
        from torch.utils.flop_counter import FlopCounterMode
        (n, *rest), = seen
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            roi.box_predictor(roi.box_head(torch.zeros(1, *rest)))
        macs += (m.rpn._post_nms_top_n["testing"] - n) * (fc.get_total_flops() // 2)
    return {"params": mobilenets.count_params(m), "macs": macs}


def _check_same(task, names):
    fast = model_costs(names, task, cache=False)
    for n in names:
        assert fast[n] == _reference(n, task), n


@pytest.mark.parametrize("task", sorted(SAMPLE))
def test_fast_counts_equal_the_random_init_counts(task):
    _check_same(task, SAMPLE[task])


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(SAMPLE))
def test_fast_counts_equal_the_random_init_counts_whole_registry(task):
    _check_same(task, mobilenets.list_models(task=task))


def _count_builds(monkeypatch) -> list:
    """Record every model build, whichever name the caller imported create_model under (in
    this process: the counting runs in no worker process)."""
    import mobilenets.factory as factory

    monkeypatch.setattr(listing, "default_workers", lambda: 1)

    built, real = [], factory.create_model

    def counting(name, *a, **kw):
        built.append(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(factory, "create_model", counting)
    monkeypatch.setattr(mobilenets, "create_model", counting)
    return built


def test_list_builds_each_model_once_then_reads_the_cache(monkeypatch, capsys, tmp_path):
    built = _count_builds(monkeypatch)
    assert main(["list", "mobilenetv1_0*", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in first]
    assert names == ["mobilenetv1_025", "mobilenetv1_050", "mobilenetv1_075"]
    assert sorted(built) == names  # once each (params and MACs from one build)
    files = list((tmp_path / "cache" / "mobilenets" / mobilenets.__version__).glob("costs-*.json"))
    assert len(files) == 1 and len(json.loads(files[0].read_text())["costs"]) == 3
    built.clear()
    assert main(["list", "mobilenetv1_0*", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first and built == []  # all from the cache
    assert main(["list", "mobilenetv1_*", "--json"]) == 0  # only the new ones are built
    assert sorted(built) == ["mobilenetv1_100", "mobilenetv1_100h", "mobilenetv1_125"]
    assert json.loads(capsys.readouterr().out)[:3] == first


def test_no_macs_and_tasks_have_their_own_entries(monkeypatch, capsys):
    built = _count_builds(monkeypatch)
    assert main(["list", "mobilenetv1_025", "--no-macs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "mobilenetv1_025", "family": "mobilenetv1",
                                                    "params_m": 0.47}]
    assert main(["list", "mobilenetv1_025", "--json"]) == 0  # the params-only entry has no MACs yet
    assert built == ["mobilenetv1_025", "mobilenetv1_025"]
    row = json.loads(capsys.readouterr().out)[0]
    assert row["params_m"] == 0.47 and row["macs_m_224"] > 0
    assert main(["list", "mobilenetv1_025", "--no-macs"]) == 0 and len(built) == 2
    assert main(["list", "lraspp_mobilenetv1_025", "--task", "segmentation", "--no-macs"]) == 0
    assert "lraspp_mobilenetv1_025" in built[2:]  # (its backbone is built inside it)


def test_an_edited_source_tree_or_torch_does_not_read_the_old_counts(monkeypatch):
    import os
    built = _count_builds(monkeypatch)
    model_costs(["mobilenetv1_025"], macs=False)
    old = listing.cache_file()
    assert old.is_file() and built == ["mobilenetv1_025"]
    for k in range(4):  # more caches of this version from other source trees, the oldest first
        other = old.with_name(f"costs-other{k}.json")
        other.write_text(old.read_text())
        os.utime(other, (1000 + k, 1000 + k))
    os.utime(old, (999, 999))
    monkeypatch.setattr(listing, "_fingerprint", lambda: "0123456789abcdef")
    assert listing.cache_file() != old and listing.cache_file().parent == old.parent
    model_costs(["mobilenetv1_025"], macs=False)
    assert built == ["mobilenetv1_025"] * 2  # counted again
    left = sorted(p.name for p in old.parent.iterdir())
    assert left == ["costs-0123456789abcdef.json", "costs-other1.json", "costs-other2.json", "costs-other3.json"]


@pytest.mark.parametrize("damage", ["garbage", "wrong types", "unwritable"])
def test_a_broken_or_unwritable_cache_is_ignored(damage, monkeypatch, tmp_path):
    built = _count_builds(monkeypatch)
    if damage == "unwritable":  # XDG_CACHE_HOME below a file: no folder can be made there
        (tmp_path / "file").write_text("x")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file" / "cache"))
    else:
        path = listing.cache_file()
        path.parent.mkdir(parents=True)
        path.write_text("{not json" if damage == "garbage" else
                        json.dumps({"costs": {"classification/mobilenetv1_025@224": {"params": "1", "macs": 2.5}}}))
    want = model_costs(["mobilenetv1_025"], cache=False)
    assert model_costs(["mobilenetv1_025"]) == want and len(built) == 2
    assert model_costs(["mobilenetv1_025"]) == want
    assert len(built) == (3 if damage == "unwritable" else 2)  # else rewritten, then read


def test_worker_processes_count_the_same(monkeypatch):
    names = ["mobilenetv1_025", "mobilenetv3_small_050", "mobileformer_26m", "mobilenetv2_035"]
    threads = torch.get_num_threads()
    assert model_costs(names, workers=2, cache=False) == model_costs(names, workers=1, cache=False)
    assert torch.get_num_threads() == threads
    seg = ["lraspp_mobilenetv1_025", "fcn_mobilenetv2_035", "deeplabv3_mobilenetv3_small_050"]
    assert model_costs(seg, "segmentation", workers=3) == model_costs(seg, "segmentation", workers=1, cache=False)
    with pytest.raises(ValueError, match="workers must be an int >= 1 .*got 0"):
        model_costs(names, workers=0)


def test_zero_init_skips_random_fills_only():
    state = torch.random.get_rng_state()
    with zero_init():
        lin = torch.nn.Linear(8, 4)
        bn = torch.nn.BatchNorm2d(3)
        t = torch.empty(5)
        torch.nn.init.kaiming_uniform_(tensor=t)  # by keyword, as torch.nn.init hands it on
        u = torch.empty(3).normal_()
        ones = torch.empty(2).fill_(1.0)
    assert torch.equal(torch.random.get_rng_state(), state)  # no random draw was made
    assert not lin.weight.any() and not lin.bias.any() and not t.any() and not u.any()
    assert bn.weight.eq(1).all() and bn.running_var.eq(1).all() and ones.eq(1).all()  # other fills kept
    assert torch.nn.Linear(8, 4).weight.any()  # outside the context: random again
    with pytest.raises(ValueError, match="task must be one of .*got 'detect'"):
        model_costs(["ssdlite320_mobilenetv1_025"], "detect")


@pytest.mark.parametrize("make", [
    lambda: (torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.rand(2, 4, 9, 11)),
    lambda: (torch.nn.Conv2d(4, 4, 5, padding=4, dilation=2, groups=4), torch.rand(1, 4, 8, 8)),
    lambda: (torch.nn.Conv2d(4, 6, (1, 3), stride=(1, 2), padding=(0, 1)),
             torch.rand(1, 4, 7, 7).contiguous(memory_format=torch.channels_last)),
    lambda: (torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), torch.rand(1, 4, 5, 6)),
    lambda: (torch.nn.Conv1d(3, 5, 3, stride=2), torch.rand(2, 3, 16)),
    lambda: (torch.nn.Linear(8, 5), torch.rand(3, 8)),
    lambda: (torch.nn.Linear(8, 5, bias=False), torch.rand(2, 3, 8)),
])
def test_zero_weight_products_give_what_the_kernel_gives(make):
    mod, x = make()
    with torch.no_grad():
        mod.weight.zero_()
        if getattr(mod, "bias", None) is not None:
            mod.bias.copy_(torch.linspace(-1, 1, mod.bias.numel()))
        want = mod(x)
        with listing._ZeroProducts():
            got = mod(x)
    assert got.shape == want.shape and got.stride() == want.stride() and torch.equal(got, want)
