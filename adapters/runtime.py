"""The machine the weights run on: how many torch threads, and whether a process still lives.

Fewer intra-op threads than cores by default: with every core busy, OpenMP threads wait on each
other at every matmul, and decoding on 2 cores was measured twenty times slower (24 tokens: 46 s
with 2 threads while other work ran, 2 s with 1). The server, `refinery mine` and the benchmarks
take the same default from here.
"""

from __future__ import annotations

import os


def default_threads(requested: int = 0) -> int:
    """`requested`, or cores - 1 (at least 1, at most 8) when it is 0."""
    return requested or max(1, min(8, (os.cpu_count() or 2) - 1))


def set_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads (see `default_threads`); returns the number set."""
    import torch

    n = default_threads(requested)
    torch.set_num_threads(n)
    return n


def pid_alive(pid: int | None) -> bool:
    """Does a process with this id exist on this machine (owned by anyone)?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # exists, owned by another user
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    return True
