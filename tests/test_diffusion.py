"""facelab.diffusion: inversions (exact DDPM, close DDIM), the quick model and its checkpoint, the SD 1.5 code path
at tiny widths, the UNet probe, the training script, and bad input."""

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facelab.diffusion import (QUICK_CHECKPOINT, DiffusionModel, PatchAutoencoder, StableDiffusionPathError,
                               UNetProbe, ddim_inversion, ddpm_inversion, load_stable_diffusion, make_scheduler,
                               psnr, reverse_process, sample, tiny_stable_diffusion)
from facelab.diffusion.model import sha256_of


class _FixedText:
    """A stand-in prompt encoder: a fixed vector per prompt (no MiniLM load in unit tests)."""

    def __init__(self, dim=32):
        self.dim = dim

    def __call__(self, prompts):
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        out = [torch.Generator().manual_seed(sum(map(ord, p)) + 1) for p in prompts]
        return torch.stack([torch.randn(1, self.dim, generator=g) for g in out])


def _small_quick_model(image_size=32, patch=4):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=image_size // patch, in_channels=3 * patch ** 2,
                                out_channels=3 * patch ** 2, layers_per_block=1, block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=2, norm_num_groups=8).eval().requires_grad_(False)
    return DiffusionModel(unet=unet, scheduler=make_scheduler("ddim"), text_encoder=_FixedText(32),
                          vae=PatchAutoencoder(patch), image_size=image_size, name="test-quick")


class _GaussianOracle(torch.nn.Module):
    """The exact noise predictor for data ~ N(mu, s^2 I): eps*(x_t, t) = sqrt(1-a)(x_t - sqrt(a) mu)/(a s^2 + 1 - a).

    With the true denoiser the probability-flow ODE is exact, so DDIM inversion must reconstruct closely."""

    def __init__(self, acp, mu, s):
        super().__init__()
        self.acp, self.mu, self.s = acp, mu, s
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"in_channels": mu.shape[1], "sample_size": mu.shape[-1]})()

    def forward(self, x, t, encoder_hidden_states=None):
        a = self.acp[int(t)]
        eps = (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s ** 2 + 1 - a)
        return type("O", (), {"sample": eps})()


