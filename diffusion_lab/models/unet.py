"""The ε-prediction UNet of DDPM (Ho et al. 2020, appendix B) in the form of improved-diffusion's ``unet.py``
(Nichol & Dhariwal 2021) — book chapter 5.

    x_t ─ conv ─┬ [ResBlock (+Attn)]×n ─ Down ─ … ─ middle: Res, Attn, Res ─ … ─ Up ─ [ResBlock (+Attn)]×(n+1) ─ out ─ ε̂
                └────────────── skip connections (concatenated on the way up) ──────────────┘

The step t enters through a sinusoidal embedding and an MLP (:class:`~.layers.TimestepEmbedding`); a class
label y (optional) through ``nn.Embedding(num_classes + 1, dim)`` whose last row is the null label ∅ used by
classifier-free guidance (Ho & Salimans 2022). Both are added and given to every ResBlock. The output conv
starts at zero, so ε̂ = 0 at initialisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import checks
from .layers import (AttentionBlock, Downsample, ResBlock, TimestepEmbedding, Upsample, check_labels_input,
                     check_timesteps_input, group_norm, resolve_config, zero_module)

__all__ = ["UNetConfig", "UNet", "EmbedSequential", "check_image_input", "build_down_path", "build_middle"]


def _tuple(v):
    return tuple(int(i) for i in v)


@dataclass
class UNetConfig:
    """Size of a :class:`UNet`. ``attention_resolutions`` lists feature-map sizes (for an input of
    ``image_size``) at which self-attention is used, e.g. ``(4,)`` for 8×8 digits, ``(16,)`` for 32×32 (DDPM)."""

    in_channels: int = 1
    image_size: int = 8
    base_channels: int = 64
    channel_mults: tuple = (1, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple = (4,)
    dropout: float = 0.0
    num_classes: int | None = None
    num_groups: int = 32
    num_heads: int = 1
    out_channels: int | None = None
    time_embed_dim: int | None = None

    def __post_init__(self):
        self.channel_mults = _tuple(self.channel_mults)
        self.attention_resolutions = _tuple(self.attention_resolutions)
        checks.int_fields(self, ("in_channels", "image_size", "base_channels", "num_res_blocks", "num_groups", "num_heads"))
        if not self.channel_mults or any(m <= 0 for m in self.channel_mults):
            raise ValueError(f"UNetConfig.channel_mults must be positive ints, got {self.channel_mults}")
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or int(self.num_classes) <= 0):
            raise ValueError(f"UNetConfig.num_classes must be None or a positive int, got {self.num_classes!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"UNetConfig.dropout must lie in [0, 1), got {self.dropout}")
        f = self.downsample_factor
        if self.image_size % f:
            raise ValueError(f"UNetConfig.image_size={self.image_size} must be divisible by the downsampling factor "
                             f"2^(len(channel_mults)-1) = {f}")
        if self.out_channels is None:
            self.out_channels = self.in_channels
        if self.time_embed_dim is None:
            self.time_embed_dim = 4 * self.base_channels

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)



def check_image_input(x_t, cfg, name: str) -> None:
    """Reject an x_t whose rank, channel count or spatial size the network cannot take, with a message."""
    if not isinstance(x_t, torch.Tensor) or x_t.dim() != 4:
        shape = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
        raise ValueError(f"{name} expects x_t of shape (B, C, H, W), got {shape}")
    if x_t.shape[1] != cfg.in_channels:
        raise ValueError(f"{name} was built for {cfg.in_channels} input channel(s), got x_t of shape {tuple(x_t.shape)}")
    f = cfg.downsample_factor
    if x_t.shape[2] % f or x_t.shape[3] % f:
        raise ValueError(f"x_t's spatial size {tuple(x_t.shape[2:])} must be divisible by the downsampling factor "
                         f"{f} (2^(len(channel_mults)-1) with channel_mults={cfg.channel_mults})")


class EmbedSequential(nn.Sequential):
    """A sequence of layers where ResBlocks also receive the embedding (improved-diffusion ``TimestepEmbedSequential``)."""

    def forward(self, x, emb_act):
        for layer in self:
            x = layer(x, emb_act) if isinstance(layer, ResBlock) else layer(x)
        return x


def build_down_path(cfg) -> tuple[nn.ModuleList, list[int], int]:
    """The contracting half of the UNet: ``[input conv, (ResBlock (+Attn))×n, Downsample, …]``.

    Returns the blocks, the channel count of each skip connection (one per block) and the final channels.
    Shared by :class:`UNet` and :class:`~.classifier.NoisyClassifier`.
    """
    ch = cfg.base_channels
    blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
    skips, res = [ch], cfg.image_size
    for level, mult in enumerate(cfg.channel_mults):
        for _ in range(cfg.num_res_blocks):
            layers = [ResBlock(ch, cfg.base_channels * mult, cfg.time_embed_dim, cfg.dropout, cfg.num_groups)]
            ch = cfg.base_channels * mult
            if res in cfg.attention_resolutions:
                layers.append(AttentionBlock(ch, cfg.num_heads, cfg.num_groups))
            blocks.append(EmbedSequential(*layers))
            skips.append(ch)
        if level != len(cfg.channel_mults) - 1:
            blocks.append(EmbedSequential(Downsample(ch)))
            skips.append(ch)
            res //= 2
    return blocks, skips, ch


def build_middle(cfg, ch: int) -> EmbedSequential:
    """The bottleneck: ResBlock, attention, ResBlock (DDPM appendix B)."""
    return EmbedSequential(
        ResBlock(ch, ch, cfg.time_embed_dim, cfg.dropout, cfg.num_groups),
        AttentionBlock(ch, cfg.num_heads, cfg.num_groups),
        ResBlock(ch, ch, cfg.time_embed_dim, cfg.dropout, cfg.num_groups),
    )


class UNet(nn.Module):
    """ε_θ(x_t, t, y): the DDPM UNet. ``forward(x_t, t, y=None)`` returns ε̂ with the shape of ``x_t``.

    Build it from a :class:`UNetConfig` or from keyword arguments: ``UNet(base_channels=32, channel_mults=(1, 2))``.
    For a conditional model (``num_classes=K``), ``y`` holds labels in 0…K-1 or the null label K; ``y=None`` is ∅.
    """

    kind = "unet"

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = cfg = resolve_config(UNetConfig, config, kwargs)
        emb = cfg.time_embed_dim
        self.time_embed = TimestepEmbedding(cfg.base_channels, emb)
        self.label_embed = nn.Embedding(cfg.num_classes + 1, emb) if cfg.num_classes is not None else None

        self.input_blocks, skips, ch = build_down_path(cfg)
        self.middle_block = build_middle(cfg, ch)
        self.output_blocks = nn.ModuleList()
        res = cfg.image_size // cfg.downsample_factor
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), cfg.base_channels * mult, emb, cfg.dropout, cfg.num_groups)]
                ch = cfg.base_channels * mult
                if res in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg.num_heads, cfg.num_groups))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    res *= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out_norm = group_norm(ch, cfg.num_groups)
        self.out_conv = zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    # ---------------------------------------------------------------------------------------------
    def embed(self, t, y, batch: int, device) -> torch.Tensor:
        """SiLU(time embedding + label embedding), computed once and shared by every ResBlock."""
        t = check_timesteps_input(t, batch, device)
        emb = self.time_embed(t)
        if self.label_embed is not None or y is not None:
            y = check_labels_input(y, self.config.num_classes, batch, device, type(self).__name__)
            emb = emb + self.label_embed(y)
        return F.silu(emb)

    def forward(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        check_image_input(x_t, self.config, type(self).__name__)
        emb = self.embed(t, y, x_t.shape[0], x_t.device)
        h, hs = x_t, []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out_conv(F.silu(self.out_norm(h)))
