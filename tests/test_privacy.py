"""facelab.privacy: DiffAIM guidance and the PGD baseline move faces towards the target within their budgets; the
chapter's protocol in facelab.studies.privacy_diffaim (measured thresholds, success rates with Wilson intervals,
McNemar tests, leave-one-out, SSIM/PSNR); bad input."""

import os

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facelab.core.images import ssim
from facelab.metrics.verification import threshold_at_far
from facelab.models import FaceModel
from facelab.models.synthetic import SynthFaceNet
from facelab.privacy import DiffAIMConfig, NotAFaceError, check_faces, diffaim_protect, pgd_protect
from facelab.studies.privacy_diffaim import (attack_pairs, leave_one_out, paired_tests, quality_table,
                                             strength_sweep, success_outcomes, success_rates, success_table,
                                             summary_table, victim_thresholds)


@pytest.fixture(scope="module")
def faces():
    from facelab.synth import FaceWorld

    b = FaceWorld(seed=0, size=64).sample(n_identities=4, per_identity=1, identity_offset=100000)
    # 32 px keeps the diffusion part of the tests cheap (the synthetic face nets resize to their 64 px input)
    x = torch.nn.functional.interpolate(b.images, size=(32, 32), mode="bilinear", antialias=True).clamp(0, 1)
    return x, b.landmarks / 2, b.labels["identity"].to_numpy()


def _surrogate(arch="synth-plain", seed=0):
    torch.manual_seed(seed)
    return FaceModel(arch, SynthFaceNet(arch).eval().requires_grad_(False), "synth-64")


class _Features(torch.nn.Module):
    """An 'embedder' that returns fixed features per image (looked up by the first pixel)."""

    distance = "cosine"
    differentiable = True
    input_size = 64

    def __init__(self, feats):
        super().__init__()
        self.feats = feats
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.feats[x[:, 0, 0, 0].round().long()]


def _small_quick_model():
    from test_diffusion import _small_quick_model as make

    return make(image_size=32)


def test_diffaim_moves_towards_the_target_within_the_clamp(faces):
    x, lm, ids = faces
    model = _small_quick_model()
    sur = _surrogate()
    tgt, tlm = x.roll(1, 0), lm.roll(1, 0)
    cfg = DiffAIMConfig(num_steps=4, manipulated_steps=2, inner_steps=2, n_augment=1, epsilon=0.05)
    res = diffaim_protect(model, x, tgt, [sur], landmarks=lm, target_landmarks=tlm, config=cfg,
                          source_ids=ids, target_ids=np.roll(ids, 1))
    assert res.images.shape == x.shape and torch.isfinite(res.images).all()
    assert len(res.history) == 4 and res.surrogates == ["synth-plain"]
    with torch.no_grad():
        before = sur.score(sur.embed(x, lm), sur.embed(tgt, tlm))
        after = sur.score(sur.embed(res.images, lm), sur.embed(tgt, tlm))
    assert (after > before).float().mean() >= 0.75
    # the change is bounded: 2 steps x clamp 0.05 in a [-1, 1] latent = at most 0.05 in [0, 1] pixels, plus the
    # (small) change the modified latent makes to the denoiser's output
    assert float((res.images - x).abs().max()) < 0.3
    q = quality_table({"diffaim": res.images}, x)
    assert q.loc["diffaim", "SSIM"] > 0.5


def test_pgd_respects_its_budget_and_increases_the_target_score(faces):
    x, lm, ids = faces
    sur = _surrogate("synth-residual")
    tgt, tlm = x.roll(1, 0), lm.roll(1, 0)
    res = pgd_protect(x, tgt, [sur], landmarks=lm, target_landmarks=tlm, epsilon=4 / 255, steps=3, n_augment=1)
    assert float((res.images - x).abs().max()) <= 4 / 255 + 1e-6
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1
    with torch.no_grad():
        before = sur.score(sur.embed(x, lm), sur.embed(tgt, tlm))
        after = sur.score(sur.embed(res.images, lm), sur.embed(tgt, tlm))
    assert (after > before).all()


