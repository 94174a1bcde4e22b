"""The weight-sharing supernet (issue 25, item 3): a path and its standalone model compute the
same function, gradients stay on the path, a small path is cheap, BatchNorm recalibration,
TuNAS's all-ops warm-up path."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mobilenets
from conftest import randomize_bn, rel_max_err
from mobilenets.archs.spec import parse_net
from mobilenets.search.controller import ALL
from mobilenets.search.sliced import BlockSlot
from mobilenets.search.space import SearchSpace, StageSpace
from mobilenets.search.spaces import SPACES
from mobilenets.search.supernet import Supernet

_BN = torch.nn.modules.batchnorm._BatchNorm

# small user spaces for what the shipped ones lack: a fixed uir and mqa block after a searched
# stage (their input width varies), and a stride-1 searched stage last (a shortcut on its
# first block when the widths match; the head's input width varies)
TINY = {
    "uir_after": SearchSpace("uir_after", parse_net(
        "mobilenetv4:stem=16,act=relu,layer_scale=0.1:cn_r1_k3_s2_c16:uir_r1_k3_s1_e2_c32_a3"), 1,
        (StageSpace(depths=(1, 2), filters=(16, 24), expansions=(2.0, 3.0), stride=2),)),
    "mqa_after": SearchSpace("mqa_after", parse_net(
        "mobilenetv4:stem=16,act=relu,layer_scale=0.1:cn_r1_k3_s2_c16:mqa_r1_k3_s1_c32_h2_d8_v2_q1"), 1,
        (StageSpace(depths=(1, 2), filters=(16, 24), expansions=(2.0, 3.0), stride=2),)),
    "searched_last": SearchSpace("searched_last", parse_net(
        "mobilenetv4:stem=16,act=relu,head=32,head_norm=1:cn_r1_k3_s2_c16"), 1,
        (StageSpace(depths=(1, 2), filters=(16, 24), expansions=(2.0, 4.0), stride=2),
         StageSpace(depths=(1, 2), filters=(24, 32), ops=((0, 0), (3, 5), (0, 3)), stride=1))),
}


def _space(name: str) -> SearchSpace:
    return TINY[name] if name in TINY else SPACES[name].with_width(0.25)


def _batches(n: int, size: int = 64, seed: int = 1) -> list:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, size, size, generator=g) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(SPACES) + sorted(TINY))
def test_a_path_computes_what_its_standalone_model_does(name):
    space = _space(name)
    torch.manual_seed(0)
    net = randomize_bn(Supernet(space, num_classes=5), calibrate=False)
    rng = random.Random(name)
    choices = [space.sample(rng) for _ in range(2 if name.startswith("mnv4_") else 4)]
    if name in SPACES:  # and the hand-designed model the space contains
        choices.append(SPACES[name].encode(mobilenets.model_spec(SPACES[name].contains[0])))
    x = _batches(1, 48, seed=2)[0]
    for choice in choices:
        net.set_path(choice)
        net.recalibrate_bn(_batches(2, 48))
        model = net.extract(choice).eval()
        net.eval()
        with torch.no_grad():
            err = rel_max_err(model(x), net(x))
        net.train()
        assert err <= 1e-5, (space.to_spec(choice), err)
        # the extracted weights are the registry layout of that spec string
        ref = mobilenets.create_model(str(space.to_spec(choice)), num_classes=5)
        ref.load_state_dict(model.state_dict(), strict=True)


def test_gradients_reach_only_the_paths_weights():
    space = SPACES["mnv4_conv_small"].with_width(0.25)
    net = Supernet(space, num_classes=5)
    # the smallest depth and filters, an IB with a 3x3 middle depthwise, the smallest expansion
    choice = {d.name: d.choices.index("a0k3") if d.name.endswith(".op") else 0 for d in space.decisions()}
    net.set_path(choice)
    assert space.to_spec(choice).stages[2][0].to_string() == "uir_r1_k3_s2_e2_c48"
    net(_batches(1)[0]).sum().backward()

    stage = net.stages[2]
    slot = stage[0].uib
    c_in, mid, out = 16, 32, 16  # 64 * 0.25; make_divisible(16 * 2); 48 * 0.25 -> 16
    assert (slot.expand.conv.weight.grad[:mid, :c_in] != 0).float().mean() > 0.9
    assert not slot.expand.conv.weight.grad[mid:].any()
    assert not slot.expand.bn.weight.grad[mid:].any() and slot.expand.bn.weight.grad[:mid].any()
    assert not slot.project.conv.weight.grad[out:].any() and not slot.project.conv.weight.grad[:, mid:].any()
    dw = slot.dw_mid.conv.weight.grad  # the 5x5 shared kernel: only its centre 3x3 ran
    assert dw.shape[-1] == 5 and (dw[:mid, :, 1:4, 1:4] != 0).float().mean() > 0.9
    ring = dw.clone()
    ring[:, :, 1:4, 1:4] = 0
    assert not ring.any() and not dw[mid:].any()
    assert slot.dw_start.conv.weight.grad is None  # no start depthwise on this path
    depth = space.stages[0].depths[0]
    for off in stage[depth:]:  # slots past the chosen depth never ran
        assert all(p.grad is None for p in off.parameters())
    conv960 = net.stages[4][0].conv.weight.grad  # its input: the last searched stage's 16 channels
    assert conv960[:, :16].abs().sum() > 0 and not conv960[:, 16:].any()


def _macs(module, x) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


def test_a_smaller_path_costs_less_and_exactly_its_standalone_model():
    space = SPACES["mnv4_conv_small"].with_width(0.25)
    net = Supernet(space, num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    small = {d.name: 0 for d in space.decisions()}
    large = {d.name: len(d.choices) - 1 for d in space.decisions()}
    costs = {}
    for label, choice in (("small", small), ("large", large)):
        net.set_path(choice)
        costs[label] = _macs(net, x)
        assert costs[label] == _macs(net.extract(choice), x)  # slicing: the path's own cost, no more
    assert costs["small"] * 2 < costs["large"]  # the fixed stem, 960 conv and head cost both the same


def test_bad_choices_get_the_spaces_error():
    space = SPACES["mnv4_conv_small"].with_width(0.25)
    net = Supernet(space, num_classes=5)
    good = space.sample(random.Random(0))
    net.set_path(good)
    missing = dict(good)
    del missing["s1.b2.e"]
    with pytest.raises(ValueError, match=r"the choice has no 's1.b2.e'"):
        net.set_path(missing)
    with pytest.raises(ValueError, match=r"decision s0.filters takes an index in \[0, 5\).*got 9"):
        net.set_path({**good, "s0.filters": 9})
    with pytest.raises(ValueError, match=r"unknown decision 's0.fliters'; did you mean s0.filters"):
        net.set_path({**good, "s0.fliters": 0})
    with pytest.raises(ValueError, match=r"'all' .* op decisions only, got it for 's0.depth'"):
        net.set_path({**good, "s0.depth": ALL})
    assert net.path == space.canonical(good)  # a refused path changes nothing
    with pytest.raises(ValueError, match=r"decision s0.b0.op takes an index"):
        net.extract({**good, "s0.b0.op": ALL})  # no standalone model runs every op
    with pytest.raises(TypeError, match="expected a SearchSpace, got str"):
        Supernet("mnv4_conv_small")
    with pytest.raises(ValueError, match=r"follows a searched stage.*got er"):
        Supernet(SearchSpace("er_after", parse_net("mobilenetv4:stem=16,act=relu:cn_r1_k3_s2_c16:er_r1_k3_s1_e2_c16"),
                             1, (StageSpace(depths=(1,), filters=(16, 24)),)))


def test_the_all_ops_path_trains_every_depthwise_weight():
    # max depth and filters: every slot runs at full width; 160 px leaves a 5x5 map at stride 32,
    # so every tap of a 5x5 kernel sees the image, not only the padding
    space = SPACES["mnv4_conv_small"].with_width(0.25)
    net = Supernet(space, num_classes=5)
    assert net.path == net.full_path() and net.warmup_fallback() == {
        k: v for k, v in net.full_path().items() if k.endswith((".op", ".filters"))}
    assert net.full_path()["s0.filters"] == 4 and net.full_path()["s0.b3.op"] == ALL
    net(_batches(1, 160)[0][:2]).sum().backward()
    dws = [c.conv.weight for st in net.stages for m in st if isinstance(m, BlockSlot)
           for c in (m.uib.dw_start, m.uib.dw_mid)]
    assert len(dws) == 2 * 16 and all(w.shape[-1] == 5 for w in dws)
    assert all(torch.all(w.grad != 0) for w in dws)


def test_the_all_ops_path_runs_the_mqa_too():
    base = SPACES["mnv4_hybrid_medium"].with_width(0.25)
    space = SearchSpace("hybrid_shallow", base.frame, base.insert_at,
                        tuple(st.restrict(depths=(2,)) for st in base.stages))
    net = Supernet(space, num_classes=5)
    net(_batches(1, 64)[0][:2]).sum().backward()
    mqas = [m.mqa for st in net.stages for m in st if isinstance(m, BlockSlot) and m.mqa is not None]
    assert len(mqas) == 2
    for m in mqas:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_recalibrate_bn_gives_the_paths_own_statistics():
    space = SPACES["mnv4_conv_small"].with_width(0.25)
    net = Supernet(space, num_classes=5)
    choice = space.sample(random.Random(3))
    depth = space.stages[0].depths[choice["s0.depth"]]
    off_path = [m for slot in net.stages[2][depth:] for m in slot.modules() if isinstance(m, _BN)]
    net.set_path(net.full_path())
    net(_batches(1)[0])  # training-mode statistics of another path
    before = [m.running_mean.clone() for m in off_path]
    net.set_path(choice)
    batches = _batches(3)
    assert net.recalibrate_bn([(x, torch.zeros(4)) for x in batches]) == 3  # (input, target) as loaders yield
    assert net.training

    # the reference: the standalone model's BatchNorms re-estimated on the same batches
    model = net.extract(choice)
    for m in model.modules():
        if isinstance(m, _BN):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for x in batches:
            model(x)
    ours = net.extract(choice).state_dict()
    for key, value in model.state_dict().items():
        if "running" in key:
            torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(off_path, before))  # off the path: kept
    assert all(m.momentum == space.frame.norm_momentum for m in net.modules() if isinstance(m, _BN))
    with pytest.raises(ValueError, match="expected at least one batch"):
        net.recalibrate_bn([])
