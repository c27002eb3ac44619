"""Judging samples of 8×8 digits (book chapters 6–8): a clean classifier, and numbers computed with it.

* :class:`DigitsJudge` — a small CNN trained on the *clean* digits train split (``data.load_digits``), never on
  noisy inputs and never on samples. :func:`get_judge` gives one per process (loaded from shipped weights when
  they exist, else trained deterministically in well under a minute on a CPU).
* :func:`conditional_accuracy` — how often the judge reads a conditional sample as the label it was asked for.
* :func:`frechet_distance` — the Fréchet distance between Gaussians fitted to two feature sets, the FID recipe
  with the judge's penultimate layer in place of Inception's; :func:`real_frechet_baseline` is the same number
  for real train vs real test digits, the floor a perfect sampler reaches at that sample size.
* :func:`diversity` — mean pairwise feature distance relative to real data (1 ≈ as varied as real digits,
  0 = one image repeated), per-class mode coverage and the entropy of the predicted class histogram.
* :func:`paired_bootstrap` — the three numbers above for several sample sets drawn with the same labels and start
  noise, with paired-bootstrap standard errors: the margins the book's asserted comparisons use.

Inputs are image batches (N, 1, 8, 8) in [-1, 1]; samples are clamped to [-1, 1] before judging, as saving
them as images would.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from . import pretrained
from .data import load_digits
from .models import freeze
from .models.judge import (IMAGE_SHAPE, JUDGE_ARCH, NUM_CLASSES, DigitsJudge, judge_from_state_dict, load_judge,
                           save_judge)

__all__ = [
    "DigitsJudge", "train_judge", "judge_from_state_dict", "load_judge", "save_judge", "get_judge", "report_judge",
    "conditional_accuracy", "frechet_distance", "frechet_distance_gaussians", "gaussian_stats",
    "frechet_distance_to_data", "real_frechet_baseline", "pairwise_distance", "class_histogram", "mode_coverage",
    "diversity", "paired_bootstrap", "PairedScores", "JUDGE_WEIGHTS_NAME", "JUDGE_ARCH",
]

JUDGE_WEIGHTS_NAME = "digits-judge.safetensors"   # the shipped file (pretrained.load("digits-judge"))
JUDGE_NAME = "digits-judge"                       # its name in diffusion_lab/pretrained/MANIFEST.json


# ----------------------------------------------------------------------------- the judge (network in models.judge)
def _random_shift(x, generator, max_shift=1):
    """Shift each image by up to ``max_shift`` pixels in each direction (padding with the background −1)."""
    n = x.shape[0]
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    out = torch.empty_like(x)
    for sx in range(2 * max_shift + 1):
        for sy in range(2 * max_shift + 1):
            m = (dx == sx) & (dy == sy)
            if m.any():
                out[m] = pad[m, :, sy:sy + 8, sx:sx + 8]
    return out


def train_judge(*, epochs: int = 25, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, augment: bool = True,
                verbose: bool = False) -> DigitsJudge:
    """Train a :class:`DigitsJudge` on the clean digits train split, deterministically for a given ``seed``.

    Adam with a cosine-decayed learning rate; with ``augment`` each batch is shifted by up to one pixel, which
    makes the judge less brittle on generated digits. Trains on one CPU thread (deterministic, and
    fastest on a busy machine): about 10 s; test accuracy ≈ 99 % (≥ 97 % is tested).
    """
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic whatever the machine, and far faster than 2 threads on a busy CPU
    try:
        return _train_judge(epochs, batch_size, lr, seed, augment, verbose)
    finally:
        torch.set_num_threads(n_threads)


def _train_judge(epochs, batch_size, lr, seed, augment, verbose):
    x, y = load_digits("train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = DigitsJudge()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(judge.parameters(), lr=lr)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    judge.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            if augment:
                xb = _random_shift(xb, gen)
            loss = F.cross_entropy(judge(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if verbose and (epoch + 1) % 10 == 0:
            print(f"judge epoch {epoch + 1}/{epochs}: train loss {total / n:.4f}")
    return freeze(judge)


_JUDGE_CACHE: dict = {}


def get_judge(path=None, *, verbose: bool = False) -> DigitsJudge:
    """The judge for this process, built once and cached.

    Loaded from ``path`` if given, else the shipped ``digits-judge`` through :func:`diffusion_lab.pretrained.load`
    (which checks the weights' sha256 against the manifest) when the package has it (set
    ``DIFFUSION_LAB_RETRAIN_JUDGE=1`` to ignore it), else trained by :func:`train_judge`.
    """
    key = str(path) if path is not None else None
    if key in _JUDGE_CACHE:
        return _JUDGE_CACHE[key]
    if path is not None:
        judge = load_judge(path)
    elif JUDGE_NAME in pretrained.list_pretrained() and os.environ.get("DIFFUSION_LAB_RETRAIN_JUDGE", "") in ("", "0"):
        judge, _ = pretrained.load(JUDGE_NAME)
    else:
        judge = train_judge(verbose=verbose)
    if verbose:
        report_judge(judge)
    _JUDGE_CACHE[key] = judge
    return judge


def report_judge(judge: DigitsJudge | None = None) -> float:
    """Print and return the judge's accuracy on the digits test split."""
    judge = judge or get_judge()
    acc = judge.accuracy(*load_digits("test"))
    print(f"digits judge: test accuracy {100 * acc:.2f}% on {len(load_digits('test')[1])} held-out images")
    return acc


