"""Pytest settings for the whole repository (unit tests and ``pytest --nbval`` on the chapters).

The chapters are committed executed in the ``cpu`` profile, so the test run pins that profile: even on a machine
with CUDA, where ``DIFFUSION_LAB_PROFILE`` would default to ``gpu`` (bigger sizes, other numbers), every chapter is
re-run in the ``cpu`` profile and its outputs compared with the committed ones. The notebook kernels nbval starts
inherit this environment. To run a chapter in the gpu profile, open it in Jupyter or Colab instead.
"""
import os

PROFILE = "cpu"


def pytest_configure(config):
    os.environ["DIFFUSION_LAB_PROFILE"] = PROFILE
