"""Networks (book chapter 5): the DDPM UNet, an MLP denoiser for 2-D data, a noise-aware classifier.

A registry maps a model's ``kind`` to its class and config, so a checkpoint's JSON rebuilds the network::

    model = build_model("unet", base_channels=32, channel_mults=(1, 2))
    same = model_from_config(model_config(model))     # {"kind": "unet", "config": {...}}

:func:`model_config` is the one serializer of a network's config (the config dataclass, through
``dataclasses.asdict``); checkpoints store exactly that.
"""
from __future__ import annotations

import dataclasses

import torch.nn as nn

from ..errors import unknown_name

from .classifier import NoisyClassifier, NoisyClassifierConfig
from .layers import AttentionBlock, ResBlock, TimestepEmbedding, timestep_embedding
from .mlp import MLPConfig, MLPDenoiser
from .unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig", "MLPDenoiser", "MLPConfig", "NoisyClassifier", "NoisyClassifierConfig",
           "ResBlock", "AttentionBlock", "TimestepEmbedding", "timestep_embedding",
           "MODELS", "build_model", "model_from_config", "model_config", "build_model_for_data"]

MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "unet": (UNet, UNetConfig),
    "mlp": (MLPDenoiser, MLPConfig),
    "noisy_classifier": (NoisyClassifier, NoisyClassifierConfig),
}


def build_model(kind: str, **config) -> nn.Module:
    """Build a network by kind (``"unet"``, ``"mlp"``, ``"noisy_classifier"``) from its config fields."""
    if kind not in MODELS:
        raise unknown_name("model kind", kind, MODELS)
    cls, cfg_cls = MODELS[kind]
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ValueError(f"unknown {cfg_cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}")
    return cls(cfg_cls(**config))


def model_config(model: nn.Module) -> dict:
    """``{"kind": ..., "config": {...}}`` — JSON-able; :func:`model_from_config` inverts it."""
    model = getattr(model, "module", model)  # DDP / AveragedModel wrappers
    model = getattr(model, "_orig_mod", model)  # torch.compile
    kind = getattr(model, "kind", None)
    if kind not in MODELS or not isinstance(model, MODELS[kind][0]):
        raise TypeError(f"{type(model).__name__} is not a registered diffusion_lab model ({sorted(MODELS)})")
    return {"kind": kind, "config": dataclasses.asdict(model.config)}


def model_from_config(config: dict) -> nn.Module:
    """Rebuild a network from ``{"kind": ..., "config": {...}}`` (as written by :func:`model_config`)."""
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"a model config is a dict with 'kind' and 'config', got {config!r}")
    return build_model(config["kind"], **config.get("config", {}))


def build_model_for_data(kind: str, x, num_classes: int | None = None, **size) -> nn.Module:
    """A network of ``kind`` shaped for the data ``x``: an MLP for flat points (N, D) (``data_dim`` = D), a UNet or
    noisy classifier for square images (N, C, H, H) (``in_channels`` = C, ``image_size`` = H). ``num_classes``
    makes a denoiser class-conditional (None: unconditional) and sets a classifier's logits; ``size`` holds the
    other config fields (``base_channels``, ``hidden_dim`` …; the ones the kind has no use for are ignored).
    A ValueError says which data a kind needs."""
    if kind not in MODELS:
        raise unknown_name("model kind", kind, MODELS)
    fields = {f.name for f in dataclasses.fields(MODELS[kind][1])}
    size = {k: v for k, v in size.items() if k in fields}
    if kind == "mlp":
        if x.dim() != 2:
            raise ValueError(f"a {kind} model takes flat 2-D data (N, D), such as a toy; got images "
                             f"{tuple(x.shape[1:])}: use a unet")
        return build_model("mlp", data_dim=x.shape[1], num_classes=num_classes, **size)
    if x.dim() != 4:
        raise ValueError(f"a {kind} model takes images (N, C, H, W); got 2-D points {tuple(x.shape[1:])}: use an mlp")
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"square images only, got {tuple(x.shape[2:])}")
    return build_model(kind, in_channels=x.shape[1], image_size=x.shape[2], num_classes=num_classes, **size)
