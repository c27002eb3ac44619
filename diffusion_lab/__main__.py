"""The command line: ``python -m diffusion_lab train …`` and ``python -m diffusion_lab sample …``
(also installed as the ``diffusion-lab`` console script).

    diffusion-lab train --model unet --data digits --conditional --label-dropout 0.15 --steps 6000 --out runs/cond
    diffusion-lab sample runs/cond --sampler ddim --steps 50 --guidance-weight 2 --n 100 --out grid.png
    diffusion-lab sample digits-cond --sampler ddpm --guidance-scale 3          # a shipped model; diffusers' s = 1 + w

``train`` is a thin shell around :func:`diffusion_lab.train.train` / :func:`~diffusion_lab.train.train_classifier`;
``sample`` around :func:`~diffusion_lab.sampling.ddpm_sample` / :func:`~diffusion_lab.sampling.ddim_sample` with
the guidance objects of :mod:`diffusion_lab.guidance`. Both end with one ``summary:`` line of ``key=value`` pairs
(easy to grep and parse); ``sample`` on 8×8 digits also prints a ``metrics:`` line judged by
:func:`diffusion_lab.metrics.get_judge`. Bad arguments exit with status 2 and a message naming the flag.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path

IMAGE_DATA = ("digits", "mnist", "fashion_mnist")            # = data.IMAGE_DATASETS (kept here: --help imports no torch)
TOY_DATA = ("two_moons", "swiss_roll", "eight_gaussians", "checkerboard")   # = data.TOY_DATASETS
DATA_CHOICES = IMAGE_DATA + TOY_DATA
MODEL_CHOICES = ("unet", "mlp", "noisy_classifier")


class CLIError(Exception):
    """A usage error found after parsing (reported like an argparse error: message + exit status 2)."""


# ----------------------------------------------------------------------------- argument types
def _checked(convert, ok, what: str):
    """An argparse type: ``convert`` the text, then require ``ok(value)``; errors say what is expected."""
    def parse(s: str):
        try:
            v = convert(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {what}, got {s}")
        return v
    parse.__name__ = what  # argparse shows it in "invalid <name> value" messages
    return parse


_positive_int = _checked(int, lambda v: v > 0, "a positive integer")
_nonneg_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _checked(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_unit_float = _checked(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
_finite_float = _checked(float, math.isfinite, "a finite number")


def _int_tuple(s: str) -> tuple:
    try:
        vals = tuple(int(p) for p in s.replace(" ", "").split(",") if p != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as '1,2', got {s!r}") from None
    if any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"values must be positive, got {s!r}")
    return vals


def _interval(s: str) -> tuple:
    from .checks import interval   # one validation for the API and the CLI

    try:
        return interval(tuple(int(p) for p in s.replace(" ", "").split(",")))
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected two code timesteps 'LO,HI' with 0 <= LO <= HI, such as '0,100', "
                                         f"got {s!r}") from None


_ema_value = _checked(float, lambda v: 0.0 <= v < 1.0, "an EMA decay in [0, 1) (0 = no EMA)")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _TrainFormatter(_Formatter):
    """``train``'s flags default to None (meaning "the preset's value, else the default"): show no None."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


_nonneg_float = _checked(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")

# ``train``'s values that are not training options, when neither a flag nor a --preset gives one (the flags default
# to None). The training options' defaults are TrainConfig's (diffusion_lab.train.TASK_DEFAULTS per kind of run):
# they are not repeated here.
CLI_DEFAULTS = dict(
    model="unet", base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,), num_heads=1,
    num_groups=32, dropout=0.1, hidden_dim=128, num_blocks=3, data="digits", data_root="data", toy_points=8000,
    conditional=False, schedule="linear", T=1000, device="auto", threads=None)


def _show_train_defaults(parser) -> None:
    """Append each ``train`` flag's default to its help: CLI_DEFAULTS, or the denoiser's TrainConfig field (the
    classifier's and the conditional model's differences, TASK_DEFAULTS, are named in the flags' help)."""
    import dataclasses

    from .train import TrainConfig

    defaults = dict(CLI_DEFAULTS, **{f.name: f.default for f in dataclasses.fields(TrainConfig)})
    for action in parser._actions:
        v = defaults.get(action.dest)
        if v is not None and action.help:
            shown = ",".join(map(str, v)) if isinstance(v, tuple) else v
            action.help += f" (default: {shown}, or the preset's)"


