"""The TuNAS controller, rewards and schedule (mobilenets.search.controller, .rewards, .schedule):
convergence on a synthetic latency model, exact resume, sampling that matches the probabilities,
the warm-up schedule, and two gloo processes that keep identical controllers."""

import io
import math
import os
import socket

import pytest
import torch

from mobilenets.search.controller import ALL, Controller, Decision, distributed_mean
from mobilenets.search.rewards import absolute_reward, check_target, mnas_reward
from mobilenets.search.schedule import rl_enabled, rl_learning_rate, warmup_probability, warmup_sample

# a synthetic latency model: each decision's choice costs this much, a path's latency is the sum;
# the costs differ per decision so many paths land near a mid-range target and only one is cheapest
COSTS = {"d0": (1.0, 2.0, 3.0), "d1": (1.0, 2.5, 4.0), "d2": (0.5, 1.5, 3.0), "d3": (1.0, 3.0, 5.0)}
CHEAPEST = sum(min(c) for c in COSTS.values())  # 3.5
DECISIONS = [Decision(n, tuple(f"op{i}" for i in range(len(c)))) for n, c in COSTS.items()]
QUALITY = 0.7  # constant: only the latency term can move the controller


def latency(path):
    return sum(COSTS[n][i] for n, i in path.items())


def _search(reward, target, steps, lr, seed=0):
    c = Controller(DECISIONS, lr=lr, seed=seed)
    for _ in range(steps):
        path = c.sample()
        c.step(path, reward(QUALITY, latency(path), target))
    return c


# -- rewards -------------------------------------------------------------------------------------

def test_absolute_reward_formula():
    assert absolute_reward(0.7, 10.0, 10.0) == pytest.approx(0.7)
    assert absolute_reward(0.7, 12.0, 10.0) == pytest.approx(0.7 - 0.10 * 0.2)
    assert absolute_reward(0.7, 8.0, 10.0) == pytest.approx(0.7 - 0.10 * 0.2)  # both sides penalized
    assert absolute_reward(0.7, 15.0, 10.0, beta=-0.5) == pytest.approx(0.7 - 0.5 * 0.5)


def test_mnas_reward_formula():
    assert mnas_reward(0.7, 10.0, 10.0) == pytest.approx(0.7)
    assert mnas_reward(0.7, 20.0, 10.0) == pytest.approx(0.7 * 2 ** -0.07)
    assert mnas_reward(0.7, 5.0, 10.0, w=-0.15) == pytest.approx(0.7 * 0.5 ** -0.15)
    # below the target the reward keeps growing: the soft constraint has no optimum at T0
    assert mnas_reward(0.7, 5.0, 10.0) > mnas_reward(0.7, 10.0, 10.0)


