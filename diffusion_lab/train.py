"""The one training loop (book chapters 4–7; the CLI uses it too).

:func:`train` minimises L_simple (eq. 4.9, :func:`diffusion_lab.diffusion.loss_simple`) — DDPM's Algorithm 1:

    repeat:  x_0 ~ data,  t ~ Uniform{0…T-1},  ε ~ N(0, I)
             take a gradient step on ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²

with AdamW, linear LR warm-up, gradient clipping and an exponential moving average of the weights (DDPM §4,
appendix B: EMA decay 0.9999). For a class-conditional model each label is replaced by the null label with
probability ``label_dropout`` (classifier-free guidance, Ho & Salimans 2022 §3.2). :func:`train_classifier`
runs the same loop with cross-entropy on noisy inputs (Dhariwal & Nichol 2021 §4).

Determinism: a minibatch is a slice of a per-epoch permutation that depends only on ``seed`` and the epoch;
t, ε and the label-dropout mask come from one seeded ``torch.Generator`` on the CPU, whose state (and the global
RNG's, which drives dropout; :func:`train` seeds it with ``seed``) is saved in checkpoints, so a resumed run
continues exactly on the same device (verified bit-for-bit on CPU and on an H200 in bf16). The draws are made for
the *global* batch; under ``torchrun`` each rank trains on its slice, so N processes reproduce one process
(``batch_size`` is global and must be divisible by the world size; only rank 0 logs and writes checkpoints).

Devices: ``device="auto"`` picks cuda > mps > cpu. On CUDA the loop uses bf16 autocast where supported (else fp16
with a ``GradScaler``) and channels_last; on the CPU it runs in float32, NCHW (channels_last measured no faster
there for the digits UNet). ``compile=True`` wraps the network in ``torch.compile`` (worth it on GPUs for long
runs; on a 2-core CPU compiling takes minutes).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint import checkpoint_files, load_training_state, save_checkpoint, unwrap_model
from .diffusion import loss_simple, q_sample
from .schedules import NoiseSchedule

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "train", "train_classifier", "default_device",
           "resolve_amp", "LinearWarmup"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (stored in checkpoints). ``batch_size`` is the global batch."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    label_dropout: float = 0.0
    amp: str | bool | None = "auto"
    compile: bool = False
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {self.warmup!r}")
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1], got {self.label_dropout}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1) or be None, got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")


@dataclass
class TrainResult:
    """What :func:`train` returns. ``losses[i]`` is the loss of step i+1 (the whole history when resumed);
    ``ema_model`` is the EMA network (eval mode; None without EMA) — the one to sample with."""

    losses: list
    model: nn.Module
    ema_model: nn.Module | None
    steps: int
    wall_time: float
    samples_per_s: float
    device: str
    amp: str | None
    config: dict = field(default_factory=dict)
    checkpoint: Path | None = None

    @property
    def sampling_model(self) -> nn.Module:
        """The EMA model when there is one, else the trained model."""
        return self.ema_model if self.ema_model is not None else self.model


class LinearWarmup:
    """LR multiplier for ``LambdaLR``: linear from 1/warmup to 1 over ``warmup`` steps, then constant."""

    def __init__(self, warmup: int):
        self.warmup = int(warmup)

    def __call__(self, step: int) -> float:
        return 1.0 if self.warmup <= 0 else min(1.0, (step + 1) / self.warmup)


# ----------------------------------------------------------------------------- devices, precision, processes
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


def _distributed(device_arg) -> tuple[int, int, torch.device | None]:
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


def _rng_states(gen: torch.Generator, device: torch.device) -> dict:
    states = {"generator": gen.get_state(), "torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["torch_cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, gen: torch.Generator, device: torch.device) -> None:
    if "generator" in states:
        gen.set_state(states["generator"])
    if "torch_cpu" in states:
        torch.set_rng_state(states["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in states:
        torch.cuda.set_rng_state(states["torch_cuda"], device)


# ----------------------------------------------------------------------------- data
def _unpack(data):
    if isinstance(data, torch.Tensor):
        x, y = data, None
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, torch.Tensor) or d is None for d in data):
        x, y = data
    else:
        raise TypeError("data must be a tensor x of shape (N, …) or a pair (x, y) with integer labels y of shape (N,)")
    if not x.dtype.is_floating_point:
        raise TypeError(f"data x must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"data x must have shape (N, …) with N > 0, got {tuple(x.shape)}")
    if y is not None:
        if y.dtype.is_floating_point or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"labels y must be an integer tensor of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    return x, y


class _EpochSampler:
    """Index ``i`` of the stream of training examples → example index. Epoch e is a permutation drawn from a
    generator seeded by (seed, e), so the stream depends only on the seed — any step can be re-entered."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._epoch, self._perm = n, seed, -1, None

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        pos = torch.arange(step * batch_size, (step + 1) * batch_size)
        epochs = pos // self.n
        out = torch.empty(batch_size, dtype=torch.long)
        for e in epochs.unique().tolist():
            m = epochs == e
            out[m] = self.perm(e)[pos[m] % self.n]
        return out


