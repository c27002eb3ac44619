"""The boundary helpers: one converter for steps and labels, checks skipped only inside a checked loop, and the
library functions the command line now calls (batched sampling, a model sized for its data)."""
from __future__ import annotations

import pytest
import torch

from diffusion_lab import checks
from diffusion_lab.gaussian_mixture import GaussianOracle
from diffusion_lab.models import build_model_for_data
from diffusion_lab.sampling import ddim_sample, ddpm_sample, sample_batches
from diffusion_lab.schedules import linear_schedule


def test_one_converter_for_steps_and_labels():
    assert torch.equal(checks.timesteps(3, 10, 4), torch.full((4,), 3))
    assert torch.equal(checks.labels(torch.tensor(2), 3, 5), torch.full((3,), 2))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T-1\] = \[0, 9\].*got values in \[0, 10\]"):
        checks.timesteps(torch.tensor([0, 10]), 10)
    with pytest.raises(ValueError, match=r"non-negative.*\[-1, 2\]"):
        checks.timesteps(torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\].*null label included.*got values in \[0, 6\]"):
        checks.labels(torch.tensor([0, 6]), 2, 5, allow_null=True)
    with pytest.raises(TypeError, match="integer class labels"):
        checks.labels(torch.tensor([0.5]), 1)


def test_value_checks_are_skipped_only_inside_trusted():
    bad = torch.tensor([0, 99])
    with checks.trusted():
        assert not checks.value_checks_enabled()
        assert torch.equal(checks.timesteps(bad, 10), bad)          # trusted: the caller checked
        with pytest.raises(TypeError):                              # type checks cost nothing and stay
            checks.timesteps(bad.float(), 10)
    assert checks.value_checks_enabled()
    with pytest.raises(ValueError):
        checks.timesteps(bad, 10)


def test_checks_stay_on_after_an_error_inside_trusted():
    with pytest.raises(RuntimeError):
        with checks.trusted():
            raise RuntimeError("boom")
    assert checks.value_checks_enabled()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_batches_is_the_plain_loop(sampler):
    sch = linear_schedule(30, 1e-3, 0.2)
    model = GaussianOracle(sch, 0.5, 0.3)
    got = sample_batches(model, sch, (2,), n=7, sampler=sampler, batch_size=3, steps=5,
                         generator=torch.Generator().manual_seed(0), progress=False)
    g = torch.Generator().manual_seed(0)
    fn = ddpm_sample if sampler == "ddpm" else (lambda *a, **k: ddim_sample(*a, steps=5, **k))
    ref = torch.cat([fn(model, sch, (b, 2), generator=g, progress=False) for b in (3, 3, 1)])
    assert torch.equal(got, ref)


def test_build_model_for_data_sizes_the_network():
    mlp = build_model_for_data("mlp", torch.zeros(5, 3), hidden_dim=16, base_channels=8)   # unused fields ignored
    assert mlp.config.data_dim == 3 and mlp.config.hidden_dim == 16 and mlp.config.num_classes is None
    unet = build_model_for_data("unet", torch.zeros(2, 1, 8, 8), 10, base_channels=8, channel_mults=(1, 2))
    assert unet.config.image_size == 8 and unet.config.num_classes == 10
    with pytest.raises(ValueError, match="flat 2-D data"):
        build_model_for_data("mlp", torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="square images"):
        build_model_for_data("unet", torch.zeros(2, 1, 8, 6))