def test_same_identity_target_and_bad_configs_are_rejected(faces):
    x, lm, ids = faces
    model = _small_quick_model()
    with pytest.raises(ValueError, match="target identity equals the source identity for pairs \\[0, 1, 2, 3\\]"):
        diffaim_protect(model, x, x, [_surrogate()], landmarks=lm, source_ids=ids, target_ids=ids)
    with pytest.raises(ValueError, match="target identity equals the source"):
        pgd_protect(x, x, [_surrogate()], landmarks=lm, source_ids=ids, target_ids=ids)
    with pytest.raises(ValueError, match="manipulated_steps must lie in"):
        DiffAIMConfig(num_steps=5, manipulated_steps=6)
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError, match="guidance_scale_target must be a finite number >= 0"):
            DiffAIMConfig(guidance_scale_target=bad)
        with pytest.raises(ValueError, match="guidance_scale_source must be a finite number >= 0"):
            DiffAIMConfig(guidance_scale_source=bad)
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        DiffAIMConfig(epsilon=float("nan"))
    with pytest.raises(ValueError, match="perceptual_reference must be"):
        DiffAIMConfig(perceptual_reference="lpips")
    with pytest.raises(ValueError, match="need epsilon > 0"):
        pgd_protect(x, x.roll(1, 0), [_surrogate()], landmarks=lm, epsilon=float("nan"))
    with pytest.raises(ValueError, match="takes 32x32 images; got 16x16"):
        diffaim_protect(model, x[..., ::2, ::2], x.roll(1, 0)[..., ::2, ::2], [_surrogate()], landmarks=lm / 2)
    blackbox = _surrogate()
    blackbox.embedder.differentiable = False
    with pytest.raises(ValueError, match="must be differentiable"):
        diffaim_protect(model, x, x.roll(1, 0), [blackbox], landmarks=lm)


def test_non_faces_are_rejected(faces):
    x, lm, _ = faces
    check_faces(x, lm)  # real synthetic faces pass
    with pytest.raises(NotAFaceError, match="68 landmarks"):
        check_faces(x, lm[:, :5])
    upside_down = lm.clone()
    upside_down[..., 1] = 31 - upside_down[..., 1]
    with pytest.raises(NotAFaceError, match="not in face order"):
        check_faces(x, upside_down)
    with pytest.raises(NotAFaceError, match="outside the image"):
        check_faces(x, lm + 100)
    one_out = lm.clone()
    one_out[2, 8] = torch.tensor([16.0, 40.0])      # the chin of face 2 below a 32 px image (beyond the 10 % margin)
    with pytest.raises(NotAFaceError, match=r"image 2: landmarks outside the image: 1 of 68 points, e.g. point 8 "
                                            r"at \(16.0, 40.0\)"):
        check_faces(x, one_out)
    with pytest.raises(NotAFaceError, match="not finite"):
        check_faces(x, torch.where(torch.arange(68).view(1, 68, 1) == 3, float("nan"), lm))
    model = _small_quick_model()
    with pytest.raises(NotAFaceError, match="outside the image"):
        diffaim_protect(model, x, x.roll(1, 0), [_surrogate()], landmarks=one_out)
    # the attacks run the check themselves
    with pytest.raises(NotAFaceError, match="not in face order"):
        pgd_protect(x, x.roll(1, 0), [_surrogate()], landmarks=upside_down)
    # a recogniser-based check: noise images are far from every known face
    sur = _surrogate()
    with torch.no_grad():
        ref = sur.embed(x, lm)
    noise = torch.rand_like(x)
    with pytest.raises(NotAFaceError, match="best similarity"):
        check_faces(noise, lm, reference=sur, reference_embeddings=ref, min_similarity=0.999)


