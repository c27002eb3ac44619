"""One GPU check (≤ 5 minutes on one GPU): train ``digits-cond`` from scratch and time it.

    python benchmarks/gpu_check.py                       # needs CUDA; diffusers optional (the comparison is skipped)

1. Throughput: our UNet vs diffusers' ``UNet2DModel`` built to the same widths / depth / attention placement
   (as in ``benchmarks/train_throughput.py``), class-conditional both, same batch, bf16 autocast, AdamW,
   L_simple; alternated rounds, median img/s.
2. Time to quality: :func:`diffusion_lab.train.train` with the shipped ``digits-cond`` architecture and recipe
   (base 32, mults (1, 2), 1 ResBlock per level, attention at 4×4, dropout 0.1, label dropout 0.15, lr 1e-3,
   EMA 0.999, linear schedule T = 1000) but a bigger batch and bf16. Every ``--eval-every`` steps the EMA model
   samples ``--eval-n`` digits with DDIM 50 steps and CFG w = 2, and the metrics judge reads them; the run
   stops at the first evaluation with ≥ 95 % accuracy. Reported: training wall time to that point (evaluation
   time excluded, and also shown with it), steps, images seen.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from diffusion_lab import metrics  # noqa: E402
from diffusion_lab.data import load_digits  # noqa: E402
from diffusion_lab.diffusion import loss_simple  # noqa: E402
from diffusion_lab.guidance import ClassifierFreeGuidance  # noqa: E402
from diffusion_lab.models import UNet, UNetConfig  # noqa: E402
from diffusion_lab.sampling import ddim_sample  # noqa: E402
from diffusion_lab.schedules import linear_schedule  # noqa: E402
from diffusion_lab.train import train  # noqa: E402

SHIPPED = dict(in_channels=1, image_size=8, base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
               attention_resolutions=(4,), dropout=0.1, num_classes=10)


class _Reached(Exception):
    pass


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def throughput(device, batch, rounds=5, steps=20):
    try:
        from diffusers import UNet2DModel
    except Exception as err:  # noqa: BLE001
        print(f"throughput: diffusers not importable ({type(err).__name__}: {err}); comparison skipped")
        ours = UNet(UNetConfig(**SHIPPED)).to(device)
        runs = {"ours": ours}
        theirs = None
    else:
        class DiffusersEps(torch.nn.Module):
            def __init__(self, unet):
                super().__init__()
                self.unet = unet

            def forward(self, x_t, t, y=None):
                return self.unet(x_t, t, class_labels=y).sample

        torch.manual_seed(0)
        ours = UNet(UNetConfig(**SHIPPED)).to(device)
        theirs = DiffusersEps(UNet2DModel(
            sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=32, attention_head_dim=None, dropout=0.1, num_class_embeds=11)).to(device)
        runs = {"ours": ours, "diffusers": theirs}
    sched = linear_schedule()
    n_par = {k: sum(p.numel() for p in m.parameters()) for k, m in runs.items()}
    print("params: " + ", ".join(f"{k} {v:,}" for k, v in n_par.items()))
    x = torch.randn(batch, 1, 8, 8, device=device)
    y = torch.randint(0, 11, (batch,), device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    noise = torch.randn_like(x)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in runs.items()}

    def step(k):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
            loss = loss_simple(runs[k], sched, x, t, y=y, noise=noise)
        loss.backward()
        opts[k].step()
        opts[k].zero_grad(set_to_none=True)

    for k in runs:
        for _ in range(5):
            step(k)
    rates = {k: [] for k in runs}
    for _ in range(rounds):
        for k in runs:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step(k)
            _sync(device)
            rates[k].append(steps * batch / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k in runs:
        print(f"throughput {k:>9}: {med[k]:,.0f} img/s (batch {batch}, bf16, median of {rounds} x {steps} steps)")
    if "diffusers" in med:
        print(f"throughput ratio ours/diffusers: {med['ours'] / med['diffusers']:.2f}x "
              f"(params ratio {n_par['ours'] / n_par['diffusers']:.3f})")
    return med


def time_to_accuracy(device, batch, lr, max_steps, eval_every, eval_n, target):
    judge = metrics.get_judge().to(device)
    sched = linear_schedule()
    x, y = load_digits("train")
    torch.manual_seed(0)
    model = UNet(UNetConfig(**SHIPPED))
    labels = torch.arange(10, device=device).repeat(eval_n // 10)
    state = {"eval_s": 0.0, "t0": None, "history": []}

    def callback(info):
        if info["step"] % eval_every:
            return
        e0 = time.perf_counter()
        ema = info["ema_model"]
        ema.eval()
        g = torch.Generator(device=device).manual_seed(0)
        s = ddim_sample(ema, sched, (labels.shape[0], 1, 8, 8), steps=50, y=labels,   # fp32 sampling
                        guidance=ClassifierFreeGuidance(2.0), generator=g, progress=False, device=device)
        acc = judge.accuracy(s.float(), labels.cpu())
        ema.train()
        if device == "cuda":
            torch.cuda.synchronize()
        state["eval_s"] += time.perf_counter() - e0
        wall = time.perf_counter() - state["t0"]
        state["history"].append((info["step"], acc, wall - state["eval_s"]))
        print(f"  step {info['step']:>6}: loss {info['loss']:.4f}  CFG w=2 DDIM-50 judge accuracy {100 * acc:5.1f} %  "
              f"train wall {wall - state['eval_s']:6.1f} s (+{state['eval_s']:.1f} s eval)", flush=True)
        if acc >= target:
            raise _Reached

    state["t0"] = time.perf_counter()
    reached = False
    try:
        train(model, sched, (x, y), steps=max_steps, batch_size=batch, lr=lr, warmup=200, ema_decay=0.999,
              label_dropout=0.15, device=device, amp="bf16" if device == "cuda" else "off", seed=0, log_every=eval_every // 5 or 1,
              progress=False, callback=callback)
    except _Reached:
        reached = True
    total = time.perf_counter() - state["t0"]
    step, acc, train_wall = state["history"][-1] if state["history"] else (0, float("nan"), total)
    if reached:
        print(f"time to {100 * target:.0f} % CFG accuracy: {train_wall:.1f} s of training ({total:.1f} s with "
              f"evaluations), {step} steps x batch {batch} = {step * batch:,} images "
              f"({step * batch / train_wall:,.0f} img/s in the training loop)")
    else:
        print(f"did NOT reach {100 * target:.0f} % within {max_steps} steps: last accuracy {100 * acc:.1f} % at step "
              f"{step} after {train_wall:.1f} s of training")
    return reached


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-steps", type=int, default=8000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-n", type=int, default=500)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device; this check needs a GPU")
        return 1
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"gpu_check: {torch.cuda.get_device_name()} torch {torch.__version__}")
    t0 = time.perf_counter()
    if not args.skip_throughput:
        throughput(device, args.batch)
    time_to_accuracy(device, args.batch, args.lr, args.max_steps, args.eval_every, args.eval_n, args.target)
    print(f"gpu_check total wall time: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
