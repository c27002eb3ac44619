"""The one training loop (book chapters 4–7; the CLI uses it too).

:func:`train` minimises L_simple (eq. 4.9, :func:`diffusion_lab.diffusion.loss_simple`) — DDPM's Algorithm 1:

    repeat:  x_0 ~ data,  t ~ Uniform{0…T-1},  ε ~ N(0, I)
             take a gradient step on ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²

with AdamW, linear LR warm-up, gradient clipping and an exponential moving average of the weights (DDPM §4,
appendix B: EMA decay 0.9999). For a class-conditional model each label is replaced by the null label with
probability ``label_dropout`` (classifier-free guidance, Ho & Salimans 2022 §3.2). :func:`train_classifier`
runs the same loop with cross-entropy on noisy inputs (Dhariwal & Nichol 2021 §4).

Every option is a field of :class:`TrainConfig`, the one definition: :func:`train` and :func:`train_classifier`
take its fields as keyword arguments (or a whole ``config``, or a named ``preset`` of
:mod:`diffusion_lab.presets`), and the CLI builds one from its flags. Levers for short runs (issue #11, "time to
quality"): a decaying LR after the warm-up (``lr_schedule="cosine"``/``"linear"``, :class:`WarmupDecay`), the
power-function EMA of Karras et al. 2024 (``ema_power``, :func:`power_ema_decay`) whose average forgets the random
initial weights at any run length, min-SNR-γ loss weighting (``loss_weighting="min_snr"``,
:func:`min_snr_weights`), and a network that predicts v instead of ε (``prediction="v"``, book section 5.8; the
result samples through :attr:`TrainResult.sampling_model`, checkpoints load as ε-models). The loop reads in four parts: :func:`_setup`, :func:`_step` (one optimiser step),
:class:`_LossLog` (losses to the host, progress bar, callback) and :func:`_save` (checkpoints).

Determinism: a minibatch is a slice of a per-epoch permutation that depends only on ``seed`` and the epoch;
t, ε and the label-dropout mask come from one seeded ``torch.Generator`` on the CPU, whose state (and the global
RNG's, which drives dropout; :func:`train` seeds it with ``seed``) is saved in checkpoints, so a resumed run
continues exactly on the same device (verified bit-for-bit on CPU and on an H200 in bf16). The draws are made for
the *global* batch; under ``torchrun`` each rank trains on its slice, so N processes reproduce one process
(``batch_size`` is global and must be divisible by the world size; only rank 0 logs and writes checkpoints).

Devices: ``device="auto"`` picks cuda > mps > cpu. On CUDA the loop uses bf16 autocast where supported (else fp16
with a ``GradScaler``) and channels_last; on the CPU it runs in float32, NCHW unless asked (``amp="bf16"``,
``channels_last=True``; what each does to the CPU throughput is measured in benchmarks/RESULTS.md, "Throughput
levers"). ``compile=True`` wraps the network in ``torch.compile`` (worth it on GPUs for long runs; on a 2-core CPU
compiling takes minutes). Devices, precision, processes and RNG states live in :mod:`diffusion_lab.runtime`, the LR
multipliers and EMAs in :mod:`diffusion_lab.optim`, the prediction type in :mod:`diffusion_lab.parameterization`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from . import checks
from .checkpoint import checkpoint_files, load_training_state, save_checkpoint
from .models import num_classes_of, unwrap_model
from .diffusion import q_sample
from .optim import (LR_SCHEDULES, LinearWarmup, PowerEMA, WarmupDecay, ema_model_for, ema_smoothed,  # noqa: F401
                    lr_multiplier, power_ema_decay)
from .parameterization import as_eps_model, check_prediction, min_snr_weights, training_target
from .presets import get_preset
from .runtime import default_device, distributed, resolve_amp, rng_states, set_rng_states
from .schedules import NoiseSchedule

# The names of optim / runtime / parameterization above stay importable from here (older code and the book's prose
# say ``train.LinearWarmup``); their home is the module they are imported from.
__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "train", "train_classifier", "TASK_DEFAULTS",
           "default_device", "resolve_amp", "LinearWarmup", "WarmupDecay", "lr_multiplier", "power_ema_decay",
           "PowerEMA", "min_snr_weights", "ema_model_for", "as_eps_model"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


LOSS_WEIGHTINGS = ("none", "min_snr")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (stored in checkpoints): the one definition of every training option.

    ``batch_size`` is the global batch. The learning rate warms up linearly over ``warmup`` steps, then stays
    constant (``lr_schedule="constant"``) or decays to ``min_lr_ratio × lr`` by a half cosine or a straight line
    (:class:`WarmupDecay`). The EMA of the weights has a constant decay ``ema_decay`` or, with ``ema_power`` = γ,
    the power-function profile β_t = (1 − 1/t)^(γ+1) of Karras et al. 2024 (:func:`power_ema_decay`); give one of
    the two (``None`` for the other; both ``None``: no EMA). ``loss_weighting="min_snr"`` weights each example's
    squared error by min(SNR_t, γ)/SNR_t (min-SNR-γ, Hang et al. 2023; :func:`min_snr_weights`).
    ``channels_last=None`` means "on CUDA only". ``prediction`` is what the network outputs: ε (DDPM), x₀ or v
    (:mod:`diffusion_lab.parameterization`, book eqs. 5.5–5.7); the loss is the MSE on that target, and the trained
    network is wrapped into an ε-model for sampling (:attr:`TrainResult.sampling_model`).
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-4
    warmup: int = 100
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    ema_power: float | None = None
    loss_weighting: str = "none"
    min_snr_gamma: float = 5.0
    prediction: str = "eps"
    label_dropout: float = 0.0
    amp: str | bool | None = "auto"
    channels_last: bool | None = None
    compile: bool = False
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000

    def __post_init__(self):
        checks.int_fields(self, ("steps", "batch_size", "log_every", "checkpoint_every"))
        checks.int_fields(self, ("warmup",), minimum=0)
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        checks.choice(self.lr_schedule, LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        checks.real_number(self.min_lr_ratio, "min_lr_ratio", 0.0, 1.0)
        checks.real_number(self.label_dropout, "label_dropout", 0.0, 1.0)
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1) or be None, got {self.ema_decay}")
        if self.ema_power is not None and not self.ema_power >= 0:
            raise ValueError(f"ema_power must be >= 0 or None, got {self.ema_power}")
        if self.ema_decay is not None and self.ema_power is not None:
            raise ValueError(f"give ema_decay (constant EMA) or ema_power (power-function EMA), not both; got "
                             f"ema_decay={self.ema_decay}, ema_power={self.ema_power}")
        checks.choice(self.loss_weighting, LOSS_WEIGHTINGS,
                      f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        check_prediction(self.prediction)
        if not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {self.min_snr_gamma}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")

    @classmethod
    def for_task(cls, task: str = "denoiser", **overrides) -> "TrainConfig":
        """The defaults of a kind of run (:data:`TASK_DEFAULTS`: ``"denoiser"``, ``"cfg"`` — a conditional
        denoiser trained with label dropout — or ``"classifier"``), with ``overrides`` applied as in
        :meth:`resolve`. :func:`train_classifier` and the CLI both start here, so they agree."""
        checks.choice(task, TASK_DEFAULTS, f"task must be one of {tuple(TASK_DEFAULTS)}, got {task!r}")
        return cls.resolve(cls(**TASK_DEFAULTS[task]), **overrides)

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def resolve(cls, base: "TrainConfig | None" = None, preset: str | None = None, **overrides) -> "TrainConfig":
        """``base`` (or the named preset's settings, or the defaults) with ``overrides`` applied. An explicit
        ``ema_decay`` switches a power EMA off (so ``ema_decay=None`` means no EMA at all, as it always has) and a
        non-None ``ema_power`` a constant one, so an override of either wins. Unknown names raise ``TypeError``
        listing the fields."""
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"unknown training option(s) {', '.join(unknown)}; TrainConfig's fields are "
                            f"{', '.join(cls.field_names())}")
        if base is not None and preset is not None:
            raise ValueError("give a TrainConfig or a preset name, not both")
        if preset is not None:
            base = cls(**get_preset(preset).train)
        base = base if base is not None else cls()
        cls.settle_ema(overrides, set(overrides))
        return dataclasses.replace(base, **overrides)

    @staticmethod
    def settle_ema(values: dict, given) -> None:
        """The one rule for overriding the EMA of a preset or config, applied to ``values`` in place (``given``:
        the names set explicitly). An explicit ``ema_decay`` switches a power EMA off (so ``ema_decay=None`` means
        no EMA at all), and an explicit non-None ``ema_power`` a constant one. :meth:`resolve` and the CLI's
        ``--ema`` / ``--ema-power`` both use it."""
        if "ema_decay" in given and "ema_power" not in given:
            values["ema_power"] = None
        if "ema_power" in given and values.get("ema_power") is not None and "ema_decay" not in given:
            values["ema_decay"] = None


TASK_DEFAULTS = {
    "denoiser": {},                                                   # TrainConfig's own defaults
    "cfg": dict(label_dropout=0.15),                                  # Ho & Salimans 2022 use 0.1-0.2
    "classifier": dict(lr=3e-4, warmup=50, weight_decay=0.05, ema_decay=None),
}
"""Where each kind of run's defaults differ from :class:`TrainConfig`'s: the one table, read by
:meth:`TrainConfig.for_task` (the API) and by the CLI."""


@dataclass
class TrainResult:
    """What :func:`train` returns. ``losses[i]`` is the loss of step i+1 (the whole history when resumed);
    ``ema_model`` is the EMA network (eval mode; None without EMA). Sample with :attr:`sampling_model`: the EMA
    network (else the trained one) as an ε-model — wrapped in :class:`~diffusion_lab.parameterization.EpsFromPrediction`
    when the network predicts x₀ or v (``config["prediction"]``)."""

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
    schedule: NoiseSchedule | None = None

    @property
    def prediction(self) -> str:
        """What the trained network outputs: ``"eps"``, ``"x0"`` or ``"v"``."""
        return self.config.get("prediction", "eps")

    @property
    def sampling_model(self) -> nn.Module:
        """The EMA model when there is one, else the trained model, as ``model(x_t, t, y=None) -> ε``."""
        return as_eps_model(self.ema_model if self.ema_model is not None else self.model, self.schedule,
                            self.prediction)


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


class EpochSampler:
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


# ----------------------------------------------------------------------------- the loop, in four parts
@dataclass
class _Run:
    """Everything :func:`_setup` builds for one training run."""

    cfg: TrainConfig
    objective: str
    schedule: NoiseSchedule
    net: nn.Module
    fwd: nn.Module                     # what is called: the net, or its DDP / compiled wrapper
    x: torch.Tensor
    y: torch.Tensor | None
    num_classes: int | None
    dev: torch.device
    rank: int
    world: int
    amp_dtype: torch.dtype | None
    channels_last: bool
    gen: torch.Generator
    sampler: EpochSampler
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    lr_sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    start: int
    losses: list

    @property
    def local_bs(self) -> int:
        return self.cfg.batch_size // self.world

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def _check_data(model, schedule, data, objective, cfg):
    """Validate the inputs once; return (net, x, y, num_classes)."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    x, y = _unpack(data)
    net = unwrap_model(model)
    num_classes = num_classes_of(net)
    if objective == "classifier" and y is None:
        raise ValueError("train_classifier needs labels y")
    if objective != "classifier" and num_classes is None:
        y = None  # an unconditional model ignores labels in the data
    elif objective != "classifier" and y is None:
        raise ValueError(f"{type(net).__name__} is class-conditional (num_classes={num_classes}); pass data=(x, y)")
    # checked here, once: the steps run with value checks off (the null label num_classes comes from dropout only)
    if y is not None and num_classes is not None and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got [{int(y.min())}, {int(y.max())}]")
    if cfg.label_dropout > 0 and (objective != "eps" or num_classes is None):
        raise ValueError("label_dropout needs a class-conditional denoiser (num_classes set)")
    if cfg.loss_weighting != "none" and objective != "eps":
        raise ValueError(f"loss_weighting={cfg.loss_weighting!r} applies to denoisers, not to classifiers")
    if cfg.prediction != "eps" and objective != "eps":
        raise ValueError(f"prediction={cfg.prediction!r} applies to denoisers, not to classifiers")
    return net, x, y, num_classes


def _setup(model, schedule, data, objective, cfg: TrainConfig, device, checkpoint_path, resume) -> _Run:
    """1. Setup: devices and processes, seeded generators, EMA, optimiser, LR schedule; resume if asked."""
    net, x, y, num_classes = _check_data(model, schedule, data, objective, cfg)
    rank, world, dist_device = distributed(device)
    dev = dist_device or (default_device() if device in ("auto", None) else torch.device(device))
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} (global) must be divisible by the {world} processes")
    amp_dtype = resolve_amp(cfg.amp, dev)
    channels_last = (dev.type == "cuda" if cfg.channels_last is None else bool(cfg.channels_last)) and x.dim() == 4

    net.to(dev)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    net.train()
    x = x.to(dev)
    y = y.to(dev) if y is not None else None

    torch.manual_seed(cfg.seed + rank)          # dropout masks
    gen = torch.Generator().manual_seed(cfg.seed)  # t, ε, label dropout: the same on every rank
    ema = ema_model_for(net, cfg)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg))
    scaler = torch.amp.GradScaler(dev.type) if amp_dtype == torch.float16 and dev.type == "cuda" else None

    start, losses = 0, []
    if resume and checkpoint_path is not None and checkpoint_files(checkpoint_path)["json"].exists():
        st = load_training_state(checkpoint_path, net, ema=ema, optimizer=optimizer, lr_scheduler=lr_sched)
        start, losses = st["step"], st["losses"][: st["step"]]
        set_rng_states(st["rng_states"], gen, dev)
        if world > 1:
            torch.manual_seed(cfg.seed + rank + 7919 * start)

    fwd = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if world > 1 else net
    if cfg.compile:
        fwd = torch.compile(fwd)
    return _Run(cfg, objective, schedule, net, fwd, x, y, num_classes, dev, rank, world, amp_dtype, channels_last,
                gen, EpochSampler(x.shape[0], cfg.seed), ema, optimizer, lr_sched, scaler, start, losses)


