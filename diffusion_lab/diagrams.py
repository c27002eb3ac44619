"""Diagrams drawn with matplotlib (the seed's figures are missing from its source): the four families of generative
models (book chapter 1) and the forward / reverse Markov chain x_0 ⇄ x_1 ⇄ … ⇄ x_T (chapters 1–3).

Both functions return a ``matplotlib.figure.Figure`` and leave showing or saving it to the caller.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["model_families", "markov_chain", "FAMILIES"]

FAMILIES = ("GAN", "VAE", "Flow", "Diffusion")

_COLORS = {"data": "#dbe9f6", "latent": "#fde2c8", "net": "#d9f0d3", "judge": "#f4cccc", "plain": "#eeeeee"}


def _box(ax, x, y, text, kind="plain", w=1.5, h=0.62, fontsize=9):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04,rounding_size=0.12",
                                fc=_COLORS[kind], ec="#555555", lw=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return (x, y, w, h)


def _arrow(ax, a, b, label=None, *, rad=0.0, color="#333333", label_offset=0.22, fontsize=8, style="-|>"):
    """Arrow from box ``a`` to box ``b`` (boxes as returned by :func:`_box`), leaving from their edges."""
    (xa, ya, wa, ha), (xb, yb, wb, hb) = a, b
    if abs(ya - yb) < 1e-9:                          # horizontal neighbours
        sgn = 1 if xb > xa else -1
        start, end = (xa + sgn * wa / 2, ya), (xb - sgn * wb / 2, yb)
    else:
        sgn = 1 if yb > ya else -1
        start, end = (xa, ya + sgn * ha / 2), (xb, yb - sgn * hb / 2)
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle=style, color=color, lw=1.2, shrinkA=2, shrinkB=2,
                                connectionstyle=f"arc3,rad={rad}"))
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my + label_offset, label, ha="center", va="center", fontsize=fontsize, color=color)


def model_families(families: Sequence[str] = FAMILIES, *, figsize=(9.5, None)):
    """The four families of generative models as block diagrams, one row each (chapter 1, section 1.1).

    GAN: z → generator → x̃ → discriminator ← x (real or fake?); VAE: x → encoder → z → decoder → x̂;
    flow: x ⇄ z through one invertible f; diffusion: x_0 → … → x_T by fixed noising, back by learned denoising.
    ``families`` picks and orders the rows (any of ``FAMILIES``).
    """
    import matplotlib.pyplot as plt

    families = list(families)
    if not families:
        raise ValueError("families must name at least one of " + ", ".join(FAMILIES))
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; choose from {list(FAMILIES)}")
    if len(set(families)) != len(families):
        raise ValueError("families must not repeat")
    n = len(families)
    w, h = figsize
    fig, ax = plt.subplots(figsize=(w, h if h is not None else 1.75 * n + 0.2))
    ax.set_xlim(0, 11.2)
    ax.set_ylim(-0.2, 1.75 * n)
    ax.axis("off")
    for row, fam in enumerate(families):
        y = 1.75 * (n - row) - 0.85
        # English titles only: matplotlib's default fonts have no CJK glyphs (the book's text carries the Chinese terms)
        ax.text(0.05, y + 0.55, {"GAN": "GAN: generative adversarial network", "VAE": "VAE: variational auto-encoder",
                                 "Flow": "Flow: normalizing flow", "Diffusion": "Diffusion model"}[fam],
                fontsize=10, fontweight="bold", va="center")
        if fam == "GAN":
            z = _box(ax, 1.0, y, r"$z \sim \mathcal{N}(0, I)$", "latent")
            g = _box(ax, 3.1, y, "generator\n$G(z)$", "net")
            xf = _box(ax, 5.2, y, r"$\tilde x = G(z)$", "data")
            d = _box(ax, 7.5, y, "discriminator\n$D(x)$", "judge", w=1.7)
            out = _box(ax, 9.9, y, "real or fake?\n$D \\in (0, 1)$", "plain", w=1.7)
            _arrow(ax, z, g)
            _arrow(ax, g, xf)
            _arrow(ax, xf, d)
            _arrow(ax, d, out)
            ax.text(7.5, y - 0.62, r"also fed real $x \sim p_\mathrm{data}$", ha="center", fontsize=8, color="#1f4e79")
        elif fam == "VAE":
            x = _box(ax, 1.0, y, "$x$", "data", w=0.9)
            e = _box(ax, 3.0, y, "encoder\n$q_\\phi(z \\mid x)$", "net", w=1.7)
            z = _box(ax, 5.4, y, r"$z = \mu + \sigma \odot \epsilon$", "latent", w=2.0)
            dd = _box(ax, 7.8, y, "decoder\n$p_\\theta(x \\mid z)$", "net", w=1.7)
            xh = _box(ax, 9.9, y, r"$\hat x$", "data", w=0.9)
            _arrow(ax, x, e)
            _arrow(ax, e, z, r"$\mu, \sigma$")
            _arrow(ax, z, dd)
            _arrow(ax, dd, xh)
            ax.text(5.4, y - 0.55, r"KL to $\mathcal{N}(0, I)$ keeps $z$ samplable", ha="center", fontsize=8, color="#7f4f00")
        elif fam == "Flow":
            x = _box(ax, 1.0, y, "$x$", "data", w=0.9)
            f = _box(ax, 5.4, y, "invertible $f$ (couplings)\n" + r"$\log p(x) = \log p(z) + \log|\det \partial f / \partial x|$",
                     "net", w=4.6, fontsize=8.5)
            z = _box(ax, 9.9, y, r"$z \sim \mathcal{N}(0, I)$", "latent", w=1.7)
            _arrow(ax, x, f, "$f$", rad=0.0, label_offset=0.2)
            _arrow(ax, f, z, "$f$", label_offset=0.2)
            ax.annotate("", xy=(1.0, y - 0.33), xytext=(9.9, y - 0.33),
                        arrowprops=dict(arrowstyle="-|>", color="#7f4f00", lw=1.0, connectionstyle="arc3,rad=-0.12"))
            ax.text(5.4, y - 0.68, r"sampling: $x = f^{-1}(z)$ (same dimension)", ha="center", fontsize=8, color="#7f4f00")
        else:
            xs = [1.0, 3.1, 5.2, 7.6, 9.9]
            names = ["$x_0$", "$x_1$", r"$\cdots$", "$x_{T-1}$", r"$x_T \sim \mathcal{N}(0, I)$"]
            kinds = ["data", "plain", "plain", "plain", "latent"]
            boxes = [_box(ax, xx, y, nm, k, w=1.1 if i < 4 else 1.7) for i, (xx, nm, k) in enumerate(zip(xs, names, kinds))]
            for a, b in zip(boxes, boxes[1:]):
                _arrow(ax, a, b, None, rad=-0.35, color="#1f4e79")
                _arrow(ax, b, a, None, rad=-0.35, color="#7f4f00")
            ax.text(5.2, y + 0.58, r"forward $q(x_t \mid x_{t-1})$: fixed, adds noise", ha="center", fontsize=8, color="#1f4e79")
            ax.text(5.2, y - 0.6, r"reverse $p_\theta(x_{t-1} \mid x_t)$: learned, removes noise", ha="center", fontsize=8,
                    color="#7f4f00")
    fig.tight_layout()
    return fig


def markov_chain(images: Sequence | None = None, labels: Sequence[str] | None = None, *, figsize=None,
                 forward_label: str = r"$q(x_t \mid x_{t-1})$", reverse_label: str = r"$p_\theta(x_{t-1} \mid x_t)$",
                 cmap: str = "gray", vmin: float | None = -1.0, vmax: float | None = 1.0, scatter_lim: float = 3.0):
    """The diffusion Markov chain x_0 ⇄ x_1 ⇄ … ⇄ x_T: forward arrows (fixed noising q) above, reverse arrows
    (learned denoising p_θ) below.

    ``labels``: the node names (default ``x_0, x_1, …, x_{t-1}, x_t, …, x_T``; ``"…"`` draws a gap).
    ``images``: optional, one entry per node drawn inside it — an image array (H, W) / (C, H, W) / (H, W, C)
    in [vmin, vmax], a 2-D point cloud of shape (N, 2) (drawn as a scatter in [−scatter_lim, scatter_lim]²), or
    ``None`` for a node without a picture.
    """
    import matplotlib.pyplot as plt

    if labels is None:
        labels = ["$x_0$", "$x_1$", "…", "$x_{t-1}$", "$x_t$", "…", "$x_T$"]
    labels = [str(s) for s in labels]
    if len(labels) < 2:
        raise ValueError("markov_chain needs at least two nodes")
    if images is not None:
        images = list(images)
        if len(images) != len(labels):
            raise ValueError(f"got {len(images)} images for {len(labels)} nodes; give one per node (None for none)")
    n = len(labels)
    pics = images is not None and any(im is not None for im in images)
    if figsize is None:
        figsize = (1.35 * n + 0.6, 2.9 if pics else 1.9)
    fig = plt.figure(figsize=figsize)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_ylim(-1.25, 1.45 if pics else 0.9)
    ax.set_aspect("equal")
    ax.axis("off")
    size = 0.62
    gaps = [lab.strip() in ("…", "...", r"$\cdots$", r"$\dots$") for lab in labels]
    for i, lab in enumerate(labels):
        if gaps[i]:
            ax.text(i, 0, "…", ha="center", va="center", fontsize=16)
            continue
        ax.add_patch(plt.Circle((i, 0), 0.3, fc=_COLORS["data"] if i == 0 else
                                (_COLORS["latent"] if i == n - 1 else _COLORS["plain"]), ec="#555555"))
        ax.text(i, 0, lab, ha="center", va="center", fontsize=11)
        if pics and images[i] is not None:
            inset = ax.inset_axes([i - size / 2, 0.45, size, size], transform=ax.transData)
            a = np.asarray(images[i].detach().cpu() if hasattr(images[i], "detach") else images[i], dtype=np.float32)
            if a.ndim == 2 and a.shape[1] == 2 and a.shape[0] > 2 and a.shape[0] != a.shape[1]:
                inset.scatter(a[:, 0], a[:, 1], s=0.5, alpha=0.4)
                inset.set(xlim=(-scatter_lim, scatter_lim), ylim=(-scatter_lim, scatter_lim), aspect="equal")
            else:
                if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
                    a = np.moveaxis(a, 0, -1)
                if a.ndim == 3 and a.shape[-1] == 1:
                    a = a[..., 0]
                if a.ndim == 3:
                    a = np.clip((a - vmin) / (vmax - vmin), 0, 1) if vmin is not None and vmax is not None else a
                    inset.imshow(a)
                elif a.ndim == 2:
                    inset.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax)
                else:
                    raise ValueError(f"image {i}: expected (H, W), (C, H, W), (H, W, C) or points (N, 2), got {a.shape}")
            inset.set_xticks([]), inset.set_yticks([])
    for i in range(n - 1):
        ax.annotate("", xy=(i + 1 - 0.32, 0.08), xytext=(i + 0.32, 0.08),
                    arrowprops=dict(arrowstyle="-|>", color="#1f4e79", lw=1.3, connectionstyle="arc3,rad=-0.45"))
        ax.annotate("", xy=(i + 0.32, -0.08), xytext=(i + 1 - 0.32, -0.08),
                    arrowprops=dict(arrowstyle="-|>", color="#7f4f00", lw=1.3, connectionstyle="arc3,rad=-0.45"))
    mid = (n - 1) / 2
    j = next((k for k in range(n - 1) if labels[k] == "$x_{t-1}$" and labels[k + 1] == "$x_t$"), None)
    xm = j + 0.5 if j is not None else mid
    ax.text(xm, -0.62, reverse_label + ": learned, removes noise", ha="center", fontsize=9, color="#7f4f00")
    ax.text(xm, 0.5 if not pics else 1.25 + 0.05, forward_label + ": fixed, adds noise", ha="center", fontsize=9,
            color="#1f4e79")
    ax.text(-0.55, -1.05, "data", fontsize=8, color="#555555")
    ax.text(n - 1.05, -1.05, r"noise $\mathcal{N}(0, I)$", fontsize=8, color="#555555")
    return fig