def _faces(n=2, size=32):
    from facelab.synth import FaceWorld

    return FaceWorld(seed=0, size=64).sample(n_identities=n, identity_offset=100000).images[..., ::64 // size,
                                                                                          ::64 // size].contiguous()


def test_ddpm_inversion_is_exact():
    model = _small_quick_model()
    x = _faces(2)
    inv = ddpm_inversion(model, x, num_steps=12, generator=torch.Generator().manual_seed(0))
    assert inv.xts.shape == (13, 2, 48, 8, 8) and inv.residuals.shape == (12, 2, 48, 8, 8)
    assert psnr(reverse_process(model, inv), x).min() >= 40
    # skipping the first steps (the edit-friendly "skip") is exact too
    assert psnr(reverse_process(model, inv, start=9), x).min() >= 40
    # a different target prompt changes the result: the residuals do not simply memorise the image
    other = model.encode_prompt(["something else"] * 2)
    assert psnr(reverse_process(model, inv, cond=other), x).mean() < 60


def test_ddim_inversion_reconstructs_closely_with_the_true_denoiser():
    torch.manual_seed(0)
    sched = make_scheduler("ddim")
    mu = torch.rand(1, 3, 16, 16) * 1.6 - 0.8
    oracle = _GaussianOracle(sched.alphas_cumprod, mu, 0.2)
    model = DiffusionModel(unet=oracle, scheduler=sched, text_encoder=_FixedText(4), vae=None, image_size=16)
    x = ((mu + 0.2 * torch.randn(2, 3, 16, 16)).clamp(-1, 1) + 1) / 2
    inv = ddim_inversion(model, x, num_steps=50)
    assert inv.residuals is None
    rec = reverse_process(model, inv)
    assert psnr(rec, x).min() >= 30
    # the inverted latent is close to Gaussian noise scale, not the image
    assert 0.5 < float(inv.xts[0].std()) < 1.5


def test_sampling_shapes_and_range():
    model = _small_quick_model()
    out = sample(model, ["a face of a person"] * 2, num_steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_tiny_stable_diffusion_runs_the_same_code_path():
    sd = tiny_stable_diffusion(32)
    assert sd.latent_scale == 2 and sd.unet.config.in_channels == 4
    x = _faces(2)
    z = sd.encode(x)
    assert z.shape == (2, 4, 16, 16)
    inv = ddpm_inversion(sd, x, "a photo of a face", num_steps=8, generator=torch.Generator().manual_seed(0))
    # exact in latent space: the reconstruction equals the autoencoder's own round trip
    assert psnr(reverse_process(sd, inv), sd.decode(z)).min() >= 40
    ddim = ddim_inversion(sd, x, num_steps=8)
    assert reverse_process(sd, ddim).shape == x.shape


def test_unet_probe_records_structure_and_mid_features_and_restores_processors():
    model = _small_quick_model()
    before = {k: type(v).__name__ for k, v in model.unet.attn_processors.items()}
    x = torch.randn(2, 48, 8, 8)
    c = model.encode_prompt(["a"] * 4)
    with UNetProbe(model.unet) as probe:
        probe.reset()
        model.unet(torch.cat([x, x]), 10, encoder_hidden_states=c)
        assert torch.allclose(probe.structure, torch.zeros(2), atol=1e-10)
        assert torch.allclose(probe.semantic_divergence(), torch.zeros(2), atol=1e-5)
        probe.reset()
        model.unet(torch.cat([x, x + torch.randn_like(x)]), 10, encoder_hidden_states=c)
        assert (probe.structure > 0).all() and (probe.semantic_divergence() > 0).all()
    assert {k: type(v).__name__ for k, v in model.unet.attn_processors.items()} == before


def test_quick_checkpoint_is_small_and_matches_its_log():
    if not QUICK_CHECKPOINT.is_file():
        pytest.skip("quick checkpoint not trained in this checkout")
    assert QUICK_CHECKPOINT.stat().st_size <= 25 * 2 ** 20
    side = json.loads(QUICK_CHECKPOINT.with_suffix(".json").read_text())
    assert side["sha256"] == sha256_of(QUICK_CHECKPOINT)
    assert side["log"]["loss_curve"][-1]["loss"] < side["log"]["loss_curve"][0]["loss"]
    from facelab.diffusion import load_quick_model, quick_model

    m = load_quick_model(text_encoder=_FixedText(384))
    assert m.image_size == 64 and m.unet.config.in_channels == 48
    m2 = quick_model(text_encoder=_FixedText(384), allow_train=False)   # up to date: loads, never trains
    assert m2.info["training"]["steps"] == 16326 and m2.info["sha256"] == side["sha256"]


def test_training_script_writes_checkpoint_and_log(tmp_path, monkeypatch):
    from facelab.diffusion import train as train_mod

    monkeypatch.setattr(train_mod, "MiniLMTextEncoder", type("T", (_FixedText,), {"dim": 384,
                                                                                  "__init__": lambda self: None}))
    out = tmp_path / "m.safetensors"
    log = train_mod.train(steps=2, minutes=1, batch_size=2, n_identities=2, per_identity=1, out=out, log_every=1)
    assert out.is_file() and log["steps"] == 2 and log["sha256"] == sha256_of(out)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["log"]["loss_curve"][0]["step"] == 1 and side["settings"]["n_identities"] == 2
    from facelab.diffusion import load_quick_model

    m = load_quick_model(out, text_encoder=_FixedText(384))
    assert m.unet.config.sample_size == 16


def test_bad_sizes_and_ranges_are_clear_errors():
    model = _small_quick_model()
    with pytest.raises(ValueError, match="takes 32x32 images; got 48x48"):
        ddpm_inversion(model, torch.rand(1, 3, 48, 48), num_steps=2)
    with pytest.raises(ValueError, match="expects float images"):
        model.encode(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        model.encode(torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="one prompt or one per image"):
        ddpm_inversion(model, torch.rand(2, 3, 32, 32), ["a", "b", "c"], num_steps=2)
    with pytest.raises(ValueError, match="eta > 0"):
        ddpm_inversion(model, torch.rand(1, 3, 32, 32), num_steps=2, eta=0)


def test_missing_stable_diffusion_path_is_a_clear_error(tmp_path):
    with pytest.raises(StableDiffusionPathError, match="SD_PATH"):
        load_stable_diffusion(None)
    with pytest.raises(StableDiffusionPathError, match="does not exist"):
        load_stable_diffusion(tmp_path / "nowhere")
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    with pytest.raises(StableDiffusionPathError, match="lacks vae/, text_encoder/, tokenizer/, scheduler/"):
        load_stable_diffusion(tmp_path / "sd")