# ----------------------------------------------------------------------------- accuracy
def conditional_accuracy(samples: torch.Tensor, labels, judge: DigitsJudge | None = None) -> float:
    """Fraction of conditional samples that the judge reads as the label they were generated for.

    On real test digits this is exactly the judge's test accuracy, so the judge's own error rate is the
    ceiling's gap: a sampler cannot be shown to do better than the judge sees.
    """
    judge = judge or get_judge()
    return judge.accuracy(samples, labels)


# ----------------------------------------------------------------------------- Fréchet distance
def _as_f64(a, name):
    a = torch.as_tensor(a).detach().to("cpu", torch.float64)
    if a.dim() != 2:
        raise ValueError(f"{name} must be a 2-D array of features (N, D), got shape {tuple(a.shape)}")
    if a.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows to estimate a covariance, got {a.shape[0]}")
    return a


def gaussian_stats(feats) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = _as_f64(feats, "feats")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def _sqrtm_psd(s):
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance_gaussians(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein²) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂):

        d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})

    In float64, with no complex square roots: the symmetric PSD square roots Σ^{1/2} come from eigh (round-off
    negative eigenvalues clamped to 0), and Tr((Σ₁Σ₂)^{1/2}) = Tr((Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}) is the sum of
    the singular values of Σ₁^{1/2} Σ₂^{1/2}. A round-off negative result is clamped to 0.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).reshape(-1) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"shapes do not match: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
                         f"sigma {tuple(s1.shape)}/{tuple(s2.shape)}")
    # Tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2} = Σ singular values of Σ₁^{1/2} Σ₂^{1/2} (its nuclear norm): the same number
    # without squaring the condition number, so a set scored against itself gives 0 to round-off.
    tr_sqrt = torch.linalg.svdvals(_sqrtm_psd(s1) @ _sqrtm_psd(s2)).sum()
    d2 = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return max(float(d2), 0.0)


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D) — the FID formula.

    The estimate is biased upward at finite N (of order D²/N), so compare numbers computed with similar
    sample sizes, and against :func:`real_frechet_baseline`.
    """
    fa, fb = _as_f64(feats_a, "feats_a"), _as_f64(feats_b, "feats_b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature dimensions differ: {fa.shape[1]} vs {fb.shape[1]}")
    return frechet_distance_gaussians(*gaussian_stats(fa), *gaussian_stats(fb))


_REAL_FEATS: dict = {}


def _real_features(judge, split):
    key = (id(judge), split)
    if key not in _REAL_FEATS:
        x, _ = load_digits(split)
        _REAL_FEATS[key] = judge.features(x)
    return _REAL_FEATS[key]


def frechet_distance_to_data(samples: torch.Tensor, judge: DigitsJudge | None = None, split: str = "train") -> float:
    """Fréchet distance between samples and a real digits split (default: train, 1437 images) in the judge's
    feature space. Lower is better; read it against :func:`real_frechet_baseline` (real test vs real train)."""
    judge = judge or get_judge()
    return frechet_distance(judge.features(samples), _real_features(judge, split))


def real_frechet_baseline(judge: DigitsJudge | None = None) -> float:
    """Fréchet distance between the real test split (360 images) and the real train split: what a perfect
    sampler would score with 360 samples. Samples scoring near it are indistinguishable to the judge's features."""
    judge = judge or get_judge()
    return frechet_distance(_real_features(judge, "test"), _real_features(judge, "train"))


