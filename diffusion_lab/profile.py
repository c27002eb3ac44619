"""Compute profiles: one switch, ``DIFFUSION_LAB_PROFILE`` = ``cpu`` or ``gpu``, decides how much work a
chapter does. Default: ``gpu`` when CUDA is available, else ``cpu``. Both paths run the same code with
different numbers (see :func:`by_profile`)."""
from __future__ import annotations

import os

import torch

from .errors import UnknownNameError

PROFILES = ("cpu", "gpu")
ENV_VAR = "DIFFUSION_LAB_PROFILE"


def get_profile() -> str:
    """The active profile: the environment variable if set, else ``gpu`` with CUDA, else ``cpu``."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value:
        if value not in PROFILES:
            raise UnknownNameError(f"{ENV_VAR} must be one of {PROFILES}, got {value!r}", given=value, allowed=PROFILES)
        return value
    return "gpu" if torch.cuda.is_available() else "cpu"


def by_profile(cpu, gpu):
    """Pick the value for the active profile: ``steps = by_profile(cpu=300, gpu=20_000)``."""
    return gpu if get_profile() == "gpu" else cpu
