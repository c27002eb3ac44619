"""The digits judge: a small CNN classifier for 8×8 digits (book chapters 6–8), and its weights file.

The network lives here, with the other networks; :mod:`diffusion_lab.metrics` trains it (``train_judge``) and
judges samples with it, and :mod:`diffusion_lab.pretrained` loads the shipped weights (sha256-checked).
``save_judge`` / ``load_judge`` write and read safetensors with the architecture in the metadata; a file made for
another architecture raises :class:`~diffusion_lab.errors.CorruptFileError` (a ValueError) naming the file.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..data import load_digits
from ..errors import CorruptFileError
from . import freeze

__all__ = ["DigitsJudge", "judge_from_state_dict", "load_judge", "save_judge", "check_images", "JUDGE_ARCH",
           "NUM_CLASSES", "IMAGE_SHAPE"]

JUDGE_ARCH = "digits-judge-v1"
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)


class DigitsJudge(nn.Module):
    """A small CNN classifier for 8×8 digits in [-1, 1]: three 3×3 conv layers, two 2×2 max-pools, a 64-unit
    hidden layer (the *features* used by the Fréchet distance and the diversity measures), then 10 logits.

    ``forward(x)`` → logits; :meth:`features` → penultimate activations (N, 64); :meth:`predict` → labels;
    :meth:`accuracy` → fraction correct. All evaluation methods run in eval mode without gradients, in batches,
    and clamp the input to [-1, 1].
    """

    feature_dim = 64

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # 4×4
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # 2×2
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(64 * 2 * 2, self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, NUM_CLASSES)
        self.num_classes = NUM_CLASSES

    def forward(self, x):
        return self.head(self.hidden(self.conv(x)))

    # -- evaluation helpers -------------------------------------------------------------------
    def _batches(self, x, fn, batch_size=1024):
        x = check_images(x)
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        try:
            with torch.no_grad():
                outs = [fn(x[i:i + batch_size].to(dev, torch.float32).clamp(-1, 1)).cpu()
                        for i in range(0, x.shape[0], batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0)

    def logits(self, x) -> torch.Tensor:
        """Logits (N, 10) on the CPU."""
        return self._batches(x, self.forward)

    def features(self, x) -> torch.Tensor:
        """Penultimate-layer activations (N, 64) on the CPU: the judge's feature space."""
        return self._batches(x, lambda b: self.hidden(self.conv(b)))

    def predict(self, x) -> torch.Tensor:
        """Predicted labels (N,)."""
        return self.logits(x).argmax(1)

    def accuracy(self, x, y) -> float:
        """Fraction of ``x`` classified as ``y``."""
        y = torch.as_tensor(y).long().reshape(-1).cpu()
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} images but y has {y.shape[0]} labels")
        return float((self.predict(x) == y).double().mean()) if len(y) else float("nan")


def check_images(x):
    """Images (N, 1, 8, 8) (or (N, 8, 8)) as a detached floating-point tensor, or a clear error."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor of images (N, 1, 8, 8), got {type(x).__name__}")
    if x.dim() == 3 and tuple(x.shape[1:]) == (8, 8):
        x = x.unsqueeze(1)
    if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"the digits judge takes images of shape (N, 1, 8, 8) in [-1, 1], got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"images must be floating point in [-1, 1], got dtype {x.dtype}")
    return x.detach()


def judge_from_state_dict(state_dict) -> DigitsJudge:
    """A :class:`DigitsJudge` (eval mode, frozen) holding the given weights."""
    judge = DigitsJudge()
    judge.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})
    return freeze(judge)


def save_judge(judge: DigitsJudge, path) -> Path:
    """Write the judge's weights as safetensors, with its architecture and test accuracy in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    acc = judge.accuracy(*load_digits("test"))
    sd = {k: v.detach().cpu().contiguous() for k, v in judge.state_dict().items()}
    save_file(sd, str(path), metadata={"arch": JUDGE_ARCH, "test_accuracy": f"{acc:.6f}",
                                       "data": "sklearn digits, diffusion_lab.data.load_digits('train')"})
    return path


def load_judge(path) -> DigitsJudge:
    """Load a judge written by :func:`save_judge`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        arch = (f.metadata() or {}).get("arch", JUDGE_ARCH)
    if arch != JUDGE_ARCH:
        raise CorruptFileError(f"{path} holds a {arch!r} judge, this code builds {JUDGE_ARCH!r}", path=path)
    return judge_from_state_dict(load_file(str(path)))
