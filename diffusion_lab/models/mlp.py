"""An ε-prediction MLP for flat data (the 2-D toys of book chapter 4): ε_θ(x_t, t, y) with x_t of shape (B, D).

Residual MLP blocks, each receiving SiLU(time embedding [+ label embedding]) — the UNet's conditioning
(:mod:`.layers`) without the convolutions. The output layer starts at zero, so ε̂ = 0 at initialisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import checks
from .layers import TimestepEmbedding, check_labels_input, check_timesteps_input, resolve_config, zero_module

__all__ = ["MLPConfig", "MLPDenoiser"]


@dataclass
class MLPConfig:
    data_dim: int = 2
    hidden_dim: int = 128
    num_blocks: int = 3
    time_embed_dim: int = 64
    num_classes: int | None = None
    dropout: float = 0.0

    def __post_init__(self):
        checks.int_fields(self, ("data_dim", "hidden_dim", "num_blocks", "time_embed_dim"))
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or int(self.num_classes) <= 0):
            raise ValueError(f"MLPConfig.num_classes must be None or a positive int, got {self.num_classes!r}")



class _MLPBlock(nn.Module):
    def __init__(self, dim, emb_dim, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc_1 = nn.Linear(dim, dim)
        self.emb_proj = nn.Linear(emb_dim, dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc_2 = nn.Linear(dim, dim)

    def forward(self, h, emb_act):
        z = self.fc_1(F.silu(self.norm(h))) + self.emb_proj(emb_act)
        return h + self.fc_2(self.dropout(F.silu(z)))


class MLPDenoiser(nn.Module):
    """``forward(x_t, t, y=None) -> ε̂`` for x_t of shape (B, D). ``num_classes=K`` adds a label embedding with a
    null label K (classifier-free guidance); ``y=None`` means ∅."""

    kind = "mlp"

    def __init__(self, config: MLPConfig | None = None, **kwargs):
        super().__init__()
        self.config = cfg = resolve_config(MLPConfig, config, kwargs)
        self.time_embed = TimestepEmbedding(cfg.time_embed_dim, cfg.time_embed_dim)
        self.label_embed = nn.Embedding(cfg.num_classes + 1, cfg.time_embed_dim) if cfg.num_classes else None
        self.input = nn.Linear(cfg.data_dim, cfg.hidden_dim)
        self.blocks = nn.ModuleList(_MLPBlock(cfg.hidden_dim, cfg.time_embed_dim, cfg.dropout)
                                    for _ in range(cfg.num_blocks))
        self.out_norm = nn.LayerNorm(cfg.hidden_dim)
        self.output = zero_module(nn.Linear(cfg.hidden_dim, cfg.data_dim))

    def forward(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 2 or x_t.shape[1] != self.config.data_dim:
            shape = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise ValueError(f"MLPDenoiser expects x_t of shape (B, {self.config.data_dim}), got {shape}")
        B = x_t.shape[0]
        emb = self.time_embed(check_timesteps_input(t, B, x_t.device))
        if self.label_embed is not None or y is not None:
            y = check_labels_input(y, self.config.num_classes, B, x_t.device, "MLPDenoiser")
            emb = emb + self.label_embed(y)
        emb = F.silu(emb)
        h = self.input(x_t)
        for block in self.blocks:
            h = block(h, emb)
        return self.output(F.silu(self.out_norm(h)))
