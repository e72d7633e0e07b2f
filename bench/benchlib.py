"""Small helpers every bench script shares: what machine it ran on, one-core pinning, load notes."""

from __future__ import annotations

import os
import platform

import numpy as np


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


# YASA 0.8's stage names (`yasa.Hypnogram.hypno` holds WAKE/N1/N2/N3/REM; older releases W and R) -> our codes
YASA_STAGE_CODES = {"WAKE": 0, "W": 0, "N1": 1, "N2": 2, "N3": 3, "REM": 4, "R": 4}


def yasa_stage_codes(hypnogram) -> np.ndarray:
    """[n_epochs] int8 stage codes (0 W ... 4 REM) of what `yasa.SleepStaging.predict()` returns."""
    values = hypnogram.hypno.values if hasattr(hypnogram, "hypno") else hypnogram
    return np.array([YASA_STAGE_CODES[str(v)] for v in values], np.int8)
