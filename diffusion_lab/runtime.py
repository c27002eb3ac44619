"""Where and how the training loop runs: the device (cuda > mps > cpu), mixed precision, the processes of a
``torchrun`` launch, and the RNG states that a checkpoint saves so a resumed run continues exactly."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["default_device", "resolve_amp", "distributed", "rng_states", "set_rng_states"]


def default_device() -> torch.device:
    """cuda > mps > cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_amp(amp, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``"auto"`` → bf16 on CUDA where supported, else fp16 on CUDA, else none (full float32).
    ``"bf16"`` / ``"fp16"`` force one; ``"off"`` / ``None`` / ``False`` disable it."""
    if amp in (None, False, "off", "no", "fp32", "none"):
        return None
    if amp in (True, "auto"):
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if amp not in table:
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {amp!r}")
    return table[amp]


def distributed(device_arg) -> tuple[int, int, torch.device | None]:
    """(rank, world_size, device) — initialises the process group under ``torchrun`` (RANK / WORLD_SIZE set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return 0, 1, None
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device_arg in ("auto", None) or "cuda" in str(device_arg))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = None
    if torch.cuda.is_available() and (device_arg in ("auto", None) or "cuda" in str(device_arg)):
        local = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return rank, world, device


def rng_states(gen: torch.Generator, device: torch.device) -> dict:
    states = {"generator": gen.get_state(), "torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["torch_cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict, gen: torch.Generator, device: torch.device) -> None:
    if "generator" in states:
        gen.set_state(states["generator"])
    if "torch_cpu" in states:
        torch.set_rng_state(states["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in states:
        torch.cuda.set_rng_state(states["torch_cuda"], device)


