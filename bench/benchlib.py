"""Small helpers every bench script shares: what machine it ran on, one-core pinning, load notes."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """The processor name, or the architecture where the platform does not report one."""
    return platform.processor() or platform.machine()


def pin_to_one_core() -> None:
    """Run this process on one core (where the OS supports affinity), for one-core figures."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def print_load(load_start: tuple[float, float, float]) -> None:
    """Say how busy the machine was: other processes take CPU from the figures."""
    print(f"1-min load average at start / end: {load_start[0]:.2f} / {os.getloadavg()[0]:.2f} "
          f"(other processes on this machine take CPU from the figures above)")
