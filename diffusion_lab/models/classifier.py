"""A noise-aware classifier p_φ(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, §4; book chapter 7).

It is the contracting half of the UNet — the same input conv, ResBlocks, attention and time embedding
(:func:`~.unet.build_down_path`, :func:`~.unet.build_middle`) — followed by GroupNorm, SiLU, global average
pooling and a linear layer to logits. Trained on q_sample(x_0, t) with uniform t
(:func:`diffusion_lab.train.train_classifier`), so its gradient ∇ₓ log p_φ(y | x_t) is meaningful at every t.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import TimestepEmbedding, check_timesteps_input, group_norm, resolve_config
from .unet import UNetConfig, build_down_path, build_middle, check_image_input

__all__ = ["NoisyClassifierConfig", "NoisyClassifier"]


@dataclass
class NoisyClassifierConfig(UNetConfig):
    """The encoder fields of :class:`~.unet.UNetConfig`; ``num_classes`` is the number of logits (required)."""

    num_classes: int | None = 10

    def __post_init__(self):
        if self.num_classes is None:
            raise ValueError("NoisyClassifierConfig.num_classes must be a positive int (the number of logits)")
        super().__post_init__()


class NoisyClassifier(nn.Module):
    """``forward(x_t, t) -> logits`` of shape (B, num_classes): a time-conditioned UNet encoder + pooling."""

    kind = "noisy_classifier"

    def __init__(self, config: NoisyClassifierConfig | None = None, **kwargs):
        super().__init__()
        self.config = cfg = resolve_config(NoisyClassifierConfig, config, kwargs)
        self.time_embed = TimestepEmbedding(cfg.base_channels, cfg.time_embed_dim)
        self.input_blocks, _, ch = build_down_path(cfg)
        self.middle_block = build_middle(cfg, ch)
        self.out_norm = group_norm(ch, cfg.num_groups)
        self.head = nn.Linear(ch, cfg.num_classes)

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        check_image_input(x_t, self.config, type(self).__name__)
        emb = F.silu(self.time_embed(check_timesteps_input(t, x_t.shape[0], x_t.device)))
        h = x_t
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        h = F.silu(self.out_norm(h)).mean(dim=(2, 3))
        return self.head(h.float() if h.dtype == torch.float16 else h)