# ``sample``'s values that a --preset's ``sampling`` may set, when neither a flag nor the preset gives one.
SAMPLE_DEFAULTS = dict(sampler="ddpm", steps=50)


def _resolve_sample_args(args) -> None:
    """Fill ``sample``'s sampler, steps and classifier-free guidance from ``--preset`` (a flag given wins; a
    guidance flag or --classifier replaces the preset's guidance), then from SAMPLE_DEFAULTS; in place."""
    sampling = {}
    if args.preset is not None:
        from .presets import UnknownPresetError, get_preset

        try:
            sampling = dict(get_preset(args.preset).sampling)
        except UnknownPresetError as err:
            raise CLIError(f"--preset: {err}") from None
    for k, v in SAMPLE_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, sampling.get(k, v))
    guided = args.guidance_weight is not None or args.guidance_scale is not None or args.classifier is not None
    if not guided and sampling.get("guidance_weight") is not None:
        args.guidance_weight = sampling["guidance_weight"]
        if args.guidance_interval is None and sampling.get("guidance_interval") is not None:
            args.guidance_interval = tuple(sampling["guidance_interval"])


def _preset_names():
    from .presets import list_presets
    return list_presets()


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .optim import LR_SCHEDULES
    from .parameterization import PARAMETERIZATIONS
    from .train import LOSS_WEIGHTINGS

    p = argparse.ArgumentParser(
        prog="diffusion-lab", formatter_class=_Formatter,
        description="Train and sample the diffusion models of the diffusion-lab book.\n\n"
                    "  diffusion-lab train --help     train a denoiser (or a noise-aware classifier)\n"
                    "  diffusion-lab sample --help    sample a checkpoint or a shipped model, save a grid")
    sub = p.add_subparsers(dest="command", metavar="{train,sample}")
    sub.required = True

    # ---- train (defaults: CLI_DEFAULTS and TrainConfig, so a --preset's values can sit between them and the flags)
    t = sub.add_parser("train", formatter_class=_TrainFormatter,
                       help="train a model (DDPM L_simple, or noisy cross-entropy)",
                       description="Train a denoiser ε_θ on L_simple (DDPM Algorithm 1) or, with "
                                   "--model noisy_classifier, a noise-aware classifier p(y | x_t, t) for classifier "
                                   "guidance. Writes a checkpoint (safetensors + JSON; resumable) to --out and ends "
                                   "with one 'summary:' line: steps, final loss (EMA-smoothed), wall time, img/s, "
                                   "output path. --preset NAME starts from a named recipe (diffusion_lab.presets); "
                                   "any flag given overrides the preset's value.",
                       epilog="examples:\n  diffusion-lab train --preset digits-cond-fast --out runs/fast\n"
                              "  diffusion-lab train --model unet --data digits --conditional "
                              "--label-dropout 0.15 --base-channels 32 --steps 6000 --out runs/digits-cond")
    t.add_argument("--preset", default=None, help="a named recipe: " + ", ".join(_preset_names()))
    g = t.add_argument_group("model")
    g.add_argument("--model", choices=MODEL_CHOICES,
                   help="network: 'unet' (images), 'mlp' (2-D toys), 'noisy_classifier' (images; for classifier "
                        "guidance, trained on q_sample-noised inputs at uniform t)")
    g.add_argument("--base-channels", type=_positive_int, help="UNet / classifier: channels at the first resolution")
    g.add_argument("--channel-mults", type=_int_tuple,
                   help="UNet / classifier: channel multiplier per resolution, comma-separated (one downsampling "
                        "between levels), e.g. '1,2' for 8x8, '1,2,2' for 28x28/32x32")
    g.add_argument("--num-res-blocks", type=_positive_int, help="UNet / classifier: ResBlocks per level")
    g.add_argument("--attention-resolutions", type=_int_tuple,
                   help="UNet / classifier: feature-map sizes with self-attention, comma-separated (4 = the 4x4 map "
                        "of 8x8 digits); pass '' for none")
    g.add_argument("--num-heads", type=_positive_int, help="UNet / classifier: attention heads")
    g.add_argument("--num-groups", type=_positive_int, help="UNet / classifier: GroupNorm groups")
    g.add_argument("--dropout", type=_unit_float, help="dropout inside the ResBlocks / MLP blocks")
    g.add_argument("--hidden-dim", type=_positive_int, help="MLP: hidden width")
    g.add_argument("--num-blocks", type=_positive_int, help="MLP: residual blocks")

    g = t.add_argument_group("data")
    g.add_argument("--data", choices=DATA_CHOICES,
                   help="'digits' (sklearn 8x8, offline, train split), a 2-D toy, or 'mnist' / 'fashion_mnist' "
                        "(28x28 via torchvision; needs a network the first time)")
    g.add_argument("--data-root", help="where MNIST-family files are kept / downloaded")
    g.add_argument("--toy-points", type=_positive_int, help="number of points of a 2-D toy data set")
    g.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=None,
                   help="class-conditional denoiser (label embedding with a null label, for classifier-free "
                        "guidance); the 2-D toys have no labels")
    g.add_argument("--label-dropout", type=_unit_float,
                   help="probability of replacing a label by the null label while training (CFG needs > 0; "
                        "0.1-0.2 is usual). Default with --conditional: TASK_DEFAULTS['cfg'], 0.15")

    g = t.add_argument_group("diffusion schedule")
    g.add_argument("--schedule", choices=("linear", "cosine"),
                   help="noise schedule: DDPM's linear β (1e-4 → 0.02) or the cosine ᾱ of improved DDPM")
    g.add_argument("--T", type=_positive_int, help="number of diffusion steps")

    g = t.add_argument_group("optimisation")
    g.add_argument("--steps", type=_positive_int, help="optimiser steps in total (with --resume: "
                   "the total to reach, not the number to add)")
    g.add_argument("--batch-size", type=_positive_int, help="global batch size")
    g.add_argument("--lr", type=_positive_float, help="AdamW learning rate (peak)")
    g.add_argument("--warmup", type=_nonneg_int, help="linear learning-rate warm-up steps")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="after the warm-up: constant, or a cosine / linear decay to --min-lr-ratio × lr")
    g.add_argument("--min-lr-ratio", type=_unit_float, help="final lr / peak lr of a decaying --lr-schedule")
    g.add_argument("--weight-decay", type=_nonneg_float,
                   help="AdamW weight decay (the classifier's default: 0.05, TASK_DEFAULTS['classifier'])")
    g.add_argument("--grad-clip", type=_nonneg_float, help="gradient-norm clip (0 = off)")
    g.add_argument("--ema", type=_ema_value, dest="ema_decay",
                   help="constant EMA decay of the weights (0 = no EMA); the EMA weights are the ones to sample with")
    g.add_argument("--ema-power", type=_nonneg_float,
                   help="power-function EMA with exponent γ instead: decay (1 - 1/t)^(γ+1) after step t (Karras "
                        "et al. 2024; 6.94 ≈ σ_rel 0.10)")
    g.add_argument("--loss-weighting", choices=LOSS_WEIGHTINGS,
                   help="per-timestep loss weight: none (L_simple) or min-SNR-γ, min(SNR_t, γ)/SNR_t")
    g.add_argument("--min-snr-gamma", type=_positive_float, help="γ of --loss-weighting min_snr")
    g.add_argument("--prediction", choices=PARAMETERIZATIONS,
                   help="what the network outputs: ε (DDPM), x₀, or v = √ᾱ ε − √(1−ᾱ) x₀ (book 5.6); checkpoints "
                        "record it and load as ε-models")
    g.add_argument("--seed", type=int, help="seed of every random draw (weights, data order, t, ε, dropout)")

    g = t.add_argument_group("hardware and output")
    g.add_argument("--device", help="'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:1', …")
    g.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision: 'auto' = bf16 on CUDA where supported, none on the CPU")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on CUDA only)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the network (GPU runs; slow to start)")
    g.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: min(2, cores) — more rarely "
                   "helps on small models; 1 is faster when other jobs share the cores)")
    g.add_argument("--out", required=True,
                   help="checkpoint path (writes <out>.safetensors, <out>.state.safetensors and <out>.json)")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out (exactly)")
    g.add_argument("--checkpoint-every", type=_positive_int, help="save a checkpoint every N steps")
    g.add_argument("--log-every", type=_positive_int, help="progress-bar loss window (steps)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (the summary line is still printed)")
    _show_train_defaults(t)

    # ---- sample
    s = sub.add_parser("sample", formatter_class=_Formatter, help="sample a checkpoint or a shipped model",
                       description="Sample a trained denoiser with DDPM (ancestral) or DDIM, optionally with "
                                   "classifier-free guidance (--guidance-weight w, or diffusers' --guidance-scale "
                                   "s = 1 + w) or classifier guidance "
                                   "(--classifier). Saves a grid (PNG; a scatter plot for 2-D toys) and, on 8x8 "
                                   "digits, prints a 'metrics:' line (judge accuracy on the requested labels, "
                                   "Fréchet distance to the digits train split next to the real train-vs-test "
                                   "value, diversity). Ends with one 'summary:' line.",
                       epilog="example: diffusion-lab sample digits-cond --sampler ddim --steps 50 "
                              "--guidance-weight 2 --n 100 --out grid.png")
    s.add_argument("checkpoint", help="a checkpoint path (as given to train --out) or a shipped model name "
                                      "(see diffusion_lab.pretrained.list_pretrained())")
    s.add_argument("--preset", default=None,
                   help="sample with a preset's sampling settings (sampler, steps, guidance weight and interval): "
                        + ", ".join(_preset_names()) + "; any flag given overrides them")
    s.add_argument("--sampler", choices=("ddpm", "ddim"), default=None,
                   help="'ddpm': T ancestral steps (the seed's update); 'ddim': --steps model calls "
                        f"(default: {SAMPLE_DEFAULTS['sampler']}, or the preset's)")
    s.add_argument("--steps", type=_positive_int, default=None,
                   help=f"DDIM: number of sampling steps, ignored by ddpm (default: {SAMPLE_DEFAULTS['steps']}, or "
                        "the preset's)")
    s.add_argument("--eta", type=_unit_float, default=0.0, help="DDIM: η in [0, 1] (0 = deterministic, 1 = DDPM-like "
                                                                 "noise)")
    s.add_argument("--variance", choices=("beta", "beta_tilde"), default="beta",
                   help="DDPM: reverse variance σ² = β_t (the seed's) or β̃_t")
    cfg_group = s.add_mutually_exclusive_group()
    cfg_group.add_argument("--guidance-weight", type=_finite_float, default=None, metavar="W",
                           help="classifier-free guidance weight w, the book's and the seed's: "
                                "ε̃ = (1+w)·ε(y) − w·ε(∅) (0 = plain conditional). Needs a conditional model trained "
                                "with label dropout")
    cfg_group.add_argument("--guidance-scale", type=_finite_float, default=None, metavar="S",
                           help="classifier-free guidance in diffusers' convention: guidance_scale s = 1 + w, "
                                "ε̃ = ε(∅) + s·(ε(y) − ε(∅)) (1 = plain conditional; --guidance-scale 3 is "
                                "--guidance-weight 2)")
    s.add_argument("--guidance-interval", type=_interval, default=None, metavar="LO,HI",
                   help="apply classifier-free guidance only at code timesteps LO..HI (0-based, both included) and sample "
                        "plain conditional elsewhere: the guidance interval, book eq. (8.2); e.g. '0,100'")
    s.add_argument("--labels", default=None,
                   help="target labels: comma-separated ('3' or '0,1,2'), cycled over the --n samples; default "
                        "0..K-1 cycled for a conditional model or guidance")
    s.add_argument("--classifier", default=None,
                   help="classifier guidance: a noisy-classifier checkpoint path or shipped name "
                        "(e.g. digits-noisy-classifier); the denoiser then gets no label")
    s.add_argument("--classifier-scale", type=_finite_float, default=1.0, help="classifier guidance scale γ")
    s.add_argument("--n", type=_positive_int, default=100, help="number of samples")
    s.add_argument("--batch-size", type=_positive_int, default=1000, help="samples per sampler call")
    s.add_argument("--seed", type=int, default=0, help="seed of x_T and every sampling draw")
    s.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'auto', …")
    s.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: min(2, cores))")
    s.add_argument("--clip-x0", action="store_true", help="clip the predicted x̂₀ to [-1, 1] at each step (opt-in)")
    s.add_argument("--out", default="samples.png", help="output image (PNG grid, or a scatter plot for 2-D data)")
    s.add_argument("--save-tensors", default=None,
                   help="also write the samples (and labels) to this .safetensors file")
    s.add_argument("--no-metrics", action="store_true", help="skip the judge metrics on digits")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# ----------------------------------------------------------------------------- helpers