def test_thresholds_are_measured_with_the_metrics_module():
    rng = np.random.default_rng(0)
    n_id, per = 30, 3
    centres = rng.normal(size=(n_id, 8))
    feats = torch.tensor(np.repeat(centres, per, 0) + 0.3 * rng.normal(size=(n_id * per, 8)), dtype=torch.float32)
    ids = np.repeat(np.arange(n_id), per)
    images = torch.arange(n_id * per, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 64, 64).contiguous()
    m = FaceModel("toy", _Features(feats), "synth-64")
    thr = victim_thresholds({"toy": m}, images, torch.zeros(len(ids), 68, 2), ids)
    fn = torch.nn.functional.normalize(feats, dim=1)
    iu = np.triu_indices(len(ids), 1)
    s = (fn @ fn.T).numpy()[iu]
    lab = ids[iu[0]] == ids[iu[1]]
    assert thr.loc["toy", "FAR=0.01"] == pytest.approx(threshold_at_far(lab, s, 0.01))
    assert thr.loc["toy", "FAR=0.1"] <= thr.loc["toy", "FAR=0.01"] <= thr.loc["toy", "FAR=0.001"]
    assert thr.loc["toy", "n_genuine"] == n_id * 3 and thr.loc["toy", "AUC"] > 0.9
    # success: a protected image identical to its target always passes; a random one rarely does
    r = success_rates(m, images, torch.zeros(len(ids), 68, 2), images, torch.zeros(len(ids), 68, 2),
                      thr.loc["toy"].to_dict())
    assert r["FAR=0.001"] == 1.0
    with pytest.raises(ValueError, match="impostor pairs"):
        victim_thresholds({"toy": m}, images[:6], torch.zeros(6, 68, 2), ids[:6])


