"""Figures the book draws from the package's own objects (book chapter 5 and after).

* :func:`unet_blocks` — the blocks of a :class:`~diffusion_lab.models.UNet` in the order data flows through them,
  with their input/output channels, feature-map size and parameter count (found by running one dummy input).
* :func:`draw_unet` — that list drawn as the "U": the contracting path down the left, the bottleneck at the bottom,
  the expanding path up the right, the skip connections, and the time/label embedding every ResBlock receives.
* :func:`image_grid` — a batch of images in [-1, 1] as one grid on an axis.

Only matplotlib; nothing here changes a model.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .models import unwrap_model
from .models.layers import AttentionBlock, Downsample, ResBlock, Upsample
from .models.unet import UNet

__all__ = ["unet_blocks", "draw_unet", "image_grid", "count_parameters", "save_grid"]


def count_parameters(module: torch.nn.Module) -> int:
    """Number of scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _describe(block) -> str:
    parts = []
    for layer in block:
        if isinstance(layer, ResBlock):
            parts.append("ResBlock")
        elif isinstance(layer, AttentionBlock):
            parts.append("+ attention")
        elif isinstance(layer, Downsample):
            parts.append("downsample\n×½")
        elif isinstance(layer, Upsample):
            parts.append("+ upsample ×2")
        elif isinstance(layer, torch.nn.Conv2d):
            parts.append("conv 3×3")
        else:
            parts.append(type(layer).__name__)
    return "\n".join(parts)


@torch.no_grad()
def unet_blocks(model) -> list[dict]:
    """The UNet's blocks in forward order, each a dict with ``name``, ``path`` (``"embed"``, ``"down"``,
    ``"middle"``, ``"up"``, ``"out"``), ``text`` (its layers), ``in_ch``, ``out_ch``, ``size`` (feature-map
    side after the block), ``params`` and, for up blocks, ``skip_from`` (the index of the down block whose
    output is concatenated to its input). The params of all entries add up to the model's."""
    model = unwrap_model(model)
    if not isinstance(model, UNet):
        raise TypeError(f"unet_blocks draws a diffusion_lab UNet, got {type(model).__name__}")
    cfg = model.config
    shapes: dict[str, tuple] = {}
    hooks = []
    named = [(f"down{i}", b) for i, b in enumerate(model.input_blocks)] + [("middle", model.middle_block)] + \
            [(f"up{i}", b) for i, b in enumerate(model.output_blocks)]
    for name, block in named:
        hooks.append(block.register_forward_hook(lambda m, args, out, name=name: shapes.__setitem__(
            name, (args[0].shape[1], out.shape[1], out.shape[-1]))))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        x = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size, device=p.device, dtype=p.dtype)
        y = torch.zeros(1, dtype=torch.long, device=p.device) if cfg.num_classes is not None else None
        model(x, torch.zeros(1, dtype=torch.long, device=p.device), y)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    out = []
    emb_params = count_parameters(model.time_embed)
    text = f"time embedding\nsinusoid({cfg.base_channels}) → MLP → {cfg.time_embed_dim}"
    out.append({"name": "time_embed", "path": "embed", "text": text, "in_ch": cfg.base_channels,
                "out_ch": cfg.time_embed_dim, "size": None, "params": emb_params})
    if model.label_embed is not None:
        out.append({"name": "label_embed", "path": "embed",
                    "text": f"label embedding\n{cfg.num_classes} classes + ∅ (row {cfg.num_classes})",
                    "in_ch": cfg.num_classes + 1, "out_ch": cfg.time_embed_dim, "size": None,
                    "params": count_parameters(model.label_embed)})
    n_down = len(model.input_blocks)
    for name, block in named:
        cin, cout, size = shapes[name]
        entry = {"name": name, "path": "middle" if name == "middle" else name.rstrip("0123456789"),
                 "text": _describe(block), "in_ch": int(cin), "out_ch": int(cout), "size": int(size),
                 "params": count_parameters(block)}
        if entry["path"] == "up":
            entry["skip_from"] = n_down - 1 - int(name[2:])
        out.append(entry)
    out.append({"name": "out", "path": "out", "text": "GroupNorm, SiLU,\nconv 3×3\n(starts at 0)",
                "in_ch": model.out_conv.in_channels, "out_ch": model.out_conv.out_channels, "size": cfg.image_size,
                "params": count_parameters(model.out_norm) + count_parameters(model.out_conv)})
    return out


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e3 else str(n))