@pytest.mark.parametrize("fn", [absolute_reward, mnas_reward])
@pytest.mark.parametrize("args, match", [
    ((0.7, 0.0, 10.0), "latency: expected a number > 0, got 0"),
    ((0.7, -1.0, 10.0), "latency: expected a number > 0"),
    ((0.7, 5.0, 0.0), "target: expected a number > 0"),
    ((float("nan"), 5.0, 10.0), "quality: expected a finite number, got nan"),
    ((0.7, float("inf"), 10.0), "latency: expected a finite number, got inf"),
    (("high", 5.0, 10.0), "quality: expected a finite number, got 'high'"),
    ((0.7, 5.0, 10.0, 0.1), "expected a value <= 0"),
])
def test_rewards_reject_bad_input(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_check_target():
    check_target(3.5, CHEAPEST)  # exactly the cheapest: reachable
    check_target(8.0, CHEAPEST)
    with pytest.raises(ValueError, match=r"latency target 3 is below the cheapest architecture .*\(3.5\)"):
        check_target(3.0, CHEAPEST)
    with pytest.raises(ValueError, match="target: expected a number > 0"):
        check_target(-1.0, CHEAPEST)


# -- convergence on the synthetic latency model ------------------------------------------------

@pytest.mark.parametrize("target", [6.0, 11.0])
def test_absolute_reward_converges_to_the_target(target):
    # untrained, the most likely path is all index 0 (latency 3.5), far from either target
    c = _search(absolute_reward, target, steps=2000, lr=0.02)
    found = latency(c.most_likely())
    assert abs(found / target - 1) <= 0.05, (target, found, c.probabilities())
    # and the controller is committed to it, not still spread out
    assert min(max(p) for p in c.probabilities().values()) > 0.5


def test_mnas_reward_converges_to_the_cheapest():
    c = _search(mnas_reward, 8.0, steps=600, lr=0.05)
    assert latency(c.most_likely()) == CHEAPEST
    assert all(p[0] > 0.9 for p in c.probabilities().values()), c.probabilities()


# -- the controller --------------------------------------------------------------------------------

def test_decision_validation():
    with pytest.raises(ValueError, match="expected at least 1 choice"):
        Decision("x", ())
    with pytest.raises(ValueError, match="choices must be a tuple, got list"):
        Decision("x", [1, 2])
    with pytest.raises(ValueError, match="non-empty string"):
        Decision("", (1,))
    with pytest.raises(ValueError, match="not printable"):
        Decision("x", (object(),))
    with pytest.raises(ValueError, match="distinct"):
        Decision("x", (3, 3))
    Decision("x", (None, 3, (3, 5), "uib"))  # scalars and tuples of them print
    with pytest.raises(ValueError, match=r"duplicates \['a'\]"):
        Controller([Decision("a", (1,)), Decision("a", (2,))])


def test_sample_api_and_validation():
    c = Controller(DECISIONS, seed=0)
    s = c.sample()
    assert set(s) == set(COSTS) and all(0 <= s[n] < 3 for n in s)
    assert c.values(s) == {n: f"op{s[n]}" for n in s}
    assert c.entropy() == pytest.approx(4 * math.log(3))  # uniform at start
    assert float(c.log_prob(s).detach()) == pytest.approx(4 * math.log(1 / 3))
    with pytest.raises(ValueError, match=r"missing \['d3'\]"):
        c.log_prob({"d0": 0, "d1": 0, "d2": 0})
    with pytest.raises(ValueError, match=r"sample\['d0'\]: expected a choice index in \[0, 3\), got 3"):
        c.log_prob(dict(s, d0=3))
    with pytest.raises(ValueError, match="one reward per sample"):
        c.step([s, s], [1.0])
    with pytest.raises(ValueError, match=r"rewards\[0\]: expected a finite number, got nan"):
        c.step(s, float("nan"))


def test_step_is_reinforce_with_a_debiased_ema_baseline():
    c = Controller(DECISIONS, lr=0.1, seed=0)
    s = c.sample()
    assert c.baseline is None
    # the first baseline is the reward itself (zero-debiased), so the first advantage is 0
    assert c.step(s, 0.5) == pytest.approx(0.0)
    assert c.baseline == pytest.approx(0.5)
    # second: EMA (0.05*0.5*0.95 + 0.05*1.0) / (1 - 0.95**2)
    b2 = (0.95 * 0.05 * 0.5 + 0.05 * 1.0) / (1 - 0.95 ** 2)
    assert c.step(s, 1.0) == pytest.approx(1.0 - b2)
    assert c.baseline == pytest.approx(b2)
    # a positive advantage raised the sampled choices' probabilities
    probs = c.probabilities()
    assert all(probs[n][s[n]] > 1 / 3 for n in s)
    # several paths in one step return one advantage each, against the mean's baseline
    adv = c.step([s, c.sample()], [0.2, 0.4])
    assert adv == pytest.approx([0.2 - c.baseline, 0.4 - c.baseline])
    # lr=0: the baseline moves, the logits do not
    before = [lg.detach().clone() for lg in c.logits]
    c.step(s, 5.0, lr=0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, c.logits))


def test_state_dict_round_trip_is_exact():
    a = Controller(DECISIONS, lr=0.05, seed=3)
    for _ in range(30):
        s = a.sample()
        a.step(s, absolute_reward(QUALITY, latency(s), 8.0))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # as a checkpoint does
    buf.seek(0)
    b = Controller(DECISIONS, lr=0.05, seed=999)  # another seed: everything must come from the state
    b.load_state_dict(torch.load(buf, weights_only=False))
    for _ in range(30):
        sa, sb = a.sample(), b.sample()
        assert sa == sb
        ra = absolute_reward(QUALITY, latency(sa), 8.0)
        assert a.step(sa, ra) == b.step(sb, ra)
    for x, y in zip(a.logits, b.logits):
        assert torch.equal(x, y)  # bit-identical: Adam's moments were restored too
    assert a.baseline == b.baseline and a.steps == b.steps == 60
    with pytest.raises(ValueError, match="controller state is for other decisions"):
        Controller(DECISIONS[:2]).load_state_dict(a.state_dict())


def test_sampling_matches_the_probabilities():
    c = Controller(DECISIONS, seed=0)
    target = [(1.2, 0.5, -1.0), (0.0, 0.0, 2.0), (-0.5, 0.3, 0.1), (3.0, 0.0, 0.0)]
    with torch.no_grad():
        for lg, t in zip(c.logits, target):
            lg.copy_(torch.tensor(t))
    probs = c.probabilities()
    n = 20000
    counts = {d: [0, 0, 0] for d in COSTS}
    for _ in range(n):
        for d, k in c.sample().items():
            counts[d][k] += 1
    for d in COSTS:
        for k, p in enumerate(probs[d]):
            # each count is Binomial(n, p): 4.5 standard deviations is a ~7e-6 two-sided tail
            # per cell, while a sampler off by one choice or ignoring the logits misses by
            # hundreds of standard deviations
            std = math.sqrt(n * p * (1 - p))
            assert abs(counts[d][k] - n * p) <= 4.5 * std, (d, k, counts[d], probs[d])


