"""Time to quality (issue #11): train named recipes from scratch, evaluate them periodically, and print the
training images seen and the training time at which each target was first met.

    python benchmarks/time_to_quality.py                                  # digits-cond-fast against digits-cond
    python benchmarks/time_to_quality.py --max-images 40000 --eval-every 10000 --n-per-class 20   # a quick look
    python benchmarks/time_to_quality.py --recipes digits-cond-fast --seed 1 --sample-seed 2 --json out.json

Targets, measured on the EMA weights: judge accuracy ≥ 95 % (the ``metrics`` judge; CFG with the preset's
w and guidance interval, DDIM 50 steps, ``--n-per-class`` samples per digit) and Fréchet distance in the judge's
feature space ≤ 1.5 × the real train-vs-test value (``metrics.real_frechet_baseline()``). Every recipe trains on
the digits train split only; the judge never sees generated data. Use seeds the recipe was not tuned on for
figures you report (``digits-cond-fast`` was tuned with ``--seed 0 --sample-seed 1``).

A recipe whose ``steps × batch_size`` exceeds ``--max-images`` is stopped there (its learning-rate schedule is
compressed to the cap if it decays). "train s" is training time without the evaluations; "cpu s" is the process
CPU time of training, which on one thread is close to the wall time of a quiet machine (a shared machine inflates
wall time, not CPU time). Load average is printed with each result.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from diffusion_lab import metrics, presets
from diffusion_lab.guidance import ClassifierFreeGuidance
from diffusion_lab.sampling import ddim_sample
from diffusion_lab.train import train

TARGET_ACCURACY = 0.95
TARGET_FD_RATIO = 1.5


def evaluate(model, schedule, sampling: dict, n_per_class: int, seed: int, judge, real_fd: float) -> dict:
    """Judge accuracy and Fréchet distance of ``n_per_class`` CFG samples per digit (DDIM, the preset's ``sampling``: its guidance weight w and interval)."""
    labels = torch.arange(10).repeat(n_per_class)
    interval = sampling.get("guidance_interval")
    guidance = ClassifierFreeGuidance(sampling["guidance_weight"],
                                      interval=tuple(interval) if interval else None)
    model.eval()
    with torch.no_grad():
        x = ddim_sample(model, schedule, (labels.shape[0], 1, 8, 8), steps=sampling.get("steps", 50), eta=0.0,
                        y=labels, guidance=guidance, generator=torch.Generator().manual_seed(seed), progress=False)
    fd = metrics.frechet_distance_to_data(x, judge)
    return {"accuracy": metrics.conditional_accuracy(x, labels, judge), "fd": fd, "fd_ratio": fd / real_fd}


def run_recipe(name: str, *, max_images: int, eval_every: int, n_per_class: int, seed: int, sample_seed: int,
               judge, real_fd: float, verbose: bool = True) -> dict:
    p = presets.get_preset(name)
    bs = p.train.get("batch_size", 128)
    steps = min(p.train["steps"], max(1, max_images // bs))
    eval_steps = sorted({min(steps, -(-k // bs)) for k in range(eval_every, steps * bs + eval_every, eval_every)})
    torch.manual_seed(seed)
    fresh = presets.build(name)
    model, schedule = fresh.network, fresh.schedule
    x, y = presets.training_data(name)
    rows, first = [], {"accuracy": None, "fd": None, "both": None}
    clock = {"eval": 0.0, "t0": time.perf_counter(), "cpu0": time.process_time()}

    def on_step(info):
        if info["step"] not in eval_steps:
            return
        t_in, cpu_in = time.perf_counter(), time.process_time()
        train_s = t_in - clock["t0"] - clock["eval"]
        train_cpu = cpu_in - clock["cpu0"] - clock.get("eval_cpu", 0.0)
        m = info["sampling_model"]          # the EMA network as an ε-model (wrapped if it predicts x₀ or v)
        was_training = m.training
        r = evaluate(m, schedule, p.sampling, n_per_class, sample_seed, judge, real_fd)
        m.train(was_training)
        r.update(recipe=name, images=info["step"] * bs, train_s=round(train_s, 1), cpu_s=round(train_cpu, 1),
                 loss=info["loss"], load=round(os.getloadavg()[0], 2))
        ok_acc, ok_fd = r["accuracy"] >= TARGET_ACCURACY, r["fd_ratio"] <= TARGET_FD_RATIO
        for key, ok in (("accuracy", ok_acc), ("fd", ok_fd), ("both", ok_acc and ok_fd)):
            if ok and first[key] is None:
                first[key] = {"images": r["images"], "train_s": r["train_s"], "cpu_s": r["cpu_s"]}
        rows.append(r)
        if verbose:
            print(f"{name:18s} images={r['images']:7d} accuracy={r['accuracy']:.3f} fd={r['fd']:.3f} "
                  f"fd/real={r['fd_ratio']:.2f} train_s={r['train_s']:.1f} cpu_s={r['cpu_s']:.1f} "
                  f"load={r['load']}", flush=True)
        clock["eval"] += time.perf_counter() - t_in
        clock["eval_cpu"] = clock.get("eval_cpu", 0.0) + time.process_time() - cpu_in

    res = train(model, schedule, (x, y), preset=name, steps=steps, device="cpu", progress=False, log_every=1,
                callback=on_step)
    out = {"recipe": name, "steps": steps, "batch_size": bs, "images": steps * bs, "seed": seed,
           "sample_seed": sample_seed, "n_per_class": n_per_class, "first_met": first, "evals": rows,
           "train_img_per_s_wall": round(res.samples_per_s, 1),
           "params": sum(q.numel() for q in model.parameters()), "threads": torch.get_num_threads()}
    if verbose:
        for key, label in (("accuracy", "accuracy >= 95 %"), ("fd", "FD <= 1.5x real"), ("both", "both")):
            f = first[key]
            print(f"  {name}: {label:17s} " + (f"first met at {f['images']:,} images, {f['train_s']:.1f} s train "
                                              f"({f['cpu_s']:.1f} s CPU)" if f else f"not met by {steps * bs:,} images"))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="digits-cond-fast,digits-cond", help="comma-separated preset names")
    ap.add_argument("--max-images", type=int, default=100_000, help="stop each recipe after this many images")
    ap.add_argument("--eval-every", type=int, default=20_000, help="evaluate every this many training images")
    ap.add_argument("--n-per-class", type=int, default=100, help="samples per digit at each evaluation")
    ap.add_argument("--seed", type=int, default=1, help="training seed (weights, data order, t, ε)")
    ap.add_argument("--sample-seed", type=int, default=2, help="seed of the evaluation samples")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    judge = metrics.get_judge()
    real_fd = metrics.real_frechet_baseline(judge)
    print(f"real train-vs-test FD = {real_fd:.3f}; targets: accuracy >= {TARGET_ACCURACY:.0%}, "
          f"FD <= {TARGET_FD_RATIO * real_fd:.3f}; torch {torch.__version__}, {args.threads} thread(s), "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    results = {"real_fd": real_fd, "args": vars(args), "recipes": []}
    for name in [r for r in args.recipes.split(",") if r]:
        results["recipes"].append(run_recipe(name, max_images=args.max_images, eval_every=args.eval_every,
                                             n_per_class=args.n_per_class, seed=args.seed,
                                             sample_seed=args.sample_seed, judge=judge, real_fd=real_fd))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
