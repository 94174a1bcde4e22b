"""Timing networks and parts in the runtime they will ship on: each exported through the
runtime's :class:`~mobilenets.deploy.mobile.Runtime` (ONNX Runtime, ExecuTorch-XNNPACK, LiteRT;
fp32 or INT8 calibrated on generated images), loaded with the table's threads and run at batch
1. :func:`runtime_timer` times one part for a table entry; :func:`measure_network` one whole
network; :func:`measure_networks` several in one interleaved run (to compare them)."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from ..archs.spec import NetSpec
from ..models.info import ModelInfo, set_model_info
from ..models.mobilenet import MobileNet

#: ``--runtime`` -> the export format of :func:`mobilenets.deploy.runtimes.runtime_for` (``roofline``: none)
RUNTIMES = {"ort": "onnx", "executorch": "executorch", "litert": "tflite", "roofline": None}
PRECISIONS = ("fp32", "int8")


def time_callable(fn: Callable[[], object], seconds: float = 0.5, min_runs: int = 10, warmup: int = 3,
                  max_runs: int = 2000) -> dict:
    """Mean, standard deviation, median and quartiles (ms) of ``fn()`` over about ``seconds``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_runs or (time.perf_counter() < t_end and len(times) < max_runs):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    q = statistics.quantiles(times, n=4)
    return {"ms": statistics.fmean(times), "std": statistics.stdev(times), "median": statistics.median(times),
            "p25": q[0], "p75": q[2], "n": len(times)}


def _runtime(runtime: str, precision: str):
    from ..deploy.runtimes import runtime_for

    check_runtime(runtime, precision)
    if runtime == "roofline":
        raise ValueError("the roofline runtime is computed, not timed (RooflineCost)")
    rt = runtime_for(RUNTIMES[runtime])
    rt.require()
    return rt


def _export_runner(rt, module: nn.Module, in_shape: tuple, precision: str, threads: int, folder: str,
                   name: str = "part") -> Callable[[], object]:
    """``module`` exported alone through ``rt`` into ``folder`` (INT8: calibrated on generated
    images) and loaded with ``threads`` threads: a callable that runs the file once at batch 1."""
    from ..deploy.mobile import export_mobile

    net = copy.deepcopy(module).eval()  # a model, or a part's materialized module
    c = in_shape[0]  # a part's input is a feature map: no image normalisation
    set_model_info(net, ModelInfo(name=type(module).__name__, in_chans=c, num_classes=0, mean=(0.0,) * c,
                                  std=(1.0,) * c, input_size=tuple(in_shape)))
    path = Path(folder) / f"{name}{rt.suffix}"
    int8 = precision == "int8"
    export_mobile(rt, net, path, input_size=in_shape[1:], calib="fake" if int8 else None, int8=int8,
                  verify=False, allow_fallback=True, min_size=1)
    run = rt.runner(str(path), threads=threads)
    x = torch.randn(1, *in_shape, generator=torch.Generator().manual_seed(0))

    def call():
        with torch.no_grad():
            return run(x)
    return call


def runtime_timer(runtime: str, precision: str = "fp32", threads: int = 1,
                  seconds: float = 0.5) -> Callable[[nn.Module, tuple], dict]:
    """``measure(module, in_shape) -> stats``: export ``module`` alone through ``runtime``'s
    :class:`~mobilenets.deploy.mobile.Runtime` (INT8: calibrated on generated images), run the
    file at batch 1 with ``threads`` threads and time it (:func:`time_callable`)."""
    rt = _runtime(runtime, precision)

    def measure(module: nn.Module, in_shape: tuple) -> dict:
        with tempfile.TemporaryDirectory(prefix="mobilenets-latency-") as d:
            return time_callable(_export_runner(rt, module, in_shape, precision, threads, d), seconds=seconds)
    return measure


def check_runtime(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


def roofline_network_ms(spec: NetSpec, input_size: Sequence[int], ridge_point: float, peak_macs: float,
                        num_classes: int = 1000, precision: str = "fp32") -> float:
    """Roofline ms of the whole network at a ridge point: every layer of it once (the network
    profiled on the meta device: shapes only)."""
    from ..analysis.profile import profile
    from ..analysis.roofline import bandwidth_for, roofline
    from ..models.info import ModelInfo, set_model_info

    with torch.device("meta"):
        model = MobileNet(spec, num_classes=num_classes).eval()
    set_model_info(model, ModelInfo(name="probe", num_classes=num_classes))
    res = roofline(profile(model, tuple(input_size), dtype=precision), peak_macs, bandwidth_for(ridge_point, peak_macs))
    return sum(lt.time * 1e3 for lt in res.layers)


def measure_network(spec: NetSpec, table, seconds: float = 1.0,
                    num_classes: Optional[int] = None) -> dict:
    """Whole-network latency of ``spec`` in ``table``'s runtime, precision and threads
    (``num_classes``: the head's outputs, default the table's)."""
    meta = table.meta
    num_classes = meta["num_classes"] if num_classes is None else num_classes
    if meta["runtime"] == "roofline":
        ms = roofline_network_ms(spec, table.input_size, meta["ridge_point"], meta["peak_macs"], num_classes,
                                 meta["precision"])
        return {"ms": ms, "median": ms, "std": 0.0, "n": 1}
    model = MobileNet(spec, num_classes=num_classes).eval()
    return runtime_timer(meta["runtime"], meta["precision"], meta["threads"], seconds)(model, (3, *table.input_size))


def measure_networks(specs: Sequence[NetSpec], table, seconds: float = 1.0,
                     num_classes: Optional[int] = None) -> list[dict]:
    """Whole-network latencies of ``specs`` in ``table``'s runtime, precision and threads, all
    exported first and then timed in one interleaved run (:func:`~mobilenets.deploy.timing.
    interleaved_timings`, about ``seconds`` each), so a load change hits them alike: compare
    them with each other rather than with a number measured at another time. Each: ``ms`` (the
    median), ``p25``, ``p75``, ``n``."""
    from ..deploy.timing import interleaved_timings

    meta = table.meta
    num_classes = meta["num_classes"] if num_classes is None else num_classes
    if meta["runtime"] == "roofline":
        return [measure_network(s, table, seconds, num_classes) for s in specs]
    rt = _runtime(meta["runtime"], meta["precision"])
    with tempfile.TemporaryDirectory(prefix="mobilenets-networks-") as d:
        runners = {str(i): _export_runner(rt, MobileNet(spec, num_classes=num_classes), (3, *table.input_size),
                                          meta["precision"], meta["threads"], d, f"net{i}")
                   for i, spec in enumerate(specs)}
        t = interleaved_timings(runners, seconds=seconds * len(specs), max_repeats=400)
    return [{k: t[str(i)][k] for k in ("ms", "p25", "p75", "n")} for i in range(len(specs))]


__all__ = ["PRECISIONS", "RUNTIMES", "check_runtime", "measure_network", "measure_networks", "roofline_network_ms",
           "runtime_timer", "time_callable"]
