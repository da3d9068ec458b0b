"""objdecomp/training/allocator.py: large CPU tensors reuse freed memory instead of faulting in fresh pages."""

import os
import subprocess
import sys

import pytest

# Run in a fresh process: the setting is process-wide, and a ReDO fit earlier in the test session
# may already have made it.
PAGE_FAULTS = """
import resource, torch
from objdecomp.training.allocator import reuse_freed_memory

def page_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        block = torch.ones(64, 2**20 // 4)  # 64 MiB, above glibc's largest mmap threshold
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

fresh = page_faults()
taken = reuse_freed_memory()
page_faults()  # the heap grows once
print(fresh, taken, page_faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_tensors_stop_faulting_in_fresh_pages():
    out = subprocess.run([sys.executable, "-c", PAGE_FAULTS], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    fresh, taken, reused = out.stdout.split()
    assert int(fresh) > 4 * 16000  # every 64 MiB block mapped afresh: 16k pages each
    assert taken == "True" and int(reused) < 1000
