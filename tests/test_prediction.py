"""Training a network that predicts x₀ or v (``TrainConfig.prediction``): the loss is that target's MSE, min-SNR-γ
weights the same ε-error whatever the target (eq. 5.7), the result samples as an ε-model, checkpoints remember
what the network predicts, and bad values fail with errors that name the fix."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion_lab import parameterization as P
from diffusion_lab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from diffusion_lab.data import make_toy
from diffusion_lab.diffusion import loss_simple, q_sample
from diffusion_lab.guidance import ClassifierFreeGuidance
from diffusion_lab.models import MLPDenoiser, UNet
from diffusion_lab.sampling import ddim_sample
from diffusion_lab.schedules import linear_schedule
from diffusion_lab.train import TrainConfig, EpochSampler, min_snr_weights, train, train_classifier

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_min_snr_weights_one_eps_error_whatever_the_target(prediction):
    """w_p(t) ‖p − p̂‖² = w_ε(t) ‖ε − ε̂‖² item by item, with ε̂ derived from p̂ (eq. 5.6), for any p̂."""
    s = linear_schedule(1000)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 1, 10, 100, 300, 500, 700, 900, 999])
    x0 = torch.randn(9, 1, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(9, 1, 4, 4, generator=g, dtype=torch.float64)
    x_t = s.sqrt_alpha_bars[t].view(-1, 1, 1, 1) * x0 + s.sqrt_one_minus_alpha_bars[t].view(-1, 1, 1, 1) * noise
    target = P.training_target(s, x0, t, noise, prediction)
    pred = target + 0.3 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    eps_hat = P.to_eps(s, x_t, t, pred, prediction)
    err_p = (target - pred).pow(2).flatten(1).mean(1)
    err_eps = (noise - eps_hat).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(min_snr_weights(s, t, 5.0, prediction) * err_p, min_snr_weights(s, t, 5.0) * err_eps,
                               rtol=1e-6, atol=1e-10)


def test_min_snr_weights_known_values():
    s = linear_schedule(1000)
    t = torch.tensor([0, 999])
    snr = s.alpha_bars[t] / (1 - s.alpha_bars[t])          # ≈ 9999 and ≈ 4e-5
    torch.testing.assert_close(min_snr_weights(s, t, 5.0, "x0"), torch.stack([torch.tensor(5.0, dtype=torch.float64),
                                                                              snr[1]]))
    torch.testing.assert_close(min_snr_weights(s, t, 5.0, "v"), torch.stack([5 / (snr[0] + 1), snr[1] / (snr[1] + 1)]))
    with pytest.raises(ValueError, match="prediction must be one of"):
        min_snr_weights(s, t, 5.0, "velocity")


@pytest.mark.parametrize("prediction, weighting", [("v", "none"), ("x0", "min_snr"), ("v", "min_snr")])
def test_first_loss_is_the_targets_mse_of_the_same_draws(prediction, weighting):
    x = make_toy("two_moons", 64, seed=1)
    torch.manual_seed(0)
    model = MLPDenoiser(hidden_dim=16, num_blocks=1, dropout=0.0)
    init = copy.deepcopy(model)
    s = linear_schedule(100)
    r = train(model, s, x, steps=1, batch_size=32, prediction=prediction, loss_weighting=weighting,
              min_snr_gamma=2.0, seed=3, device="cpu", progress=False)
    g = torch.Generator().manual_seed(3)
    idx = EpochSampler(64, 3).batch(0, 32)
    t = torch.randint(0, 100, (32,), generator=g)
    noise = torch.randn(32, 2, generator=g)
    x0 = x[idx]
    x_t = q_sample(s, x0, t, noise)
    per = (P.training_target(s, x0, t, noise, prediction) - init(x_t, t)).pow(2).mean(1)
    w = min_snr_weights(s, t, 2.0, prediction).float() if weighting == "min_snr" else torch.ones(32)
    assert r.losses[0] == pytest.approx((w * per).mean().item(), rel=1e-5)
    # the same number through the ε-route: L_simple of the wrapped network, weighted by ε's min-SNR and eq. (5.7)
    eps_route = loss_simple(P.EpsFromPrediction(init, s, prediction), s, x0, t, noise=noise, reduction="none")
    w_eps = (min_snr_weights(s, t, 2.0).float() if weighting == "min_snr" else
             1.0 / P.eps_mse_weight(s, prediction)[t].float())
    assert r.losses[0] == pytest.approx((w_eps * eps_route).mean().item(), rel=1e-4)


def test_v_prediction_learns_a_gaussian_and_samples_as_an_eps_model():
    """Two-dimensional N(μ, diag σ²): the v-network's DDIM samples (through ``sampling_model``) have its moments."""
    g = torch.Generator().manual_seed(0)
    mu, sigma = torch.tensor([1.0, -0.5]), torch.tensor([0.5, 0.25])
    x = mu + sigma * torch.randn(4096, 2, generator=g)
    torch.manual_seed(0)
    s = linear_schedule(1000)
    r = train(MLPDenoiser(hidden_dim=64, num_blocks=2, dropout=0.0), s, x, steps=600, batch_size=256, lr=3e-3,
              warmup=20, lr_schedule="cosine", ema_decay=None, ema_power=6.94, prediction="v", device="cpu",
              progress=False)
    m = r.sampling_model
    assert isinstance(m, P.EpsFromPrediction) and m.net is r.ema_model and r.prediction == "v"
    out = ddim_sample(m, s, (2000, 2), steps=50, generator=torch.Generator().manual_seed(1), progress=False)
    assert (out.mean(0) - mu).abs().max() < 0.06, out.mean(0)
    assert ((out.std(0) - sigma).abs() / sigma).max() < 0.15, out.std(0)


