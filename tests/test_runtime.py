"""malloc tuning: large buffers stay in the heap instead of being returned to the kernel and faulted back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from visloc.runtime import tune_malloc

CHURN = """
import sys, numpy as np, resource
from visloc.runtime import tune_malloc
if sys.argv[1] == "tune":
    assert tune_malloc()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def churn():  # the allocation pattern of an image pipeline: several large buffers, freed, again
    before = faults()
    for _ in range(10):
        arrays = [np.ones(15 * 1024 * 1024 // 8) for _ in range(3)]
        del arrays
        big = np.ones(20 * 1024 * 1024 // 8)
        del big
    return faults() - before
churn()
print(churn())
"""


def _steady_state_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tune_malloc_keeps_large_buffers_in_the_heap() -> None:
    untuned, tuned = _steady_state_faults("none"), _steady_state_faults("tune")
    # untuned glibc trims the heap top after each round (each 4 KiB page faults back in); tuned it does not
    assert untuned > 1000
    assert tuned < untuned / 10


def test_tune_malloc_is_idempotent() -> None:
    first = tune_malloc()
    assert tune_malloc() == first


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt(M_ARENA_MAX) is glibc's (Linux)")
def test_malloc_arena_cap_applies_on_glibc() -> None:
    import platform

    from visloc.runtime import limit_malloc_arenas

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert limit_malloc_arenas(2) is True


def test_torch_threads_pins_and_restores() -> None:
    import torch

    from visloc.runtime import torch_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), torch_threads(1):
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
