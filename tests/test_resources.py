"""Resources: repeated inference does not grow memory.

Peak RSS of inference and training per family is measured in benchmarks/bench_memory.py
(benchmarks/MEMORY.md), not asserted here: it depends on the allocator and the machine.
"""

import ctypes
import ctypes.util
import gc

import pytest
import torch

import mobilenets

# one model per family (MobileNetV4's attention hybrids and Mobile-Former's bridges included)
FAMILIES = ["mobilenetv1_025", "mobilenetv2_035", "mobilenetv3_small_050", "mobilenetv4_conv_small_035",
            "mobilenetv4_hybrid_medium_075", "mobileformer_26m"]
N_INFERENCES = 1000
#: RSS may settle by allocator noise, not grow with the number of calls (a leak of one 32x32
#: feature map per call would be > 30 MiB over the run)
MAX_GROWTH_MIB = 12.0


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def rss_mib() -> float:
    """Resident set size of this process's live memory (Linux /proc), in MiB.

    Memory freed earlier in the process (by the tests before) stays resident in malloc's heap and
    would absorb a leak unseen (in CI a 33 MiB leak showed as 6 MiB growth): glibc's
    ``malloc_trim`` hands the free heap back first, so what remains resident is what is live."""
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _growth(model, x, n: int) -> float:
    with torch.inference_mode():
        for _ in range(50):  # warm-up: allocator caches, oneDNN primitive caches
            model(x)
        before = rss_mib()
        for _ in range(n):
            model(x)
        return rss_mib() - before


pytestmark = pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"),
                                reason="needs Linux /proc to read RSS")


@pytest.mark.parametrize("name", FAMILIES)
def test_no_rss_growth_over_1000_inferences(name):
    torch.manual_seed(0)
    model = mobilenets.create_model(name, num_classes=10).eval()
    growth = _growth(model, torch.randn(1, 3, 32, 32), N_INFERENCES)
    assert growth <= MAX_GROWTH_MIB, f"{name}: RSS grew {growth:.1f} MiB over {N_INFERENCES} inferences"


def test_the_check_sees_a_leak():
    # the same measurement on a model that keeps every output: it must fail the bound, also when the
    # process holds freed memory from earlier work (interleaved with live blocks that pin the heap)
    junk, pins = [torch.randn(8, 32, 32) for _ in range(3000)], [torch.randn(10) for _ in range(3000)]
    del junk
    model = mobilenets.create_model("mobilenetv1_025", num_classes=0).eval()
    kept = []
    model.stem.register_forward_hook(lambda m, i, o: kept.append(o.clone()))  # 32 KiB a call
    growth = _growth(model, torch.randn(1, 3, 64, 64), N_INFERENCES)
    assert growth > MAX_GROWTH_MIB, f"a leak of {len(kept)} maps was not seen ({growth:.1f} MiB)"
    del pins
