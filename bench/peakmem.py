"""Peak resident memory of this process, for the benchmarks' analysing children.

`resource.getrusage(RUSAGE_SELF).ru_maxrss` is not it in a child started by fork + exec: Linux carries the parent's
high-water mark across `execve`, so a child of a 2-GB renderer reports at least 2 GB whatever it used (session 25: every
cached family-5 study "peaked" at the pool worker's 2334 MB). `VmHWM` in /proc/self/status is the high-water mark of this
process's own address space, reset by exec."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak resident set size (MB) since its exec: VmHWM, or ru_maxrss where /proc is not there."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