def _tiny_cond_unet():
    torch.manual_seed(0)
    return UNet(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                attention_resolutions=(), num_groups=4, num_classes=3)


def test_checkpoint_records_the_prediction_and_loads_an_eps_model(tmp_path):
    s = linear_schedule(50)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 3
    r = train(_tiny_cond_unet(), s, (x, y), steps=2, batch_size=8, prediction="v", label_dropout=0.2,
              device="cpu", progress=False, checkpoint_path=tmp_path / "v")
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["prediction"] == "v" and doc["train_config"]["prediction"] == "v"
    ck = load_checkpoint(tmp_path / "v")
    model, meta = ck.model, ck.meta
    assert ck.prediction == "v" and ck.num_classes == 3 and ck.item_shape == (1, 8, 8) and ck.network is model.net
    assert isinstance(model, P.EpsFromPrediction) and meta["prediction"] == "v"
    assert model.num_classes == 3 and model.config.image_size == 8
    x_t, t, yy = torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 30, 49]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(model(x_t, t, y=yy), r.sampling_model(x_t, t, y=yy))
        # CFG finds the null label through the wrapper (no num_classes argument needed)
        ddim_sample(model, s, (3, 1, 8, 8), steps=5, y=torch.tensor([0, 1, 2]), guidance=ClassifierFreeGuidance(2.0),
                    generator=torch.Generator().manual_seed(0), progress=False)
    # a wrapped network saves as what it predicts; a checkpoint from before the field loads as an ε-model
    save_checkpoint(tmp_path / "w", model, s)
    assert json.loads((tmp_path / "w.json").read_text())["prediction"] == "v"
    old = dict(doc)
    old.pop("prediction")
    (tmp_path / "v.json").write_text(json.dumps(old))
    ck = load_checkpoint(tmp_path / "v")
    eps_model, meta = ck.model, ck.meta
    assert isinstance(eps_model, UNet) and meta["prediction"] == "eps"
    (tmp_path / "v.json").write_text(json.dumps(dict(doc, prediction="score")))
    with pytest.raises(CheckpointError, match="unknown prediction 'score'"):
        load_checkpoint(tmp_path / "v")
    with pytest.raises(ValueError, match="pass one that matches"):
        save_checkpoint(tmp_path / "z", model, s, train_config={"prediction": "x0"})


def test_bad_prediction_values_name_the_choices():
    with pytest.raises(ValueError, match=r"prediction must be one of \('eps', 'x0', 'v'\)"):
        TrainConfig(prediction="velocity")
    x = torch.randn(8, 1, 8, 8)
    from diffusion_lab.models import NoisyClassifier
    clf = NoisyClassifier(in_channels=1, image_size=8, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                          attention_resolutions=(), num_groups=4, num_classes=2)
    with pytest.raises(ValueError, match="applies to denoisers, not to classifiers"):
        train_classifier(clf, linear_schedule(10), x, torch.arange(8) % 2, steps=1, prediction="v", device="cpu",
                         progress=False)


def test_cli_prediction_flag_reaches_the_checkpoint(tmp_path):
    out = tmp_path / "moons"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "diffusion_lab", "train", "--model", "mlp", "--data", "two_moons",
                        "--toy-points", "256", "--steps", "3", "--batch-size", "64", "--prediction", "v",
                        "--device", "cpu", "--no-progress", "--out", str(out)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.with_suffix(".json").read_text())["prediction"] == "v"
    bad = subprocess.run([sys.executable, "-m", "diffusion_lab", "train", "--model", "mlp", "--data", "two_moons",
                          "--prediction", "score", "--out", str(tmp_path / "x")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "invalid choice: 'score'" in bad.stderr
