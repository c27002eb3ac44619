"""Building blocks shared by every network here, one definition each (book chapter 5).

* :func:`timestep_embedding` — the sinusoidal embedding of the step index (DDPM §3.3 / appendix B, taken
  from the Transformer's positional encoding).
* :class:`TimestepEmbedding` — sinusoid → Linear → SiLU → Linear, as in DDPM and improved-diffusion.
* :class:`ResBlock` — GroupNorm → SiLU → conv → (+ time/class embedding) → GroupNorm → SiLU → dropout → conv,
  plus a skip; the last conv starts at zero so every block starts as the identity (improved-diffusion, ``unet.py``).
* :class:`AttentionBlock` — single-head or multi-head self-attention over the pixels of a feature map
  (DDPM uses it at 16×16), with fused ``F.scaled_dot_product_attention``.
* :class:`Downsample` / :class:`Upsample` — strided 3×3 conv and nearest-neighbour ×2 followed by a 3×3 conv.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import checks

__all__ = ["timestep_embedding", "TimestepEmbedding", "ResBlock", "AttentionBlock", "Downsample", "Upsample",
           "zero_module", "group_norm"]


def resolve_config(config_cls, config, kwargs: dict):
    """A model's config: the ``config`` object given, or ``config_cls(**kwargs)``; never both."""
    if config is None:
        return config_cls(**kwargs)
    if kwargs:
        raise TypeError(f"pass either a {config_cls.__name__} or keyword arguments, not both")
    return config


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero and return it (improved-diffusion's ``zero_module``)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_norm(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with ``num_groups`` groups, reduced to the largest divisor of ``channels`` when needed."""
    g = math.gcd(channels, num_groups)
    return nn.GroupNorm(g, channels, eps=1e-5)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps ``t`` (shape (B,)) into ``dim`` features (DDPM §3.3, appendix B).

    Feature ``i < dim/2`` is ``cos(t · ω_i)`` and feature ``dim/2 + i`` is ``sin(t · ω_i)`` with
    ``ω_i = max_period^(−i/(dim/2))`` — the convention of improved-diffusion. Computed in float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """t ↦ MLP(sinusoid(t)): the time embedding every ResBlock receives (DDPM appendix B)."""

    def __init__(self, sinusoid_dim: int, embed_dim: int):
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.linear_1 = nn.Linear(sinusoid_dim, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.sinusoid_dim).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


class ResBlock(nn.Module):
    """A residual block conditioned on an embedding (DDPM appendix B; improved-diffusion ``ResBlock``).

    ``forward(x, emb_act)`` takes the embedding *after* its SiLU, computed once per network rather than once
    per block. ``out_conv`` (the block's last conv) is zero-initialised, so the block starts as its skip path.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0, num_groups: int = 32):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm_1 = group_norm(in_channels, num_groups)
        self.conv_1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm_2 = group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv_2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        h = self.conv_1(F.silu(self.norm_1(x)))
        h = h + self.emb_proj(emb_act)[:, :, None, None].to(h.dtype)
        h = self.conv_2(self.dropout(F.silu(self.norm_2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H·W positions of a feature map, with a residual connection
    (DDPM appendix B; improved-diffusion ``AttentionBlock``). The output projection starts at zero.

    Attention runs in ``F.scaled_dot_product_attention`` (fused kernels). Under float16 outside CUDA it is
    computed in float32; CUDA's fused kernels accumulate the softmax in float32 already, which avoids the
    fp16 overflow of a naive ``softmax(q kᵀ)`` (GUIDE §8).
    """

    def __init__(self, channels: int, num_heads: int = 1, num_groups: int = 32):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention: channels={channels} is not divisible by num_heads={num_heads}")
        self.channels, self.num_heads = channels, num_heads
        self.norm = group_norm(channels, num_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)                      # (B, HW, C)
        q, k, v = self.qkv(h).view(B, H * W, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        dtype = q.dtype
        if dtype == torch.float16 and q.device.type != "cuda":
            q, k, v = q.float(), k.float(), v.float()
        a = F.scaled_dot_product_attention(q, k, v).to(dtype)            # (B, heads, HW, C/heads)
        a = self.proj_out(a.transpose(1, 2).reshape(B, H * W, C))
        return x + a.transpose(1, 2).reshape(B, C, H, W)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 conv (improved-diffusion ``Downsample`` with ``use_conv=True``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour ×2 then a 3×3 conv (improved-diffusion ``Upsample``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# ----------------------------------------------------------------------------- input checks at the boundary
def check_timesteps_input(t, batch: int, device) -> torch.Tensor:
    """Validate the step indices given to a network and return a LongTensor of shape (B,) on ``device``.

    ``t`` may be an int or an integer tensor of shape (B,) or () (broadcast). Floats, bools and negative
    values are rejected with a message; the networks do not know T, so the upper end is the schedule's job.
    The value check is skipped inside a sampler's loop (:func:`diffusion_lab.checks.trusted`) and under
    ``torch.compile``: the caller checked the values once.
    """
    return checks.timesteps(t, None, batch, device=device)


def check_labels_input(y, num_classes: int | None, batch: int, device, model_name: str) -> torch.Tensor | None:
    """Validate class labels ``y`` and return a LongTensor of shape (B,) on ``device`` (or None).

    For a conditional model the label ``num_classes`` is the null label ∅ of classifier-free guidance, and
    ``y=None`` means ∅ for every item. Out-of-range labels are caught here, before ``nn.Embedding`` (on CUDA an
    out-of-range index is an opaque device-side assert), except inside a sampler's checked loop.
    """
    if num_classes is None:
        if y is not None:
            raise ValueError(f"{model_name} is unconditional (num_classes=None) but labels y were given; "
                             "build it with num_classes=K to train a class-conditional model")
        return None
    if y is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    return checks.labels(y, batch, num_classes, allow_null=True, device=device)