def _set_threads(n):
    import torch

    torch.set_num_threads(n or max(1, min(2, os.cpu_count() or 1)))


def load_data(name: str, root: str = "data", toy_points: int = 8000, seed: int = 0):
    """``(x, y, num_classes)`` for ``--data`` (:func:`diffusion_lab.data.load_dataset`, train split)."""
    from .data import load_dataset

    return load_dataset(name, "train", root=root, toy_points=toy_points, seed=seed)


def _build_model(args, x, num_classes):
    """The network the ``train`` flags describe, sized for ``x`` (:func:`diffusion_lab.models.build_model_for_data`)."""
    from .models import build_model_for_data

    size = dict(hidden_dim=args.hidden_dim, num_blocks=args.num_blocks, dropout=args.dropout,
                base_channels=args.base_channels, channel_mults=args.channel_mults, num_res_blocks=args.num_res_blocks,
                attention_resolutions=args.attention_resolutions, num_heads=args.num_heads, num_groups=args.num_groups)
    if args.model == "mlp" and x.dim() != 2:
        raise CLIError(f"--model mlp takes flat 2-D data (a toy such as two_moons); --data {args.data} is images "
                       f"{tuple(x.shape[1:])}: use --model unet")
    if args.model != "mlp" and x.dim() != 4:
        raise CLIError(f"--model {args.model} takes images; --data {args.data} is 2-D points: use --model mlp")
    labels = num_classes if args.conditional or args.model == "noisy_classifier" else None
    try:
        return build_model_for_data(args.model, x, labels, **size)
    except ValueError as err:
        raise CLIError(f"bad model size: {err}") from None