def _batch(run: _Run, step: int):
    """The minibatch of ``step`` for this rank: (x0, t, noise, labels), drawn for the global batch."""
    cfg, bs = run.cfg, run.cfg.batch_size
    idx = run.sampler.batch(step, bs)
    t = torch.randint(0, run.schedule.T, (bs,), generator=run.gen)
    noise = torch.randn((bs,) + tuple(run.x.shape[1:]), generator=run.gen)
    drop = torch.rand(bs, generator=run.gen) < cfg.label_dropout if cfg.label_dropout > 0 else None
    sl = slice(run.rank * run.local_bs, (run.rank + 1) * run.local_bs)
    x0 = run.x[idx[sl].to(run.dev)]
    labels = None
    if run.y is not None:
        labels = run.y[idx[sl].to(run.dev)]
        if drop is not None:
            labels = torch.where(drop[sl].to(run.dev), torch.full_like(labels, run.num_classes), labels)
    t_b, noise_b = t[sl].to(run.dev), noise[sl].to(run.dev)
    if run.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
        noise_b = noise_b.contiguous(memory_format=torch.channels_last)
    return x0, t_b, noise_b, labels


def _loss(run: _Run, x0, t, noise, labels) -> torch.Tensor:
    """The objective: the MSE between the network's output and its target (ε for L_simple, eq. 4.9; x₀ or v,
    eq. 5.7), per example weighted by min-SNR-γ if asked; or the noisy classifier's cross-entropy."""
    x_t = q_sample(run.schedule, x0, t, noise)
    if run.objective == "classifier":
        return F.cross_entropy(run.fwd(x_t, t).float(), labels)
    cfg = run.cfg
    pred = run.fwd(x_t, t) if labels is None else run.fwd(x_t, t, y=labels)
    target = training_target(run.schedule, x0, t, noise, cfg.prediction)
    per_item = (target - pred.float()).pow(2).reshape(x0.shape[0], -1).mean(1)
    if cfg.loss_weighting == "min_snr":
        w = min_snr_weights(run.schedule, t, cfg.min_snr_gamma, cfg.prediction)
        per_item = w.to(per_item.device, per_item.dtype) * per_item
    return per_item.mean()


