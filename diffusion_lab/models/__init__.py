"""Networks (book chapter 5): the DDPM UNet, an MLP denoiser for 2-D data, a noise-aware classifier.

A registry maps a model's ``kind`` to its class and config, so a checkpoint's JSON rebuilds the network::

    model = build_model("unet", base_channels=32, channel_mults=(1, 2))
    same = model_from_config(model_config(model))     # {"kind": "unet", "config": {...}}

:func:`model_config` is the one serializer of a network's config (the config dataclass, through
``dataclasses.asdict``); checkpoints store exactly that.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from ..errors import unknown_name
from ..parameterization import EpsFromPrediction

from .classifier import NoisyClassifier, NoisyClassifierConfig
from .layers import AttentionBlock, ResBlock, TimestepEmbedding, timestep_embedding
from .mlp import MLPConfig, MLPDenoiser
from .unet import UNet, UNetConfig

__all__ = ["device_of", "UNet", "UNetConfig", "MLPDenoiser", "MLPConfig", "NoisyClassifier", "NoisyClassifierConfig",
           "ResBlock", "AttentionBlock", "TimestepEmbedding", "timestep_embedding",
           "MODELS", "build_model", "model_from_config", "model_config", "build_model_for_data", "unwrap_model",
           "num_classes_of", "item_shape_of", "freeze"]

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


def wrapper_layers(model: nn.Module):
    """``model``, then each module it wraps, down to the bare network: DDP / ``AveragedModel`` (``.module``),
    ``torch.compile`` (``._orig_mod``) and :class:`~diffusion_lab.parameterization.EpsFromPrediction` (``.net``)."""
    while True:
        yield model
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, EpsFromPrediction):
            model = model.net
        elif isinstance(model, (nn.parallel.DistributedDataParallel, torch.optim.swa_utils.AveragedModel)):
            model = model.module
        else:
            return


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside DDP / ``AveragedModel`` (``.module``), ``torch.compile`` (``._orig_mod``) and
    :class:`~diffusion_lab.parameterization.EpsFromPrediction` (``.net``): the package's one unwrapping."""
    for layer in wrapper_layers(model):
        pass
    return layer


def num_classes_of(model) -> int | None:
    """The number of classes of a conditional model or a classifier, through any wrapper: ``num_classes`` of the
    model or of its ``config`` (how diffusion_lab.models keep it), else None. The package's one reading of it."""
    for layer in wrapper_layers(model) if isinstance(model, nn.Module) else (model,):
        k = getattr(layer, "num_classes", None)
        if k is None:
            k = getattr(getattr(layer, "config", None), "num_classes", None)
        if k is not None:
            return k
    return None


def item_shape_of(model: nn.Module) -> tuple | None:
    """The shape of one item a registered network takes: ``(data_dim,)`` for the MLP, ``(C, H, W)`` for the UNet
    and the noisy classifier; None for any other module."""
    cfg = getattr(unwrap_model(model), "config", None)
    if hasattr(cfg, "data_dim"):
        return (cfg.data_dim,)
    if hasattr(cfg, "in_channels") and hasattr(cfg, "image_size"):
        return (cfg.in_channels, cfg.image_size, cfg.image_size)
    return None


def device_of(model) -> torch.device:
    """The device of a model's first parameter; the CPU for a callable without parameters (an exact denoiser)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        try:
            return next(iter(params())).device
        except (StopIteration, TypeError):
            pass
    return torch.device("cpu")


def freeze(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with every parameter's ``requires_grad`` off (a model to sample or judge with, not
    to train); returns it."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def model_config(model: nn.Module) -> dict:
    """``{"kind": ..., "config": {...}}`` — JSON-able; :func:`model_from_config` inverts it."""
    model = unwrap_model(model)
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