# ----------------------------------------------------------------------------- diversity
def pairwise_distance(feats, max_items: int = 2000, seed: int = 0) -> float:
    """Mean Euclidean distance between distinct pairs of rows of ``feats`` (N, D); above ``max_items`` rows a
    fixed random subset is used. 0 for a set of identical items."""
    f = torch.as_tensor(feats).detach().to("cpu", torch.float64)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature rows (N, D), got shape {tuple(f.shape)}")
    if f.shape[0] > max_items:
        f = f[torch.randperm(f.shape[0], generator=torch.Generator().manual_seed(seed))[:max_items]]
    n = f.shape[0]
    d = torch.cdist(f, f)
    return float(d.sum() / (n * (n - 1)))


def class_histogram(samples: torch.Tensor, judge: DigitsJudge | None = None) -> torch.Tensor:
    """Fraction of samples the judge assigns to each of the 10 classes (sums to 1)."""
    judge = judge or get_judge()
    pred = judge.predict(samples)
    return torch.bincount(pred, minlength=NUM_CLASSES).double() / max(len(pred), 1)


def mode_coverage(samples: torch.Tensor, judge: DigitsJudge | None = None, min_share: float | None = None) -> float:
    """Fraction of the 10 classes that receive at least ``min_share`` of the samples (default: a quarter of
    the uniform share, 2.5 %). 1.0 when every digit appears; 0.1 for a collapse onto one digit."""
    min_share = 0.25 / NUM_CLASSES if min_share is None else float(min_share)
    hist = class_histogram(samples, judge)
    return float((hist >= min_share).double().mean())


def diversity(samples: torch.Tensor, judge: DigitsJudge | None = None, labels=None, reference_split: str = "train",
              min_share: float | None = None) -> dict:
    """Diversity of a batch of samples, judged against real digits. Returns a dict:

    ``pairwise_ratio``  mean pairwise feature distance of the samples divided by the same for the real
                        ``reference_split``: ≈1 as varied as real data, →0 for a collapse (one image repeated).
                        With ``labels`` (conditional samples) it is computed within each class against the
                        real images of that class and averaged over the classes present: a guidance weight
                        that trades variety for fidelity shows up here.
    ``mode_coverage``   fraction of the 10 classes holding at least ``min_share`` of the samples
                        (see :func:`mode_coverage`).
    ``class_entropy``   entropy of the predicted class histogram divided by log 10 (1 = all digits equally often).
    ``class_histogram`` the histogram itself (list of 10 fractions).
    """
    judge = judge or get_judge()
    feats = judge.features(samples)
    real_x, real_y = load_digits(reference_split)
    real_feats = _real_features(judge, reference_split)
    if labels is None:
        ratio = pairwise_distance(feats) / pairwise_distance(real_feats)
    else:
        labels = torch.as_tensor(labels).long().reshape(-1).cpu()
        if labels.shape[0] != feats.shape[0]:
            raise ValueError(f"samples has {feats.shape[0]} images but labels has {labels.shape[0]}")
        ratios = []
        for k in labels.unique().tolist():
            fk = feats[labels == k]
            if fk.shape[0] >= 2:
                ratios.append(pairwise_distance(fk) / pairwise_distance(real_feats[real_y == k]))
        if not ratios:
            raise ValueError("need at least 2 samples of some class to measure within-class diversity")
        ratio = sum(ratios) / len(ratios)
    hist = class_histogram(samples, judge)
    nz = hist[hist > 0]
    entropy = max(0.0, float(-(nz * nz.log()).sum() / math.log(NUM_CLASSES)))
    min_share = 0.25 / NUM_CLASSES if min_share is None else float(min_share)
    return {"pairwise_ratio": float(ratio), "mode_coverage": float((hist >= min_share).double().mean()),
            "class_entropy": entropy, "class_histogram": [round(float(h), 6) for h in hist]}