def _step(run: _Run, step: int) -> torch.Tensor:
    """2. One step: forward under autocast, backward, clip, optimiser and LR step, EMA update.
    Returns the detached loss (averaged over processes)."""
    x0, t, noise, labels = _batch(run, step)
    # The loop drew t and the labels itself (valid by construction, checked once in _setup): the public functions
    # it calls skip their value checks, which would read t back to the host on every step.
    with checks.trusted(), torch.autocast(run.dev.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        loss = _loss(run, x0, t, noise, labels)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
    else:
        loss.backward()
    if run.cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.net.parameters(), run.cfg.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.lr_sched.step()
    if run.ema is not None:
        run.ema.update_parameters(run.net)

    loss = loss.detach()
    if run.world > 1:
        dist.all_reduce(loss, op=dist.ReduceOp.AVG if dist.get_backend() == "nccl" else dist.ReduceOp.SUM)
        if dist.get_backend() != "nccl":
            loss = loss / run.world
    return loss


class _LossLog:
    """3. Logging: collects the per-step loss tensors and moves them to the host in batches (every step on the
    CPU, every ``log_every`` steps elsewhere, so a GPU is not synchronised each step); raises
    :class:`NonFiniteLossError` naming the first bad step; feeds the progress bar and the callback."""

    def __init__(self, run: _Run, progress: bool, callback):
        self.run, self.callback, self.pending = run, callback, []
        self.flush_every = 1 if run.dev.type == "cpu" else run.cfg.log_every
        from tqdm.auto import tqdm

        self.bar = tqdm(total=run.cfg.steps, initial=run.start, disable=not progress or run.rank != 0, desc="train",
                        dynamic_ncols=True)

    def flush(self, step_done: int):
        if not self.pending:
            return
        vals = torch.stack(self.pending).float().cpu().tolist()
        self.pending.clear()
        first = step_done - len(vals) + 1
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                self.bar.close()
                raise NonFiniteLossError(
                    f"loss became {v} at step {first + i} (of {self.run.cfg.steps}); lower lr (now {self.run.cfg.lr}), "
                    "check the data range ([-1, 1]) and the inputs, or keep grad_clip on")
        self.run.losses.extend(vals)

    def record(self, loss: torch.Tensor, done: int, must_flush: bool):
        run, cfg = self.run, self.run.cfg
        self.pending.append(loss)
        self.bar.update(1)
        logging = done % cfg.log_every == 0 or done == cfg.steps
        if logging or must_flush or len(self.pending) >= self.flush_every:
            self.flush(done)
        if logging:
            window = run.losses[-cfg.log_every:]
            mean = sum(window) / len(window)
            self.bar.set_postfix(loss=f"{mean:.4f}", lr=f"{run.lr:.2e}", refresh=False)
            if self.callback is not None and run.rank == 0:
                ema = run.ema.module if run.ema is not None else None
                self.callback({"step": done, "loss": mean, "lr": run.lr, "model": run.net, "ema_model": ema,
                               "sampling_model": as_eps_model(ema if ema is not None else run.net, run.schedule,
                                                              cfg.prediction)})

    def close(self):
        self.flush(self.run.cfg.steps)
        self.bar.close()


def _amp_name(run: _Run) -> str | None:
    return str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else None


def _save(run: _Run, checkpoint_path, done: int) -> Path:
    """4. Checkpointing: weights, EMA, optimiser and LR-schedule state, RNG states and the loss history."""
    return save_checkpoint(checkpoint_path, run.net, run.schedule, ema=run.ema, optimizer=run.optimizer,
                           lr_scheduler=run.lr_sched, step=done, train_config=dataclasses.asdict(run.cfg),
                           extra={"objective": run.objective, "world_size": run.world, "amp": _amp_name(run)},
                           rng_states=rng_states(run.gen, run.dev), losses=run.losses)


def _fit(model: nn.Module, schedule: NoiseSchedule, data, objective: str, cfg: TrainConfig, *, device, checkpoint_path,
         resume: bool, progress: bool, callback: Callable | None) -> TrainResult:
    run = _setup(model, schedule, data, objective, cfg, device, checkpoint_path, resume)
    log = _LossLog(run, progress, callback)
    ckpt_out = None
    t0 = time.perf_counter()
    for step in range(run.start, cfg.steps):
        loss = _step(run, step)
        done = step + 1
        saving = checkpoint_path is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps)
        log.record(loss, done, must_flush=saving)
        if saving and run.rank == 0:
            ckpt_out = _save(run, checkpoint_path, done)
    log.close()
    if run.dev.type == "cuda":
        torch.cuda.synchronize(run.dev)
    wall = time.perf_counter() - t0
    n_run = cfg.steps - run.start
    run.net.eval()
    if run.ema is not None:
        run.ema.module.eval()
    return TrainResult(losses=run.losses, model=run.net, ema_model=run.ema.module if run.ema is not None else None,
                       steps=cfg.steps, wall_time=wall,
                       samples_per_s=n_run * cfg.batch_size / wall if wall > 0 else float("nan"),
                       device=str(run.dev), amp=_amp_name(run), config=dataclasses.asdict(cfg),
                       checkpoint=ckpt_out or (checkpoint_files(checkpoint_path)["json"] if checkpoint_path else None),
                       schedule=run.schedule)