def test_leave_one_out_pairs_and_ssim():
    models = {n: _surrogate(n) for n in ("synth-plain", "synth-residual")}
    assert leave_one_out(models, "synth-plain") == ["synth-residual"]
    with pytest.raises(ValueError, match="unknown victim"):
        leave_one_out(models, "dlib")
    pairs = attack_pairs([0, 0, 1, 1, 2, 2], seed=1)
    ids = np.array([0, 0, 1, 1, 2, 2])
    assert (ids[pairs[:, 0]] != ids[pairs[:, 1]]).all()
    with pytest.raises(ValueError, match="at least two identities"):
        attack_pairs([5, 5, 5])
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    from skimage.metrics import structural_similarity

    ref = structural_similarity(x[0].permute(1, 2, 0).numpy(), noisy[0].permute(1, 2, 0).numpy(), channel_axis=2,
                                data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert float(ssim(x, noisy)[0]) == pytest.approx(ref, abs=0.02)


def test_strength_sweep_reuses_done_runs_and_scores_each_strength(faces):
    x, lm, ids = faces
    sur = _surrogate()
    models = {"synth-plain": sur}
    tgt, tlm = x.roll(1, 0), lm.roll(1, 0)
    thr = pd.DataFrame({"FAR=0.1": [0.5]}, index=["synth-plain"])
    calls = []

    def blend(m):                     # "attack" that moves each face a fraction m of the way to its target
        calls.append(m)
        return (x + min(1.0, m) * (tgt - x)).clamp(0, 1)

    curve = strength_sweep({"blend": blend}, (0.0, 0.5, 1.0), victim="synth-plain", models=models, thresholds=thr,
                           originals=x, landmarks=lm, targets=tgt, target_landmarks=tlm, fars=(0.1,),
                           done={("blend", 0.5): blend(0.5)})
    assert calls == [0.5, 0.0, 1.0]   # 0.5 came from `done`, computed once above
    assert list(curve["multiplier"]) == [0.0, 0.5, 1.0]
    assert curve["SSIM"].iloc[0] == pytest.approx(1.0) and curve["SSIM"].is_monotonic_decreasing
    assert curve["FAR=0.1"].iloc[-1] == 1.0        # the target itself always matches


def test_success_table_has_wilson_intervals_and_paired_tests(faces):
    x, lm, ids = faces
    sur = _surrogate()
    models = {"synth-plain": sur}
    tgt, tlm = x.roll(1, 0), lm.roll(1, 0)
    with torch.no_grad():
        s = sur.score(sur.embed(x, lm), sur.embed(tgt, tlm))
    # a threshold between the clean scores: some faces pass already, the target itself always does
    thr = pd.DataFrame({"FAR=0.1": [float(s.median())], "FAR=0.01": [float(s.max()) + 1e-4]}, index=["synth-plain"])
    runs = {("clean", "no attack", "synth-plain"): x, ("target", "no attack", "synth-plain"): tgt}
    outcomes = success_outcomes(runs, models, thr, lm, tgt, tlm, fars=(0.1, 0.01))
    table = success_table(outcomes)
    for far in ("FAR=0.1", "FAR=0.01"):
        assert {f"{far} lo", f"{far} hi"} <= set(table.columns)
        assert ((table[f"{far} lo"] <= table[far]) & (table[far] <= table[f"{far} hi"])).all()
        assert ((table[f"{far} lo"] >= 0) & (table[f"{far} hi"] <= 1)).all()
    assert (table["n"] == len(x)).all()
    row = table.set_index("method").loc["target"]
    assert row["FAR=0.01"] == 1.0 and row["FAR=0.01 hi"] == 1.0 and row["FAR=0.01 lo"] < 1.0   # 4 faces: wide
    summary = summary_table(table, fars=(0.1, 0.01))
    assert (summary["FAR=0.01 lo"] <= summary["FAR=0.01"]).all() and (summary["n"] == len(x)).all()
    test = paired_tests(outcomes, [(("target", "no attack", "synth-plain"), ("clean", "no attack", "synth-plain"))],
                        far=0.01)
    assert test.loc[0, "A only"] == len(x) and test.loc[0, "B only"] == 0
    assert test.loc[0, "p (McNemar)"] == pytest.approx(2 * 0.5 ** len(x))   # exact binomial, 4 discordant faces
    assert test.loc[0, "verdict"] == "no difference shown"                  # 4 faces cannot show one at 5 %
    with pytest.raises(ValueError, match="same faces"):
        bad = {**outcomes, ("short", "x", "synth-plain"): {"FAR=0.01": np.ones(2, bool), "score": np.ones(2)}}
        paired_tests(bad, [(("short", "x", "synth-plain"), ("clean", "no attack", "synth-plain"))])


# ------------------------------------------------------------------------------------ DiffAIM on a latent model
def _token_context(n=2, k=6, d=32, used=3, seed=0):
    """Token states with exact zero rows at the padding (as MiniLMTokenEncoder writes them)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, k, d, generator=g)
    c[:, used:] = 0
    return c


def test_probe_masks_padding_and_reads_the_last_down_block_with_a_per_channel_cosine():
    from facelab.diffusion import UNetProbe
    from facelab.diffusion.hooks import per_channel_cosine
    from facelab.diffusion.model import build_quick_unet

    torch.manual_seed(0)
    unet = build_quick_unet(latent_size=8, cross_attention_dim=32).eval().requires_grad_(False)
    x = torch.randn(2, 4, 8, 8)
    c = _token_context()
    ref = unet(x, 500, encoder_hidden_states=c).sample                 # the model's own masked processor
    c_junk = c.clone()
    c_junk[:, 3:] = 5.0 * torch.randn_like(c_junk[:, 3:])                   # not padding any more: output changes
    assert not torch.allclose(unet(x, 500, encoder_hidden_states=c_junk).sample, ref, atol=1e-4)
    with UNetProbe(unet) as probe:
        assert probe.block is unet.down_blocks[-1]
        probe.reset()
        out = unet(torch.cat([x, x]), 500, encoder_hidden_states=torch.cat([c, c])).sample
        # the recording processor computes the same masked attention: no padding leaks into the output
        assert torch.allclose(out[:2], ref, atol=1e-4) and torch.allclose(out[2:], ref, atol=1e-4)
        assert torch.allclose(probe.semantic_divergence(), torch.zeros(2), atol=1e-5)
        assert torch.allclose(probe.structure, torch.zeros(2), atol=1e-10)
        probe.reset()
        unet(torch.cat([x, x + torch.randn_like(x)]), 500, encoder_hidden_states=torch.cat([c, c]))
        f = probe.features
        assert f.shape[0] == 4 and f.dim() == 4
        a, b = f[:2].reshape(2, f.shape[1], -1), f[2:].reshape(2, f.shape[1], -1)
        manual = 1 - torch.stack([torch.nn.functional.cosine_similarity(a[i], b[i], dim=1).mean() for i in range(2)])
        assert torch.allclose(probe.semantic_divergence(), manual, atol=1e-5)
        assert (probe.structure > 0).all()
    # per-channel cosine differs from the flattened cosine of earlier versions
    p, q = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    p[:, 0] += 10
    q[:, 0] += 10
    flat = torch.nn.functional.cosine_similarity(p.flatten(1), q.flatten(1))
    assert not torch.allclose(per_channel_cosine(p, q), flat, atol=1e-2)
    with pytest.raises(ValueError, match="same shape"):
        per_channel_cosine(p, q[:, :2])
    with pytest.raises(ValueError, match="unknown feature block"):
        UNetProbe(unet, where="up_blocks[0]")


def test_augmentations_are_five_random_copies():
    from facelab.privacy.diffaim import augment_chips

    x = torch.rand(3, 3, 32, 32)
    assert augment_chips(x, 1) is x
    out = augment_chips(x, 5, torch.Generator().manual_seed(0))
    assert out.shape == (15, 3, 32, 32)
    again = augment_chips(x, 5, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_margin_calibration_and_gradient_norm_logging_on_a_latent_model(faces):
    from facelab.diffusion import tiny_stable_diffusion
    from facelab.privacy.diffaim import calibrate_perceptual_margin

    x, lm, ids = faces
    noisy = (x + 4 / 255 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    m = calibrate_perceptual_margin(noisy, x)
    assert m == pytest.approx(float((1 - ssim(noisy, x)).mean()), abs=1e-6) and 0 < m < 0.5
    with pytest.raises(ValueError, match="same shape"):
        calibrate_perceptual_margin(noisy[:2], x)
    sd = tiny_stable_diffusion(32)
    sur = _surrogate()
    cfg = DiffAIMConfig(num_steps=4, manipulated_steps=2, inner_steps=2, n_augment=2, perceptual_margin=m,
                        guidance_scale_target=2.0)                     # CFG: two UNet calls per inner step
    res = diffaim_protect(sd, x, x.roll(1, 0), [sur], landmarks=lm, target_landmarks=lm.roll(1, 0), config=cfg,
                          batch_size=2)
    assert res.images.shape == x.shape and torch.isfinite(res.images).all()
    h = pd.DataFrame(res.history)
    assert len(h) == 2 * 2 * 2                                          # 2 chunks x 2 steps x 2 inner steps
    for k in ("grad identity", "grad perceptual", "grad latent", "at clamp", "1 - SSIM", "semantic", "structure"):
        assert k in h and np.isfinite(h[k]).all()
    assert (h["grad identity"] > 0).all() and (h["at clamp"] <= 1).all()


def test_a_chunk_gives_the_same_result_alone_or_with_others(faces):
    from facelab.studies.privacy_diffaim import invert_in_chunks

    x, lm, ids = faces
    model = _small_quick_model()
    sur = _surrogate()
    cfg = DiffAIMConfig(num_steps=4, manipulated_steps=1, inner_steps=1, n_augment=2, prompt="")
    kw = dict(target_landmarks=lm.roll(1, 0), config=cfg, batch_size=2)
    all4 = diffaim_protect(model, x, x.roll(1, 0), [sur], landmarks=lm,
                           inversion=invert_in_chunks(model, x, cfg, batch_size=2), **kw)
    first = diffaim_protect(model, x[:2], x.roll(1, 0)[:2], [sur], landmarks=lm[:2],
                            inversion=invert_in_chunks(model, x[:2], cfg, batch_size=2),
                            **{**kw, "target_landmarks": lm.roll(1, 0)[:2]})
    assert torch.allclose(all4.images[:2], first.images, atol=1e-5)
    p4 = pgd_protect(x, x.roll(1, 0), [sur], landmarks=lm, target_landmarks=lm.roll(1, 0), steps=2, batch_size=2)
    p2 = pgd_protect(x[:2], x.roll(1, 0)[:2], [sur], landmarks=lm[:2], target_landmarks=lm.roll(1, 0)[:2], steps=2,
                     batch_size=2)
    assert torch.allclose(p4.images[:2], p2.images, atol=1e-6)


def test_the_stored_experiment_round_trip_and_its_tables(faces, tmp_path, monkeypatch):
    from facelab import checkpoints
    from facelab.studies import privacy_diffaim as st

    x, lm, ids = faces
    model = _small_quick_model()
    model.info = {"sha256": "test-model"}
    models = {"synth-plain": _surrogate("synth-plain", 0), "synth-residual": _surrogate("synth-residual", 1)}
    data = {"sources": x, "source_landmarks": lm, "source_ids": ids, "targets": x.roll(1, 0),
            "target_landmarks": lm.roll(1, 0), "target_ids": np.roll(ids, 1)}
    cfg = DiffAIMConfig(num_steps=3, manipulated_steps=1, inner_steps=1, n_augment=1)
    settings = st.experiment_settings(model, cfg, n_faces=4, victims=("synth-plain",),
                                      surrogate_pool=("synth-plain", "synth-residual"), sweep_victim="synth-plain",
                                      diffaim_multipliers=(1.0, 2.0), pgd_multipliers=(0.5, 1.0, 2.0), batch_size=2)
    monkeypatch.setattr(st, "QUICK_RUNS", str(tmp_path / "runs"))
    exp = st.load_or_run_experiment(model, models, settings, data=data, progress=None)
    assert 0 < exp.margin < 1 and exp.config.perceptual_margin == exp.margin
    pgd_white = exp.white_box("PGD")
    assert exp.margin == pytest.approx(float((1 - exp.values(pgd_white, "ssim")).mean()), abs=1e-5)
    # stored and read back: a second call loads instead of running
    again = st.load_or_run_experiment(model, models, settings, data=data, allow_run=False)
    assert np.allclose(again.scores(pgd_white, "synth-plain"), exp.scores(pgd_white, "synth-plain"))
    thr = pd.DataFrame({"FAR=0.1": [0.0], "FAR=0.01": [0.5], "FAR=0.001": [0.9]}, index=["synth-plain"])
    out = st.experiment_outcomes(exp, thr)
    assert set(out) == {("DiffAIM", "white-box", "synth-plain"), ("DiffAIM", "black-box", "synth-plain"),
                        ("PGD", "white-box", "synth-plain"), ("PGD", "black-box", "synth-plain"),
                        ("reconstruction", "no attack", "synth-plain")}
    table = st.success_table(out)
    assert (table["n"] == 4).all() and {"FAR=0.01 lo", "FAR=0.01 hi"} <= set(table.columns)
    curve = st.sweep_table(exp, thr)
    assert list(curve["method"]) == ["DiffAIM"] * 2 + ["PGD"] * 3
    assert curve[curve.method == "PGD"]["SSIM"].is_monotonic_decreasing
    matched = st.matched_ssim_table(curve)
    assert len(matched) == 2 and "nearest PGD point" in matched
    h = st.gradient_norms(exp, exp.black_box("DiffAIM", "synth-plain"))
    assert {"grad identity", "grad perceptual", "perceptual / identity"} <= set(h.columns) and len(h) == 1
    q = st.quality_from_experiment(exp)
    assert set(q["method"]) == {"reconstruction", "DiffAIM", "PGD"}
    live = st.live_check(model, models, exp, data, victim="synth-plain")
    assert (live["max |live - stored| similarity"] < 1e-4).all()
    # a changed setting is not silently loaded
    with pytest.raises(checkpoints.CheckpointError):
        st.load_or_run_experiment(model, models, {**settings, "pgd_epsilon": 1 / 255}, data=data, allow_run=False)
    scale = st.scale_table(st.quick_config(), n_faces=64, published_faces=1000)
    assert scale.loc["gradient steps per face (K x inner)", "published"] == 200
    assert scale.loc["augmentations per gradient step", "scale (this / published)"] == 1.0
