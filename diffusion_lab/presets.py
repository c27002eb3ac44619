"""Named training recipes: a model, a schedule, a data set and the training options, under one name.

    from diffusion_lab import presets
    from diffusion_lab.train import train

    fresh = presets.build("digits-cond-fast")                # fresh weights (seed them first): a LoadedModel
    x, y = presets.training_data("digits-cond-fast")         # the digits train split
    result = train(fresh.network, fresh.schedule, (x, y), preset="digits-cond-fast", progress=False)

or, on the command line, ``python -m diffusion_lab train --preset digits-cond-fast --out runs/fast``. Every value
can be overridden: keyword arguments of :func:`~diffusion_lab.train.train` override the preset's training
options, keyword arguments of :func:`build` its model fields, and on the command line each flag its value.

``digits-cond-fast`` is the recipe of issue #11 ("time to quality"): the shipped ``digits-cond`` network trained
on 80,000 images instead of 768,000 — v-prediction (book section 5.8; its checkpoints load as ε-models), batch 64,
a cosine learning-rate decay, a power-function EMA instead of a constant decay, min-SNR-5 loss weighting and no
dropout. ``benchmarks/time_to_quality.py`` measures it (with its ``sampling`` settings) and
``benchmarks/RESULTS.md`` holds its results: the ablation and the figures on held-out seeds.
``digits-cond`` is the recipe the shipped checkpoint was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import data
from .checkpoint import LoadedModel
from .errors import UnknownNameError
from .models import build_model
from .schedules import get_schedule

__all__ = ["Preset", "PRESETS", "UnknownPresetError", "get_preset", "list_presets", "build", "training_data"]


class UnknownPresetError(UnknownNameError):
    """A preset name that is not in :data:`PRESETS` (a ``LookupError``, like every unknown name in the package);
    the message lists the known ones."""


@dataclass(frozen=True)
class Preset:
    """One recipe. ``model`` holds :func:`~diffusion_lab.models.build_model`'s ``kind`` and fields; ``schedule``
    :func:`~diffusion_lab.schedules.get_schedule`'s; ``train`` the :class:`~diffusion_lab.train.TrainConfig`
    fields it sets (the rest keep their defaults); ``sampling`` how it is sampled and measured — ``sampler``,
    ``steps``, classifier-free ``guidance_weight`` (the book's w; diffusers' guidance_scale is 1 + w) and
    ``guidance_interval`` — which ``diffusion-lab sample --preset NAME`` uses."""

    name: str
    description: str
    data: str
    model: dict
    schedule: dict
    train: dict
    sampling: dict = field(default_factory=dict)


_DIGITS_SAMPLING = dict(sampler="ddim", steps=50, guidance_weight=2.0, guidance_interval=(0, 100))
_DIGITS_UNET = dict(kind="unet", in_channels=1, image_size=8, base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                    attention_resolutions=(4,), num_heads=1, num_groups=32, dropout=0.1, num_classes=10)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("digits-cond-fast",
           "conditional digits UNet for CFG in 80,000 training images (v-prediction, batch 64, cosine lr, "
           "power EMA, min-SNR-5)",
           data="digits", model={**_DIGITS_UNET, "dropout": 0.0}, schedule=dict(name="linear", T=1000),
           train=dict(steps=1250, batch_size=64, lr=3e-3, warmup=100, lr_schedule="cosine", min_lr_ratio=0.0,
                      ema_decay=None, ema_power=6.94, loss_weighting="min_snr", min_snr_gamma=5.0,
                      prediction="v", label_dropout=0.15, grad_clip=1.0, weight_decay=0.0),
           sampling=_DIGITS_SAMPLING),
    Preset("digits-cond", "the shipped digits-cond recipe (768,000 images)",
           data="digits", model=dict(_DIGITS_UNET), schedule=dict(name="linear", T=1000),
           train=dict(steps=6000, batch_size=128, lr=1e-3, warmup=200, ema_decay=0.999, label_dropout=0.15,
                      grad_clip=1.0, weight_decay=0.0),
           sampling=_DIGITS_SAMPLING),
)}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; :class:`UnknownPresetError` (a ``LookupError``) naming the known ones if none."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise UnknownPresetError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}")
    return PRESETS[name]


def build(name: str, **model_overrides):
    """A preset's freshly initialised network (seed the global RNG first for reproducible weights) and its noise
    schedule, as a :class:`~diffusion_lab.checkpoint.LoadedModel` (``source="preset"``, trainable: not frozen;
    ``.network`` is the network to train, ``.model`` the ε-model to sample it with, ``.meta["data"]`` the name of
    its training data, see :func:`training_data`). ``model_overrides`` replace model fields (e.g.
    ``base_channels=64``)."""
    p = get_preset(name)
    cfg = {**p.model, **model_overrides}
    kind = cfg.pop("kind")
    return LoadedModel.of(build_model(kind, **cfg), get_schedule(dict(p.schedule)),
                          prediction=p.train.get("prediction", "eps"), source="preset",
                          meta={"preset": p.name, "data": p.data}, frozen=False)


def training_data(name: str):
    """The preset's training data as ``(x, y)`` (the train split; never the test split)."""
    p = get_preset(name)
    if p.data == "digits":
        return data.load_digits("train")
    return data.load_mnist_family(p.data, "train")
