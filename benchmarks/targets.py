"""Quality targets of the shipped digits models, measured on the models as shipped (``pretrained.load``).

    python benchmarks/targets.py                       # the full table (about 20-30 min on a 2-core CPU)
    python benchmarks/targets.py --n-per-class 20      # a quick look
    python benchmarks/targets.py --json out.json --write-cards   # also record the numbers in the model cards

Targets (issue "Train a real UNet"):

* ``digits-cond``, CFG w = 2 (ε̃ = (1+w)ε(y) − wε(∅)), 1000-step DDPM with σ² = β (the seed's update):
  ≥ 95 % of the samples classified as their label by the metrics judge;
* its Fréchet distance (judge features, vs the digits train split) ≤ 1.5 × the real train-vs-test distance;
* DDIM with 50 steps (η = 0, same w) within 20 % of DDPM's distance.

Also reported: ``digits-uncond``'s distance and diversity (DDPM), and classifier guidance
(``digits-uncond`` + ``digits-noisy-classifier``) accuracy. Samples: ``--n-per-class`` per digit, fixed seeds.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from diffusion_lab import metrics, pretrained
from diffusion_lab.guidance import ClassifierFreeGuidance, ClassifierGuidance
from diffusion_lab.sampling import ddim_sample, ddpm_sample


def _labels(n_per_class: int) -> torch.Tensor:
    return torch.arange(10).repeat(n_per_class)


def _sample(model, schedule, y, *, sampler, guidance=None, seed=0, steps=50, batch=1000):
    gen = torch.Generator().manual_seed(seed)
    out = []
    n = y.shape[0] if y is not None else batch
    for i in range(0, n, batch):
        yb = y[i:i + batch] if y is not None else None
        b = yb.shape[0] if yb is not None else min(batch, n - i)
        if sampler == "ddpm":
            out.append(ddpm_sample(model, schedule, (b, 1, 8, 8), y=yb, guidance=guidance, variance="beta",
                                   generator=gen, progress=False))
        else:
            out.append(ddim_sample(model, schedule, (b, 1, 8, 8), steps=steps, eta=0.0, y=yb, guidance=guidance,
                                   generator=gen, progress=False))
    return torch.cat(out)


def measure(n_per_class=100, uncond_n=1000, cg_per_class=20, cg_scale=3.0, cg_sampler="ddpm", w=2.0, seed=0,
            verbose=True):
    judge = metrics.get_judge()
    base = metrics.real_frechet_baseline(judge)
    res = {"real_train_vs_test_fd": base, "n_per_class": n_per_class, "w": w, "seed": seed}

    def log(msg):
        if verbose:
            print(msg, flush=True)

    cond, sched = pretrained.load("digits-cond")
    y = _labels(n_per_class)
    cfg = ClassifierFreeGuidance(w)
    for sampler, steps in (("ddpm", sched.T), ("ddim", 50)):
        t0 = time.perf_counter()
        x = _sample(cond, sched, y, sampler=sampler, guidance=cfg, seed=seed, steps=steps)
        res[f"cond_{sampler}"] = {
            "steps": steps, "n": int(x.shape[0]), "accuracy": metrics.conditional_accuracy(x, y, judge),
            "fd": metrics.frechet_distance_to_data(x, judge),
            "diversity": metrics.diversity(x, judge, labels=y)["pairwise_ratio"],
            "wall_s": time.perf_counter() - t0}
        log(f"digits-cond CFG w={w:g} {sampler} {steps} steps: {res[f'cond_{sampler}']}")

    unc, usched = pretrained.load("digits-uncond")
    if uncond_n:
        t0 = time.perf_counter()
        x = _sample(unc, usched, None, sampler="ddpm", seed=seed, batch=uncond_n)
        div = metrics.diversity(x, judge)
        res["uncond_ddpm"] = {"n": int(x.shape[0]), "fd": metrics.frechet_distance_to_data(x, judge),
                              "diversity": div["pairwise_ratio"], "mode_coverage": div["mode_coverage"],
                              "class_entropy": div["class_entropy"], "wall_s": time.perf_counter() - t0}
        log(f"digits-uncond ddpm: {res['uncond_ddpm']}")

    if cg_per_class:
        clf, _ = pretrained.load("digits-noisy-classifier")
        yc = _labels(cg_per_class)
        t0 = time.perf_counter()
        x = _sample(unc, usched, yc, sampler=cg_sampler, guidance=ClassifierGuidance(clf, cg_scale), seed=seed,
                    steps=usched.T if cg_sampler == "ddpm" else 50)
        res["classifier_guidance"] = {"scale": cg_scale, "sampler": cg_sampler, "n": int(x.shape[0]),
                                      "accuracy": metrics.conditional_accuracy(x, yc, judge),
                                      "fd": metrics.frechet_distance_to_data(x, judge),
                                      "wall_s": time.perf_counter() - t0}
        # Unguided uncond samples are read as each label ~10 % of the time: the floor guidance lifts.
        log(f"classifier guidance: {res['classifier_guidance']}")
    return res


def table(res) -> str:
    base = res["real_train_vs_test_fd"]
    p, d = res["cond_ddpm"], res["cond_ddim"]
    rows = [
        ("digits-cond CFG w=2, DDPM 1000: judge accuracy", f"{100 * p['accuracy']:.1f} %", ">= 95 %",
         p["accuracy"] >= 0.95),
        ("digits-cond CFG w=2, DDPM 1000: Fréchet distance", f"{p['fd']:.3f} (real train-vs-test {base:.3f}, "
         f"ratio {p['fd'] / base:.2f})", f"<= 1.5 x {base:.3f} = {1.5 * base:.3f}", p["fd"] <= 1.5 * base),
        ("digits-cond CFG w=2, DDIM 50: Fréchet distance", f"{d['fd']:.3f} ({100 * (d['fd'] / p['fd'] - 1):+.1f} % "
         "vs DDPM)", "within 20 % of DDPM", abs(d["fd"] / p["fd"] - 1) <= 0.2),
        ("digits-cond CFG w=2, DDIM 50: judge accuracy", f"{100 * d['accuracy']:.1f} %", "(reported)", None),
    ]
    if "uncond_ddpm" in res:
        u = res["uncond_ddpm"]
        rows.append(("digits-uncond DDPM 1000: Fréchet distance", f"{u['fd']:.3f}", "(reported)", None))
        rows.append(("digits-uncond DDPM 1000: diversity (pairwise ratio / coverage)",
                     f"{u['diversity']:.3f} / {u['mode_coverage']:.2f}", "(reported)", None))
    if "classifier_guidance" in res:
        c = res["classifier_guidance"]
        rows.append((f"classifier guidance (uncond + noisy classifier, scale {c['scale']:g}, {c['sampler']}): "
                     "judge accuracy", f"{100 * c['accuracy']:.1f} % (n={c['n']})", "(reported)", None))
    w = max(len(r[0]) for r in rows)
    lines = [f"{'measure':<{w}} | measured | target | ok"]
    for name, val, target, ok in rows:
        lines.append(f"{name:<{w}} | {val} | {target} | {'' if ok is None else ('PASS' if ok else 'MISS')}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=100, help="CFG samples per digit (DDPM and DDIM)")
    ap.add_argument("--uncond-n", type=int, default=1000, help="unconditional samples (0 = skip)")
    ap.add_argument("--cg-per-class", type=int, default=20, help="classifier-guidance samples per digit (0 = skip)")
    ap.add_argument("--cg-scale", type=float, default=3.0, help="classifier-guidance scale")
    ap.add_argument("--cg-sampler", choices=("ddpm", "ddim"), default="ddpm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the measurements here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = measure(args.n_per_class, args.uncond_n, args.cg_per_class, args.cg_scale, args.cg_sampler, seed=args.seed)
    print(table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
