"""Chapter 1's plumbing in the package: SampleJudge (each set of samples judged once, against fixed held-out points)
and train_gan's saturating generator loss (exercise 2)."""
from __future__ import annotations

import pytest
import torch

from diffusion_lab import data
from diffusion_lab.baselines import (EIGHT_GAUSSIANS_CENTERS, GENERATOR_LOSSES, SampleJudge, energy_distance, mmd2,
                                     mode_coverage, train_gan)


@pytest.fixture(scope="module")
def held():
    return data.make_toy("eight_gaussians", 600, seed=1)


def test_judge_gives_the_measures_of_the_package(held):
    s = data.make_toy("eight_gaussians", 300, seed=2)
    j = SampleJudge(held)(s)
    cov = mode_coverage(s)
    assert j == {"energy": energy_distance(s, held), "mmd": mmd2(s, held), "modes": cov["covered"],
                 "in_mode": cov["in_mode"]}
    assert j["modes"] == 8 and j["in_mode"] > 0.95


def test_judge_judges_each_tensor_once_and_again_after_an_in_place_change(held):
    judge = SampleJudge(held)
    s = data.make_toy("eight_gaussians", 300, seed=2)
    first = judge(s)
    first["energy"] = -1.0                          # the caller's copy; the cache is not touched
    assert judge(s)["energy"] == energy_distance(s, held) and judge.evaluations == 1
    same_values = s.clone()                          # another object: judged afresh
    assert judge(same_values) == judge(s) and judge.evaluations == 2
    s.mul_(3.0)                                      # changed in place: the cached result is stale
    moved = judge(s)
    assert judge.evaluations == 3 and moved["energy"] == pytest.approx(energy_distance(s, held))
    assert moved["modes"] < 8


def test_judge_keeps_a_reference_so_a_freed_id_cannot_alias(held):
    judge = SampleJudge(held)
    results = [judge(data.make_toy("eight_gaussians", 100, seed=k) * (1 + k)) for k in range(5)]
    assert judge.evaluations == 5
    assert len({r["energy"] for r in results}) == 5   # five different sets, five different results


def test_judge_other_centres(held):
    centres = torch.zeros(1, 2, dtype=torch.float64)
    j = SampleJudge(held, centers=centres, std=10.0)(held)
    assert j["modes"] == 1 and j["in_mode"] == 1.0


def test_judge_bad_input_gives_clear_errors(held):
    with pytest.raises(ValueError, match="held-out points"):
        SampleJudge(torch.zeros(5))
    with pytest.raises(ValueError, match="centers"):
        SampleJudge(held, centers=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="std"):
        SampleJudge(held, std=0.0)
    with pytest.raises(TypeError, match="samples must be a tensor"):
        SampleJudge(held)([[0.0, 0.0]])
    with pytest.raises(ValueError, match="shape"):
        SampleJudge(held)(torch.zeros(10, 3))


def test_train_gan_saturating_loss_records_log_one_minus_d():
    x = data.make_toy("eight_gaussians", 512, seed=0)
    assert GENERATOR_LOSSES == ("non_saturating", "saturating")
    ns = train_gan(x, steps=30, seed=0, batch_size=64)
    sat = train_gan(x, steps=30, seed=0, batch_size=64, generator_loss="saturating")
    # same seed, same first discriminator step: the two runs part only at the first generator step
    assert sat.losses["d"][0] == ns.losses["d"][0]
    # the recorded generator losses: E log(1 - D) < 0 (saturating), -E log D > 0 (non-saturating)
    assert all(g < 0 for g in sat.losses["g"]) and all(g > 0 for g in ns.losses["g"])
    # the loss is what changes the generator's update: the two generators part
    g = torch.Generator().manual_seed(1)
    z = torch.randn(100, 2, generator=g)
    with torch.no_grad():
        assert not torch.allclose(ns.model.generator(z), sat.model.generator(z))


def test_train_gan_rejects_an_unknown_generator_loss():
    x = data.make_toy("eight_gaussians", 64, seed=0)
    with pytest.raises(ValueError, match="generator_loss must be one of"):
        train_gan(x, steps=1, generator_loss="wasserstein")


def test_eight_gaussians_centres_are_the_default():
    assert SampleJudge(data.make_toy("eight_gaussians", 10, seed=0)).centers is EIGHT_GAUSSIANS_CENTERS