def draw_unet(model, ax=None, *, title: str | None = None):
    """Draw the UNet of :func:`unet_blocks` as a "U" on ``ax`` (a new figure when None) and return the axis.

    Boxes are placed by feature-map size (one row per resolution, the bottleneck lowest); each shows its layers,
    channels in→out, map size and parameter count. Dashed arcs are the skip connections (concatenation);
    the embedding box feeds every ResBlock."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    blocks = unet_blocks(model)
    cfg = unwrap_model(model).config
    if ax is None:
        _, ax = plt.subplots(figsize=(12, 5.2))
    body = [b for b in blocks if b["path"] in ("down", "middle", "up", "out")]
    sizes = sorted({b["size"] for b in body}, reverse=True)
    row = {s: -i for i, s in enumerate(sizes)}
    W, H = 0.86, 0.62
    pos = {}
    colors = {"down": "#dbe9f6", "middle": "#fde0c5", "up": "#d9f0d3", "out": "#eeeeee"}
    for i, b in enumerate(body):
        # the up path sits at the row of the size it *receives*, so skips are horizontal
        r = row[b["size"]] if b["path"] != "up" else row[min(sizes, key=lambda s: abs(s - _in_size(b, body, i)))]
        if b["path"] == "out":
            r = row[b["size"]]
        if b["path"] == "middle":
            r = row[sizes[-1]] - 1          # the bottleneck: one row below the smallest maps
        pos[b["name"]] = (i * 1.0, r * 1.25)
    for b in body:
        x, y = pos[b["name"]]
        ax.add_patch(FancyBboxPatch((x - W / 2, y - H / 2), W, H, boxstyle="round,pad=0.02", fc=colors[b["path"]],
                                    ec="0.3", lw=0.8))
        chans = f"{b['in_ch']}→{b['out_ch']} ch, {b['size']}×{b['size']}"
        ax.text(x, y + 0.05, b["text"], ha="center", va="center", fontsize=6.5)
        ax.text(x, y - H / 2 - 0.08, f"{chans}\n{_fmt_params(b['params'])} params", ha="center", va="top",
                fontsize=6, color="0.25")
    names = [b["name"] for b in body]
    for a, b in zip(names, names[1:]):
        (x1, y1), (x2, y2) = pos[a], pos[b]
        ax.annotate("", xy=(x2 - W / 2, y2), xytext=(x1 + W / 2, y1),
                    arrowprops=dict(arrowstyle="->", lw=0.8, color="0.2", shrinkA=0, shrinkB=0))
    downs = [b for b in body if b["path"] == "down"]
    for k, b in enumerate(body):
        if b["path"] != "up":
            continue
        src = downs[b["skip_from"]]["name"]
        (x1, y1), (x2, y2) = pos[src], pos[b["name"]]
        lift = H / 2 + 0.12 + 0.09 * (abs(x2 - x1) % 5)
        ax.plot([x1, x1, x2, x2], [y1 + H / 2, y1 + lift, y1 + lift, y2 + H / 2], ls="--", lw=0.7, color="C3")
    emb = [b for b in blocks if b["path"] == "embed"]
    top = max(y for _, y in pos.values()) + 1.05
    etext = "   +   ".join(b["text"].replace("\n", ": ") + f" ({_fmt_params(b['params'])})" for b in emb)
    ax.text((len(body) - 1) / 2, top, etext + "\n→ SiLU → added inside every ResBlock (code index t, label y or ∅)",
            ha="center", va="center", fontsize=7, bbox=dict(boxstyle="round", fc="#f3e8fb", ec="0.4", lw=0.8))
    ax.text(-0.55, pos[names[0]][1], "$x_t$", ha="right", va="center", fontsize=9)
    ax.text(len(body) - 1 + 0.55, pos[names[-1]][1], r"$\hat\epsilon$", ha="left", va="center", fontsize=9)
    total = count_parameters(unwrap_model(model))
    ax.set_xlim(-1.0, len(body))
    ax.set_ylim(min(y for _, y in pos.values()) - 1.0, top + 0.45)
    ax.set_axis_off()
    ax.set_title(title or f"UNet: base {cfg.base_channels} channels, mults {tuple(cfg.channel_mults)}, "
                          f"{cfg.num_res_blocks} ResBlock(s) per level, {total:,} parameters", fontsize=9)
    return ax


def _in_size(b, body, i):
    """Feature-map size a block receives (its predecessor's output size)."""
    return body[i - 1]["size"] if i > 0 else b["size"]


def image_grid(ax, x, nrow: int | None = None, *, title: str | None = None, pad: int = 1):
    """Show a batch of images (N, 1, H, W) in [-1, 1] as one grey grid with ``nrow`` images per row."""
    x = torch.as_tensor(x).detach().float().cpu().clamp(-1, 1)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    n, _, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), 1.0, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x[i, 0].numpy()
    ax.imshow(canvas, cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def save_grid(samples, path, labels=None):
    """Write a PNG grid of images (N, C, H, W) in [-1, 1] (10 columns when ``labels`` are given, one digit per
    column), or a scatter plot of points (N, 2), to ``path``; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = samples.detach().cpu().float()
    if x.dim() == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2)
        ax.set_aspect("equal")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path
    if x.dim() != 4:
        raise ValueError(f"save_grid takes images (N, C, H, W) or points (N, 2), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    cols = 10 if labels is not None and n >= 10 else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pad = 1
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), -1.0, dtype=np.float32)
    imgs = x.clamp(-1, 1).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = imgs[i]
    grid = (grid + 1) / 2
    scale = max(1, 64 // h)
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    if c == 1:
        plt.imsave(path, grid[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        plt.imsave(path, grid.clip(0, 1))
    return path
