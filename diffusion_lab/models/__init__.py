"""Networks (book chapter 5): the DDPM UNet, an MLP denoiser for 2-D data, a noise-aware classifier.

A registry maps a model's ``kind`` to its class and config, so a checkpoint's JSON rebuilds the network::

    model = build_model("unet", base_channels=32, channel_mults=(1, 2))
    same = model_from_config(model_config(model))     # {"kind": "unet", "config": {...}}
"""
from __future__ import annotations

import dataclasses

import torch.nn as nn

from .classifier import NoisyClassifier, NoisyClassifierConfig
from .layers import AttentionBlock, ResBlock, TimestepEmbedding, timestep_embedding
from .mlp import MLPConfig, MLPDenoiser
from .unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig", "MLPDenoiser", "MLPConfig", "NoisyClassifier", "NoisyClassifierConfig",
           "ResBlock", "AttentionBlock", "TimestepEmbedding", "timestep_embedding",
           "MODELS", "build_model", "model_from_config", "model_config"]

MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "unet": (UNet, UNetConfig),
    "mlp": (MLPDenoiser, MLPConfig),
    "noisy_classifier": (NoisyClassifier, NoisyClassifierConfig),
}


def build_model(kind: str, **config) -> nn.Module:
    """Build a network by kind (``"unet"``, ``"mlp"``, ``"noisy_classifier"``) from its config fields."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(MODELS)}")
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