# ----------------------------------------------------------------------------- margins for comparisons
class PairedScores:
    """Accuracy, Fréchet distance and within-class diversity of several sample sets drawn with the *same* labels and
    start noise (item i of every set asked for the same digit from the same x_T), with paired-bootstrap spreads, so
    that a comparison in the prose ("lower at s = 2 than at s = 0") can be asserted with a margin. Made by
    :func:`paired_bootstrap`.

    ``scores[key]`` is ``{"acc", "fd", "div"}`` of one set on all its items — the numbers of
    :func:`conditional_accuracy`, :func:`frechet_distance_to_data` and ``diversity(..., labels)["pairwise_ratio"]``.
    ``se(stat, a)`` is the bootstrap standard deviation of set ``a``'s statistic, ``se(stat, a, b)`` that of the
    paired difference a − b (the same resampled items in both), ``diff(stat, a, b)`` the difference itself and
    ``z(stat, a, b)`` their ratio; ``draws(stat, a)`` the resampled values themselves.
    """

    STATS = ("acc", "fd", "div")

    def __init__(self, point: dict, boot: dict, keys: list, n_boot: int):
        self._point, self._boot, self.keys, self.n_boot = point, boot, keys, n_boot

    def __getitem__(self, key) -> dict:
        return {s: self._point[s][key] for s in self.STATS}

    def _column(self, stat, key):
        if stat not in self.STATS:
            raise ValueError(f"stat must be one of {self.STATS}, got {stat!r}")
        if key not in self.keys:
            raise KeyError(f"no sample set {key!r}; the sets are {self.keys}")
        return self._boot[stat][:, self.keys.index(key)]

    def draws(self, stat: str, key) -> torch.Tensor:
        """The ``n_boot`` resampled values of set ``key``'s statistic (paired across sets: draw i of every set
        used the same items), for the spread of a derived quantity such as a ratio of differences."""
        return self._column(stat, key).clone()

    def se(self, stat: str, a, b=None) -> float:
        col = self._column(stat, a) if b is None else self._column(stat, a) - self._column(stat, b)
        return float(col.std())

    def diff(self, stat: str, a, b) -> float:
        self._column(stat, a), self._column(stat, b)
        return self._point[stat][a] - self._point[stat][b]

    def z(self, stat: str, a, b) -> float:
        se = self.se(stat, a, b)
        d = self.diff(stat, a, b)
        return math.copysign(math.inf, d) if se == 0 and d != 0 else (d / se if se else 0.0)