def test_most_likely_breaks_ties_to_the_lowest_index():
    c = Controller(DECISIONS, seed=0)
    with torch.no_grad():
        c.logits[1].copy_(torch.tensor([0.0, 2.0, 2.0]))
    assert c.most_likely() == {"d0": 0, "d1": 1, "d2": 0, "d3": 0}


# -- schedule: RL delay, learning rate, warm-up ------------------------------------------------

def test_rl_delay_and_learning_rate_schedule():
    assert [rl_enabled(s, 100) for s in (0, 24, 25, 99)] == [False, False, True, True]
    assert rl_enabled(0, 100, delay_frac=0.0)
    assert rl_learning_rate(24, 100, base_lr=1.0) == 0.0
    assert rl_learning_rate(25, 100, base_lr=1.0) == pytest.approx(1.0)
    assert rl_learning_rate(100, 100, base_lr=1.0) == pytest.approx(10.0)
    assert rl_learning_rate(60, 100, base_lr=1.0, growth=1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"delay_frac: expected a fraction in \[0, 1\], got 1.5"):
        rl_enabled(3, 100, delay_frac=1.5)
    with pytest.raises(ValueError, match="total: expected the number of search steps"):
        rl_enabled(3, 0)


def test_warmup_probability_decays_linearly():
    assert [warmup_probability(s, 100) for s in (0, 5, 10, 20, 25, 80)] == \
        pytest.approx([1.0, 0.8, 0.6, 0.2, 0.0, 0.0])
    assert warmup_probability(0, 100, warmup_frac=0.0) == 0.0


def test_warmup_sample_overrides_with_the_scheduled_probability():
    c = Controller(DECISIONS, seed=0)
    fallback = {"d0": 2, "d1": ALL}  # d0: widest filters; d1: every op at once
    n, total = 4000, 100
    # step 10 of 100: overridden with probability 0.6 (on top of the controller's own 1/3 for d0=2)
    paths = [warmup_sample(c, 10, total, fallback) for _ in range(n)]
    p_all = sum(p["d1"] == ALL for p in paths) / n
    p_wide = sum(p["d0"] == 2 for p in paths) / n
    for observed, expected in ((p_all, 0.6), (p_wide, 0.6 + 0.4 / 3)):
        assert abs(observed - expected) <= 4.5 * math.sqrt(expected * (1 - expected) / n), observed
    assert all(p["d2"] != ALL and p["d3"] != ALL for p in paths)  # no fallback: never overridden
    # after the warm-up the controller's own paths come back unchanged
    late = warmup_sample(c, 25, total, fallback)
    assert all(isinstance(v, int) for v in late.values())
    # a warm-up path with every op enabled has no log-probability
    with pytest.raises(ValueError, match="'all' .* has no log-probability"):
        c.step(paths[[p["d1"] for p in paths].index(ALL)], 0.5)
    with pytest.raises(ValueError, match="unknown decision 'dx'"):
        warmup_sample(c, 0, total, {"dx": 0})
    with pytest.raises(ValueError, match=r"fallback of 'd0' must be 'all' or a choice index in \[0, 3\), got 7"):
        warmup_sample(c, 0, total, {"d0": 7})


# -- two gloo processes -------------------------------------------------------------------------

def _gloo_worker(rank: int, world: int, port: int, out: str, steps: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        c = Controller(DECISIONS, lr=0.05, seed=0)  # same seed on every rank
        paths, rewards = [], []
        for _ in range(steps):
            s = c.sample()
            r = absolute_reward(QUALITY, latency(s), 8.0)
            c.step(s, r)
            paths.append(s)
            rewards.append(r)
        mean = distributed_mean([float(rank)])  # helper: the all-reduced mean of 0 and 1
        torch.save({"logits": [lg.detach() for lg in c.logits], "baseline": c.baseline,
                    "paths": paths, "rewards": rewards, "mean": mean,
                    "rng": c.generator.get_state()}, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_keep_identical_controllers(tmp_path):
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    steps = 8
    mp.spawn(_gloo_worker, args=(2, port, str(tmp_path), steps), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=False) for i in range(2))
    # each rank sampled its own paths ...
    assert r0["paths"] != r1["paths"]
    # ... yet the replicas stayed identical, bit for bit
    for a, b in zip(r0["logits"], r1["logits"]):
        assert torch.equal(a, b)
    assert r0["baseline"] == r1["baseline"] and torch.equal(r0["rng"], r1["rng"])
    assert r0["mean"] == r1["mean"] == 0.5
    # and equal to one process stepping on both ranks' paths at once: the all-reduced reward
    # mean went into the baseline and the gradients were averaged
    ref = Controller(DECISIONS, lr=0.05, seed=0)
    for t in range(steps):
        ref.step([r0["paths"][t], r1["paths"][t]], [r0["rewards"][t], r1["rewards"][t]])
    assert ref.baseline == pytest.approx(r0["baseline"], abs=1e-12)
    for a, b in zip(ref.logits, r0["logits"]):
        assert torch.allclose(a.detach(), b, atol=1e-6), (a, b)
    assert any(lg.abs().max() > 0.01 for lg in r0["logits"])  # and it did learn something