def _resolve_train_args(args) -> None:
    """Give every ``train`` option that is not a training option its value, in place: the flag if given, else
    the --preset's, else CLI_DEFAULTS."""
    given = {k for k in CLI_DEFAULTS if getattr(args, k, None) is not None}
    values = dict(CLI_DEFAULTS)
    if args.preset is not None:
        from .presets import UnknownPresetError, get_preset

        try:
            p = get_preset(args.preset)
        except UnknownPresetError as err:
            raise CLIError(f"--preset: {err}") from None
        model = dict(p.model)
        values.update({k: v for k, v in model.items() if k in values}, model=model["kind"], data=p.data,
                      schedule=p.schedule["name"], T=p.schedule.get("T", values["T"]),
                      conditional=model.get("num_classes") is not None)
    values.update({k: getattr(args, k) for k in given})
    for k, v in values.items():
        setattr(args, k, v)


def train_config(args):
    """The :class:`~diffusion_lab.train.TrainConfig` that ``train``'s flags ask for: the --preset's settings, else
    the defaults of the kind of run (``TrainConfig.for_task``: ``"classifier"`` for ``--model noisy_classifier``,
    ``"cfg"`` with ``--conditional``, else ``"denoiser"``), with only the flags the user gave on top — the same
    config the API builds for the same request. ``--ema 0`` and ``--grad-clip 0`` mean "off" (None)."""
    from .train import TrainConfig

    given = {k: getattr(args, k) for k in TrainConfig.field_names() if getattr(args, k, None) is not None}
    if given.get("ema_decay") == 0.0:
        given["ema_decay"] = None
    if given.get("grad_clip") == 0.0:
        given["grad_clip"] = None
    if not args.conditional and "label_dropout" not in given:
        given["label_dropout"] = 0.0          # a preset's label dropout does not apply to an unconditional model
    task = "classifier" if args.model == "noisy_classifier" else "cfg" if args.conditional else "denoiser"
    try:
        if args.preset is not None:
            return TrainConfig.resolve(preset=args.preset, **given)
        return TrainConfig.for_task(task, **given)
    except ValueError as err:
        raise CLIError(str(err)) from None


