"""diffusion_lab.diagrams: figures with the expected parts, clear errors on bad input."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from diffusion_lab import diagrams


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_model_families_draws_one_row_per_family():
    fig = diagrams.model_families()
    try:
        assert isinstance(fig, Figure)
        texts = " ".join(_texts(fig))
        for word in ("generator", "discriminator", "encoder", "decoder", "invertible", "forward", "reverse"):
            assert word in texts, word
    finally:
        plt.close(fig)
    fig = diagrams.model_families(["Diffusion", "GAN"])
    try:
        texts = " ".join(_texts(fig))
        assert "generator" in texts and "encoder" not in texts
    finally:
        plt.close(fig)


def test_markov_chain_default_and_with_pictures():
    fig = diagrams.markov_chain()
    try:
        texts = _texts(fig)
        assert "$x_0$" in texts and "$x_T$" in texts and any("learned" in t for t in texts)
        assert len(fig.axes) == 1
    finally:
        plt.close(fig)
    rng = np.random.default_rng(0)
    pics = [rng.standard_normal((100, 2)), rng.uniform(-1, 1, (8, 8)), None, rng.uniform(-1, 1, (3, 8, 8))]
    fig = diagrams.markov_chain(pics, labels=["$x_0$", "$x_1$", "…", "$x_T$"])
    try:
        assert len(fig.axes[0].child_axes) == 3          # one inset per picture, none for the gap
    finally:
        plt.close(fig)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="unknown famil"):
        diagrams.model_families(["GAN", "Transformer"])
    with pytest.raises(ValueError, match="at least one"):
        diagrams.model_families([])
    with pytest.raises(ValueError, match="repeat"):
        diagrams.model_families(["GAN", "GAN"])
    with pytest.raises(ValueError, match="one per node"):
        diagrams.markov_chain([None, None], labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="at least two"):
        diagrams.markov_chain(labels=["a"])
    plt.close("all")
