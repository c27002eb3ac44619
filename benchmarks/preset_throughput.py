"""Training images per second of the digits-cond-fast recipe at several batch sizes and targets, against the
batch-32 ε-network in the same process (issue #11: batch 64 and v-prediction against the previous recipe).

    python benchmarks/preset_throughput.py --threads 2            # ~2 min: 4 variants x 2 interleaved repeats

Each variant trains 9,600 images from scratch with the preset's settings; the figure is the training loop's own
images per second (``TrainResult.samples_per_s``). The ratio is against "eps, batch 32" in the same round, so a
busy machine moves the ratio less than the absolute numbers.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from diffusion_lab import presets
from diffusion_lab.train import train

VARIANTS = {"eps, batch 32": dict(prediction="eps", batch_size=32),
            "v, batch 32": dict(prediction="v", batch_size=32),
            "v, batch 48": dict(prediction="v", batch_size=48),
            "v, batch 64 (the preset)": dict(prediction="v", batch_size=64)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images", type=int, default=9600, help="training images per measurement")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = presets.training_data("digits-cond-fast")
    rates = {k: [] for k in VARIANTS}
    for rep in range(args.repeats):
        for name, kw in VARIANTS.items():
            torch.manual_seed(0)
            fresh = presets.build("digits-cond-fast")
            model, schedule = fresh.network, fresh.schedule
            r = train(model, schedule, (x, y), preset="digits-cond-fast", steps=max(1, args.images // kw["batch_size"]),
                      device="cpu", progress=False, **kw)
            rates[name].append(r.samples_per_s)
            print(f"round {rep}: {name:26s} {r.samples_per_s:7.0f} img/s", flush=True)
    ref = statistics.median(rates["eps, batch 32"])
    print(f"\n{args.threads} thread(s), torch {torch.__version__}; median of {args.repeats} rounds")
    for name, v in rates.items():
        print(f"{name:26s} {statistics.median(v):7.0f} img/s  x{statistics.median(v) / ref:.2f}")
    return rates


if __name__ == "__main__":
    main()