def cmd_train(args, parser) -> int:
    import torch

    from .checkpoint import checkpoint_files, read_checkpoint_json, record_run
    from .optim import ema_smoothed
    from .schedules import get_schedule
    from .train import train, train_classifier

    _resolve_train_args(args)
    if args.label_dropout is not None and args.label_dropout > 0 and not args.conditional:
        raise CLIError("--label-dropout needs --conditional (an unconditional model has no labels to drop)")
    if args.model == "noisy_classifier" and args.conditional:
        raise CLIError("--conditional is for denoisers; a noisy_classifier always uses the labels")
    if args.model == "noisy_classifier" and args.data in TOY_DATA:
        raise CLIError(f"--model noisy_classifier needs labelled images; --data {args.data} has no labels")
    if args.conditional and args.data in TOY_DATA:
        raise CLIError(f"--conditional needs labels; the 2-D toy --data {args.data} has none")
    classifier = args.model == "noisy_classifier"
    config = train_config(args)
    _set_threads(args.threads)

    x, y, num_classes = load_data(args.data, args.data_root, args.toy_points, config.seed)
    torch.manual_seed(config.seed)  # the initial weights
    model = _build_model(args, x, num_classes)
    schedule = get_schedule(args.schedule, T=args.T)
    out = Path(args.out)
    if args.resume and not checkpoint_files(out)["json"].exists():
        raise CLIError(f"--resume: no checkpoint at {checkpoint_files(out)['json']}")
    prev_runs = read_checkpoint_json(out).get("extra", {}).get("cli_runs", []) if args.resume else []
    n_params = sum(p.numel() for p in model.parameters())
    if not args.no_progress:
        print(f"{args.model} ({n_params:,} parameters) on {args.data} {tuple(x.shape)}, {args.schedule} schedule "
              f"T={args.T}, {config.steps} steps x batch {config.batch_size}", file=sys.stderr)

    common = dict(config=config, device=args.device, checkpoint_path=out, resume=args.resume,
                  progress=not args.no_progress)
    t0 = time.perf_counter()
    if classifier:
        res = train_classifier(model, schedule, x, y, **common)
    else:
        res = train(model, schedule, (x, y) if y is not None else x, **common)
    wall = time.perf_counter() - t0

    # Record how the run was made in the checkpoint's JSON (the tensor files and their sha256 are untouched).
    ckpt = checkpoint_files(out)["json"]
    run = {
        "command": "python -m diffusion_lab " + " ".join(shlex.quote(a) for a in args.argv),
        "steps_run": round(res.samples_per_s * res.wall_time / config.batch_size),
        "wall_time_s": round(res.wall_time, 2), "img_per_s": round(res.samples_per_s, 1),
        "device": res.device, "amp": res.amp, "threads": torch.get_num_threads(), "torch": torch.__version__}
    loss = ema_smoothed(res.losses)
    record_run(out, run, previous_runs=prev_runs, data=args.data, num_params=n_params, label_dropout=config.label_dropout,
               preset=args.preset, final_loss_ema=round(loss, 5))
    print(f"summary: steps={res.steps} final_loss={loss:.5f} wall_s={wall:.1f} img_per_s={res.samples_per_s:.1f} "
          f"device={res.device} out={ckpt}")
    return 0