# ----------------------------------------------------------------------------- the loop
def _fit(model: nn.Module, schedule: NoiseSchedule, data, objective: str, cfg: TrainConfig, *, device, checkpoint_path,
         resume: bool, progress: bool, callback: Callable | None) -> TrainResult:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    x, y = _unpack(data)
    net = unwrap_model(model)
    num_classes = getattr(getattr(net, "config", None), "num_classes", None)
    if objective == "classifier":
        if y is None:
            raise ValueError("train_classifier needs labels y")
        if num_classes is not None and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes - 1}], got [{int(y.min())}, {int(y.max())}]")
    elif num_classes is None:
        y = None  # an unconditional model ignores labels in the data
    elif y is None:
        raise ValueError(f"{type(net).__name__} is class-conditional (num_classes={num_classes}); pass data=(x, y)")
    if cfg.label_dropout > 0 and (objective != "eps" or num_classes is None):
        raise ValueError("label_dropout needs a class-conditional denoiser (num_classes set)")

    rank, world, dist_device = _distributed(device)
    dev = dist_device or (default_device() if device in ("auto", None) else torch.device(device))
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} (global) must be divisible by the {world} processes")
    local_bs = cfg.batch_size // world
    amp_dtype = resolve_amp(cfg.amp, dev)
    channels_last = dev.type == "cuda" and x.dim() == 4

    net.to(dev)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    net.train()
    x = x.to(dev)
    y = y.to(dev) if y is not None else None

    torch.manual_seed(cfg.seed + rank)          # dropout masks
    gen = torch.Generator().manual_seed(cfg.seed)  # t, ε, label dropout: the same on every rank
    sampler = _EpochSampler(x.shape[0], cfg.seed)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) \
        if cfg.ema_decay is not None else None
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, LinearWarmup(cfg.warmup))
    scaler = torch.amp.GradScaler(dev.type) if amp_dtype == torch.float16 and dev.type == "cuda" else None

    start, losses = 0, []
    if resume and checkpoint_path is not None and checkpoint_files(checkpoint_path)["json"].exists():
        st = load_training_state(checkpoint_path, net, ema=ema, optimizer=optimizer, lr_scheduler=lr_sched)
        start, losses = st["step"], st["losses"][: st["step"]]
        _set_rng_states(st["rng_states"], gen, dev)
        if world > 1:
            torch.manual_seed(cfg.seed + rank + 7919 * start)

    fwd = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if world > 1 else net
    if cfg.compile:
        fwd = torch.compile(fwd)

    def objective_loss(x0, t, noise, labels):
        if objective == "eps":
            return loss_simple(fwd, schedule, x0, t, y=labels, noise=noise)
        return F.cross_entropy(fwd(q_sample(schedule, x0, t, noise), t).float(), labels)

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=start, disable=not progress or rank != 0, desc="train", dynamic_ncols=True)
    pending: list[torch.Tensor] = []
    flush_every = 1 if dev.type == "cpu" else cfg.log_every
    ckpt_out = None

    def flush(step_done: int):
        if not pending:
            return
        vals = torch.stack(pending).float().cpu().tolist()
        pending.clear()
        first = step_done - len(vals) + 1
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                bar.close()
                raise NonFiniteLossError(
                    f"loss became {v} at step {first + i} (of {cfg.steps}); lower lr (now {cfg.lr}), check the data "
                    "range ([-1, 1]) and the inputs, or keep grad_clip on")
        losses.extend(vals)

    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        idx = sampler.batch(step, cfg.batch_size)
        t = torch.randint(0, schedule.T, (cfg.batch_size,), generator=gen)
        noise = torch.randn((cfg.batch_size,) + tuple(x.shape[1:]), generator=gen)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout if cfg.label_dropout > 0 else None
        sl = slice(rank * local_bs, (rank + 1) * local_bs)
        x0 = x[idx[sl].to(dev)]
        labels = None
        if y is not None:
            labels = y[idx[sl].to(dev)]
            if drop is not None:
                labels = torch.where(drop[sl].to(dev), torch.full_like(labels, num_classes), labels)
        t_b, noise_b = t[sl].to(dev), noise[sl].to(dev)
        if channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
            noise_b = noise_b.contiguous(memory_format=torch.channels_last)

        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = objective_loss(x0, t_b, noise_b, labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr_sched.step()
        if ema is not None:
            ema.update_parameters(net)

        loss = loss.detach()
        if world > 1:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG if dist.get_backend() == "nccl" else dist.ReduceOp.SUM)
            if dist.get_backend() != "nccl":
                loss = loss / world
        pending.append(loss)
        done = step + 1
        bar.update(1)
        logging = done % cfg.log_every == 0 or done == cfg.steps
        saving = checkpoint_path is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps)
        if logging or saving or len(pending) >= flush_every:
            flush(done)
        if logging:
            window = losses[-cfg.log_every:]
            mean = sum(window) / len(window)
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
            if callback is not None and rank == 0:
                callback({"step": done, "loss": mean, "lr": optimizer.param_groups[0]["lr"], "model": net,
                          "ema_model": ema.module if ema is not None else None})
        if saving and rank == 0:
            ckpt_out = save_checkpoint(checkpoint_path, net, schedule, ema=ema, optimizer=optimizer,
                                       lr_scheduler=lr_sched, step=done, train_config=dataclasses.asdict(cfg),
                                       extra={"objective": objective, "world_size": world,
                                              "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None},
                                       rng_states=_rng_states(gen, dev), losses=losses)
    flush(cfg.steps)
    bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - t0
    run = cfg.steps - start
    net.eval()
    if ema is not None:
        ema.module.eval()
    return TrainResult(losses=losses, model=net, ema_model=ema.module if ema is not None else None, steps=cfg.steps,
                       wall_time=wall, samples_per_s=run * cfg.batch_size / wall if wall > 0 else float("nan"),
                       device=str(dev), amp=str(amp_dtype).replace("torch.", "") if amp_dtype else None,
                       config=dataclasses.asdict(cfg),
                       checkpoint=ckpt_out or (checkpoint_files(checkpoint_path)["json"] if checkpoint_path else None))


def train(model: nn.Module, schedule: NoiseSchedule, data, *, steps: int = 1000, batch_size: int = 128,
          lr: float = 2e-4, warmup: int = 100, weight_decay: float = 0.0, grad_clip: float | None = 1.0,
          ema_decay: float | None = 0.999, label_dropout: float = 0.0, device="auto", amp="auto",
          compile: bool = False, seed: int = 0, log_every: int = 50, checkpoint_path=None,
          checkpoint_every: int = 1000, resume: bool = False, progress: bool = True,
          callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a denoiser ε_θ on L_simple (DDPM Algorithm 1, eq. 4.9); see the module docstring.

    ``data`` is ``x`` or ``(x, y)`` (labels are used only by a conditional model). ``steps`` counts optimiser
    steps in total: with ``resume=True`` and an existing checkpoint at ``checkpoint_path`` training continues
    from the saved step (exactly, on the same device and process count). ``callback(info)`` is called every
    ``log_every`` steps with ``step``, ``loss`` (mean over the window), ``lr``, ``model``, ``ema_model``.
    Raises :class:`NonFiniteLossError` naming the step when the loss is NaN/inf.
    """
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay,
                      grad_clip=grad_clip, ema_decay=ema_decay, label_dropout=label_dropout, amp=amp,
                      compile=compile, seed=seed, log_every=log_every, checkpoint_every=checkpoint_every)
    return _fit(model, schedule, data, "eps", cfg, device=device, checkpoint_path=checkpoint_path, resume=resume,
                progress=progress, callback=callback)


def train_classifier(classifier: nn.Module, schedule: NoiseSchedule, x: torch.Tensor, y: torch.Tensor, *,
                     steps: int = 1000, batch_size: int = 128, lr: float = 3e-4, warmup: int = 50,
                     weight_decay: float = 0.05, grad_clip: float | None = 1.0, ema_decay: float | None = None,
                     device="auto", amp="auto", compile: bool = False, seed: int = 0, log_every: int = 50,
                     checkpoint_path=None, checkpoint_every: int = 1000, resume: bool = False, progress: bool = True,
                     callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a noise-aware classifier p_φ(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, §4):
    cross-entropy on x_t = q_sample(x_0, t) with t uniform over {0…T-1}. Same loop as :func:`train`."""
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay,
                      grad_clip=grad_clip, ema_decay=ema_decay, label_dropout=0.0, amp=amp, compile=compile,
                      seed=seed, log_every=log_every, checkpoint_every=checkpoint_every)
    return _fit(classifier, schedule, (x, y), "classifier", cfg, device=device, checkpoint_path=checkpoint_path,
                resume=resume, progress=progress, callback=callback)


def ema_smoothed(losses, alpha: float = 0.02) -> float:
    """Exponentially smoothed loss at the end of the history (bias-corrected; alpha = 1/50 steps)."""
    m, w = 0.0, 0.0
    for v in losses:
        m = (1 - alpha) * m + alpha * v
        w = (1 - alpha) * w + alpha
    return m / w if w else float("nan")
