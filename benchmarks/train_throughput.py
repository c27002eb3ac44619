"""Training throughput: our UNet vs diffusers' ``UNet2DModel`` at (nearly) equal parameter count.

Benchmark only — never a timed test. Needs the ``bench`` extra: ``pip install diffusers``.

Both networks get the same batch, resolution, device, optimiser (AdamW) and loss (L_simple on q_sample).
Training steps are alternated in one process (``--rounds`` rounds of ``--steps`` steps each, after a warm-up),
and the median img/s of each is reported, with the ratio. Our achieved GFLOP/s (fwd+bwd FLOPs counted with
``torch.utils.flop_counter.FlopCounterMode``) is compared with a float32 matmul measured in the same run.

    python benchmarks/train_throughput.py --resolution 8 --batch 128
    python benchmarks/train_throughput.py --config digits --batch 128    # the shipped digits architecture
    python benchmarks/train_throughput.py --resolution 32 --batch 32 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffusion_lab.diffusion import loss_simple
from diffusion_lab.models import UNet, UNetConfig
from diffusion_lab.schedules import linear_schedule

# Matched configurations: same widths, depth and attention placement. Keys 8 and 32 are --resolution;
# "digits" is the architecture of the shipped digits models (702,753 parameters with the class embedding).
CONFIGS = {
    "digits": dict(ours=dict(image_size=8, base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                             attention_resolutions=(4,)),
                   theirs=dict(block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                               up_block_types=("AttnUpBlock2D", "UpBlock2D"))),
    8: dict(ours=dict(image_size=8, base_channels=64, channel_mults=(1, 2), num_res_blocks=2, attention_resolutions=(4,)),
            theirs=dict(block_out_channels=(64, 128), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D"))),
    32: dict(ours=dict(image_size=32, base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2,
                       attention_resolutions=(16,)),
             theirs=dict(block_out_channels=(64, 128, 128), down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))),
}


class DiffusersEps(torch.nn.Module):
    """diffusers' UNet2DModel behind our denoiser signature ``model(x_t, t) -> ε``."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x_t, t, y=None):
        return self.unet(x_t, t).sample


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def make_models(key, in_channels, device):
    from diffusers import UNet2DModel

    cfg = CONFIGS[key]
    resolution = cfg["ours"]["image_size"]
    ours = UNet(UNetConfig(in_channels=in_channels, **cfg["ours"]))
    theirs = DiffusersEps(UNet2DModel(sample_size=resolution, in_channels=in_channels, out_channels=in_channels,
                                      layers_per_block=cfg["ours"]["num_res_blocks"], norm_num_groups=32,
                                      attention_head_dim=None,  # one head, as ours (diffusers' default is 8 channels/head)
                                      **cfg["theirs"]))
    return ours.to(device), theirs.to(device)


def matmul_gflops(device, n=1024, reps=20):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def train_flops(model, schedule, x, t, noise):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        loss_simple(model, schedule, x, t, noise=noise).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=8, choices=(8, 32))
    p.add_argument("--config", choices=("digits",), default=None,
                   help="a named configuration instead of --resolution's (digits: the shipped digits architecture)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="training steps per model per round")
    p.add_argument("--channels-last", action="store_true", help="run our UNet in channels_last")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--amp", choices=("off", "bf16"), default="off", help="autocast both models (CPU bf16 needs avx512_bf16/AMX)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    device = torch.device(args.device)
    key = args.config or args.resolution
    if args.config:
        args.resolution = CONFIGS[key]["ours"]["image_size"]
    in_ch = 1 if args.resolution == 8 else 3
    ours, theirs = make_models(key, in_ch, device)
    if args.channels_last:
        ours = ours.to(memory_format=torch.channels_last)
    schedule = linear_schedule()
    x = torch.randn(args.batch, in_ch, args.resolution, args.resolution, device=device)
    t = torch.randint(0, schedule.T, (args.batch,), device=device)
    noise = torch.randn_like(x)
    x_ours = x.contiguous(memory_format=torch.channels_last) if args.channels_last else x
    po, pt = n_params(ours), n_params(theirs)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, config {key}, "
          f"resolution {args.resolution}, batch {args.batch}, amp {args.amp}, ours channels_last {args.channels_last}")
    print(f"params: ours {po:,}  diffusers {pt:,}  (ratio {po / pt:.3f})")

    runs = {"ours": (ours, x_ours), "diffusers": (theirs, x)}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in runs.items()}

    def step(name):
        m, xx = runs[name]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            loss = loss_simple(m, schedule, xx, t, noise=noise)
        loss.backward()
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    for name in runs:  # warm-up
        for _ in range(2):
            step(name)
    rates = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name in runs:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            _sync(device)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in rates.items():
        print(f"{k:>9}: median {med[k]:8.1f} img/s   rounds: " + " ".join(f"{r:.0f}" for r in v))
    print(f"ratio ours/diffusers: {med['ours'] / med['diffusers']:.2f}x")

    flops = train_flops(ours, schedule, x_ours, t, noise)
    flops_theirs = train_flops(theirs, schedule, x, t, noise)
    peak = matmul_gflops(device)
    achieved = flops / args.batch * med["ours"] / 1e9
    print(f"FLOPs per image (fwd+bwd): ours {flops / args.batch / 1e6:.1f} MFLOP, diffusers "
          f"{flops_theirs / args.batch / 1e6:.1f} MFLOP")
    print(f"ours achieved {achieved:.1f} GFLOP/s; float32 matmul {peak:.1f} GFLOP/s; fraction {achieved / peak:.2f}")


if __name__ == "__main__":
    main()