def paired_bootstrap(samples: dict, labels, judge: DigitsJudge | None = None, *, n_boot: int = 200, seed: int = 0,
                     split: str = "train") -> PairedScores:
    """Score the sample sets ``{key: images (N, 1, 8, 8)}``, all asked for the same ``labels`` (N,), and resample
    their items jointly ``n_boot`` times — within each label, so every resample keeps the design's count per
    digit — to get the spread of each statistic and of each paired difference (:class:`PairedScores`).

    The bootstrap measures the sampling noise of N samples for fixed sets, not the variation between model
    trainings; it is the margin a comparison at this sample size must clear. (Resampling with replacement repeats
    items, which biases a resampled diversity down a little and a resampled Fréchet distance up; the spreads, which
    is what the margins use, are affected far less.)
    """
    if not isinstance(samples, dict) or not samples:
        raise ValueError("samples must be a non-empty dict {name: images (N, 1, 8, 8)}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise ValueError(f"n_boot must be an int >= 2, got {n_boot!r}")
    judge = judge or get_judge()
    labels = torch.as_tensor(labels).long().reshape(-1).cpu()
    keys = list(samples)
    for k in keys:
        if samples[k].shape[0] != labels.shape[0]:
            raise ValueError(f"set {k!r} has {samples[k].shape[0]} images but labels has {labels.shape[0]}")
    classes = labels.unique().tolist()
    by_class = [torch.nonzero(labels == c)[:, 0] for c in classes]
    if any(len(ix) < 2 for ix in by_class):
        raise ValueError("every requested label needs at least 2 samples to measure within-class diversity")
    real_feats = _real_features(judge, split)
    real_y = load_digits(split)[1]
    mu_r, cov_r = gaussian_stats(real_feats)
    real_pd = [pairwise_distance(real_feats[real_y == c]) for c in classes]

    feats = {k: judge.features(samples[k]).to(torch.float64) for k in keys}
    correct = {k: (judge.predict(samples[k]).cpu() == labels).double() for k in keys}
    dists = {k: [torch.cdist(feats[k][ix], feats[k][ix]) for ix in by_class] for k in keys}

    def stats(k, pick):
        # pick: per class, positions (into that class's items) of the resampled items
        idx = torch.cat([ix[p] for ix, p in zip(by_class, pick)])
        fd = frechet_distance_gaussians(*gaussian_stats(feats[k][idx]), mu_r, cov_r)
        div = sum(d[p][:, p].sum().item() / (len(p) * (len(p) - 1)) / r
                  for d, p, r in zip(dists[k], pick, real_pd)) / len(classes)
        return correct[k][idx].mean().item(), fd, div

    everything = [torch.arange(len(ix)) for ix in by_class]
    point = {s: {} for s in PairedScores.STATS}
    for k in keys:
        for s, v in zip(PairedScores.STATS, stats(k, everything)):
            point[s][k] = v
    g = torch.Generator().manual_seed(seed)
    boot = {s: torch.empty(n_boot, len(keys), dtype=torch.float64) for s in PairedScores.STATS}
    for b in range(n_boot):
        pick = [torch.randint(0, len(ix), (len(ix),), generator=g) for ix in by_class]
        for j, k in enumerate(keys):
            for s, v in zip(PairedScores.STATS, stats(k, pick)):
                boot[s][b, j] = v
    return PairedScores(point, boot, keys, n_boot)


def main(argv=None):
    """``python -m diffusion_lab.metrics [--save PATH] [--epochs N] [--seed S]``: train the judge, print its test
    accuracy and the real train-vs-test Fréchet distance, optionally write its weights (safetensors)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m diffusion_lab.metrics", description=main.__doc__)
    ap.add_argument("--save", help="write the judge's weights here (e.g. diffusion_lab/pretrained/" + JUDGE_WEIGHTS_NAME + ")")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    judge = train_judge(epochs=args.epochs, seed=args.seed, verbose=True)
    report_judge(judge)
    print(f"real train-vs-test Fréchet distance: {real_frechet_baseline(judge):.3f}")
    if args.save:
        print(f"wrote {save_judge(judge, args.save)}")


if __name__ == "__main__":
    main()