# ----------------------------------------------------------------------------- sample
def resolve_model(spec: str, device="cpu"):
    """The :class:`~diffusion_lab.checkpoint.LoadedModel` of a checkpoint path or a shipped model name."""
    from . import pretrained
    from .checkpoint import checkpoint_files, load_checkpoint

    if checkpoint_files(spec)["json"].exists():
        return load_checkpoint(spec, device=device)
    if spec in pretrained.list_pretrained():
        return pretrained.load(spec, device=device)
    raise CLIError(f"{spec!r} is neither a checkpoint (no {checkpoint_files(spec)['json']}) nor a shipped model "
                   f"({', '.join(pretrained.list_pretrained())})")


def _parse_labels(s, n, K):
    import torch

    if s is None:
        return torch.arange(n) % K
    try:
        vals = [int(v) for v in s.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise CLIError(f"--labels: expected comma-separated integers, got {s!r}") from None
    if not vals or any(v < 0 or v >= K for v in vals):
        raise CLIError(f"--labels must lie in 0..{K - 1}, got {s!r}")
    return torch.tensor(vals, dtype=torch.long).repeat(math.ceil(n / len(vals)))[:n]


def cmd_sample(args, parser) -> int:
    import torch

    from .guidance import ClassifierFreeGuidance, ClassifierGuidance
    import matplotlib

    matplotlib.use("Agg")   # the command line draws no window

    from .sampling import sample_batches
    from .plotting import save_grid

    _resolve_sample_args(args)
    _set_threads(args.threads)
    device = args.device
    if device == "auto":
        from .runtime import default_device
        device = str(default_device())
    loaded = resolve_model(args.checkpoint, device)
    schedule, kind, K = loaded.schedule, loaded.kind, loaded.num_classes
    if kind == "noisy_classifier":
        raise CLIError(f"{args.checkpoint} is a noisy classifier, not a denoiser; pass it as --classifier")
    if kind not in ("unet", "mlp"):
        raise CLIError(f"{args.checkpoint} is a {kind} model, not a denoiser")
    cfg_flag = "--guidance-weight" if args.guidance_weight is not None else "--guidance-scale"
    use_cfg = args.guidance_weight is not None or args.guidance_scale is not None
    if use_cfg and args.classifier is not None:
        raise CLIError(f"use either {cfg_flag} (classifier-free) or --classifier (classifier guidance), not both")
    if use_cfg and K is None:
        raise CLIError(f"{cfg_flag} (classifier-free guidance) needs a conditional model trained with label "
                       f"dropout; {args.checkpoint} is unconditional (train it with --conditional)")
    if args.guidance_interval is not None and not use_cfg:
        raise CLIError("--guidance-interval applies to classifier-free guidance: give --guidance-weight W (or "
                       "--guidance-scale S) too")
    if args.sampler == "ddim" and args.steps > schedule.T:
        raise CLIError(f"--steps {args.steps} exceeds the schedule's T={schedule.T}")

    guidance, classifier, K_lab = None, None, K
    if args.classifier is not None:
        classifier = resolve_model(args.classifier, device)
        if classifier.kind != "noisy_classifier":
            raise CLIError(f"--classifier {args.classifier} is not a noisy classifier")
        guidance = ClassifierGuidance(classifier.model, args.classifier_scale)
        K_lab = classifier.num_classes
    elif args.guidance_scale is not None:      # diffusers' s = 1 + w
        guidance = ClassifierFreeGuidance.from_scale(args.guidance_scale, num_classes=K, interval=args.guidance_interval)
    elif args.guidance_weight is not None:
        guidance = ClassifierFreeGuidance(args.guidance_weight, num_classes=K, interval=args.guidance_interval)
    if args.labels is not None and K_lab is None:
        raise CLIError(f"--labels needs a conditional model or --classifier; {args.checkpoint} is unconditional")
    labels = _parse_labels(args.labels, args.n, K_lab) if K_lab is not None else None

    shape = loaded.item_shape
    gen = torch.Generator(device=device).manual_seed(args.seed)
    clip = (-1.0, 1.0) if args.clip_x0 else None
    if guidance is not None:
        print(f"guidance: {guidance!r}", flush=True)
    t0 = time.perf_counter()
    samples = sample_batches(loaded, None, None, n=args.n, y=labels, sampler=args.sampler,
                             batch_size=args.batch_size, steps=args.steps, eta=args.eta, variance=args.variance,
                             device=device, guidance=guidance, generator=gen, progress=not args.no_progress,
                             clip_x0=clip)
    wall = time.perf_counter() - t0
    out = save_grid(samples, args.out, labels)
    if args.save_tensors:
        from safetensors.torch import save_file
        t = {"samples": samples.contiguous()}
        if labels is not None:
            t["labels"] = labels.contiguous()
        Path(args.save_tensors).parent.mkdir(parents=True, exist_ok=True)
        save_file(t, args.save_tensors)

    is_digits = loaded.meta.get("extra", {}).get("data") == "digits" or (kind == "unet" and tuple(shape) == (1, 8, 8))
    if is_digits and not args.no_metrics:
        from . import metrics

        judge = metrics.get_judge()
        parts = []
        if labels is not None:
            parts.append(f"judge_accuracy={metrics.conditional_accuracy(samples, labels, judge):.4f}")
        if samples.shape[0] >= 2:
            parts.append(f"frechet={metrics.frechet_distance_to_data(samples, judge):.3f}")
            parts.append(f"real_train_vs_test={metrics.real_frechet_baseline(judge):.3f}")
            div = metrics.diversity(samples, judge, labels=labels)
            parts.append(f"diversity={div['pairwise_ratio']:.3f} mode_coverage={div['mode_coverage']:.2f}")
        print("metrics: " + " ".join(parts))
    steps = schedule.T if args.sampler == "ddpm" else args.steps
    print(f"summary: n={samples.shape[0]} sampler={args.sampler} steps={steps} wall_s={wall:.1f} "
          f"img_per_s={samples.shape[0] / wall:.1f} out={out}")
    return 0


# ----------------------------------------------------------------------------- entry point
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    sub = {"train": cmd_train, "sample": cmd_sample}[args.command]
    try:
        return sub(args, parser)
    except CLIError as err:
        parser.exit(2, f"diffusion-lab {args.command}: error: {err}\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
