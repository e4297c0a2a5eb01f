"""Chapter 05's account of the quick model's training (facelab.studies.privacy_diffaim): the book's UNet is a base
UNet fine-tuned in stages, and the tables and curves must count both (not the last stage alone)."""

import json
from types import SimpleNamespace

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from facelab.diffusion.model import QUICK_BASE_CHECKPOINT, QUICK_LOG, QUICK_STAGES
from facelab.studies import privacy_diffaim as study


def _model(info):
    unet = SimpleNamespace(parameters=lambda: [torch.zeros(10)],
                           config=SimpleNamespace(sample_size=16, in_channels=8))
    return SimpleNamespace(info=info, vae=None, unet=unet, image_size=64, text_encoder=None)


def _stage(steps, seconds, loss):
    return {"steps": steps, "train_seconds": seconds, "batch_size": 16, "attention_loss": loss, "distill_weight": 20.0,
            "loss_curve": [{"step": s, "loss": 0.1, "mse": 0.05, "attention": 1.0, "attention_mass": m}
                           for s, m in ((1, 0.1), (steps, 0.6))]}


def test_a_unet_trained_in_one_run_reports_that_run():
    m = _model({"vae_training": {"steps": 30, "batch_size": 8, "train_seconds": 120.0},
                "training": {"steps": 50, "batch_size": 16, "train_seconds": 600.0, "sha256": "ab" * 32}})
    t = study.training_times(m)
    assert list(t.index) == ["autoencoder", "UNet", "total"]
    assert t.loc["total", "steps"] == 80 and t.loc["total", "CPU minutes"] == pytest.approx(12.0)
    assert study.base_unet_log(m) == {}
    table = study.model_table(m)["quick latent diffusion model"]
    assert table["UNet: CPU minutes"] == 10.0 and table["UNet: steps x batch"] == "50 x 16"
    assert table["autoencoder: steps x batch"] == "30 x 8" and "fine-tuning stages" not in table


def test_a_staged_unet_counts_its_base_and_every_stage():
    if not (QUICK_BASE_CHECKPOINT.is_file() and QUICK_LOG.is_file()):
        pytest.skip("the quick latent model is not trained in this checkout")
    base_sha = json.loads(QUICK_BASE_CHECKPOINT.with_suffix(".json").read_text())["sha256"]
    stages = [_stage(100, 60.0, 0.05), _stage(200, 120.0, 0.15)]
    log = {"steps": 200, "batch_size": 16, "train_seconds": 120.0, "train_seconds_total": 180.0, "stages": stages,
           "base_sha256": base_sha}
    m = _model({"vae_training": {"steps": 30, "batch_size": 8, "train_seconds": 120.0}, "training": log})
    base = study.base_unet_log(m)
    assert base["sha256"] == base_sha and base["steps"] > 0
    t = study.training_times(m)
    assert list(t.index) == ["autoencoder", "base UNet", "fine-tuning stages", "total"]
    assert t.loc["fine-tuning stages", "steps"] == 300 and t.loc["fine-tuning stages", "CPU minutes"] == 3.0
    assert t.loc["total", "steps"] == 30 + base["steps"] + 300
    assert t.loc["total", "CPU minutes"] == pytest.approx(2.0 + round(base["train_seconds"] / 60, 1) + 3.0)
    table = study.model_table(m)["quick latent diffusion model"]
    assert table["fine-tuning stages: steps x batch"] == "300 x 16" and table["fine-tuning stages: CPU minutes"] == 3.0
    assert table["base UNet: steps x batch"] == f"{base['steps']} x {base['batch_size']}"
    assert "attention loss 0.05, 0.15" in table["fine-tuning stages"] and "weight 20" in table["fine-tuning stages"]
    # a base that is not the one the log names is not reported as it
    assert study.base_unet_log(_model({"training": {**log, "base_sha256": "0" * 64}})) == {}
    # the curve runs stage after stage, with the attention share on a second axis
    fig = study.plot_training_curve(log)
    ax, ax2 = fig.axes
    x = ax.lines[-1].get_xdata()
    assert list(x) == [1, 100, 101, 300]
    assert ax2.lines[0].get_ydata()[0] == pytest.approx(0.1)


def test_the_committed_unet_log_is_the_staged_recipe():
    if not QUICK_LOG.is_file():
        pytest.skip("the quick latent model is not trained in this checkout")
    log = json.loads(QUICK_LOG.read_text())["log"]
    assert [s["steps"] for s in log["stages"]] == [s["steps"] for s in QUICK_STAGES]
    assert log["train_seconds_total"] == pytest.approx(sum(s["train_seconds"] for s in log["stages"]), abs=0.1)