# ----------------------------------------------------------------------------- public entry points
def train(model: nn.Module, schedule: NoiseSchedule, data, *, config: TrainConfig | None = None,
          preset: str | None = None, device="auto", checkpoint_path=None, resume: bool = False, progress: bool = True,
          callback: Callable[[dict], None] | None = None, **options) -> TrainResult:
    """Train a denoiser ε_θ on L_simple (DDPM Algorithm 1, eq. 4.9); see the module docstring.

    ``data`` is ``x`` or ``(x, y)`` (labels are used only by a conditional model). The training options are the
    fields of :class:`TrainConfig` (``steps=1000, batch_size=128, lr=2e-4, warmup=100, ema_decay=0.999,
    label_dropout=0.0, seed=0, …``), given as keyword arguments, as a whole ``config``, or as a named ``preset``
    (:mod:`diffusion_lab.presets`, e.g. ``"digits-cond-fast"``); keyword arguments override the config or preset.
    ``steps`` counts optimiser steps in total: with ``resume=True`` and an existing checkpoint at
    ``checkpoint_path`` training continues from the saved step (exactly, on the same device and process count).
    ``callback(info)`` is called every ``log_every`` steps with ``step``, ``loss`` (mean over the window), ``lr``,
    ``model``, ``ema_model`` and ``sampling_model`` (the EMA network, else the trained one, as an ε-model: sample
    with this one). Raises :class:`NonFiniteLossError` naming the step when the loss is NaN/inf.
    """
    cfg = TrainConfig.resolve(config, preset, **options)
    return _fit(model, schedule, data, "eps", cfg, device=device, checkpoint_path=checkpoint_path, resume=resume,
                progress=progress, callback=callback)


def train_classifier(classifier: nn.Module, schedule: NoiseSchedule, x: torch.Tensor, y: torch.Tensor, *,
                     config: TrainConfig | None = None, device="auto", checkpoint_path=None, resume: bool = False,
                     progress: bool = True, callback: Callable[[dict], None] | None = None,
                     **options) -> TrainResult:
    """Train a noise-aware classifier p_φ(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, §4):
    cross-entropy on x_t = q_sample(x_0, t) with t uniform over {0…T-1}. Same loop and options as :func:`train`,
    with the defaults of ``TrainConfig.for_task("classifier")`` (:data:`TASK_DEFAULTS`: lr 3e-4, warm-up 50,
    weight decay 0.05, no EMA)."""
    if "label_dropout" in options and options["label_dropout"]:
        raise ValueError("label_dropout applies to conditional denoisers, not to classifiers")
    cfg = TrainConfig.resolve(config, **options) if config is not None else TrainConfig.for_task("classifier", **options)
    return _fit(classifier, schedule, (x, y), "classifier", cfg, device=device, checkpoint_path=checkpoint_path,
                resume=resume, progress=progress, callback=callback)


