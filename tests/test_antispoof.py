"""Tests of facelab.antispoof (ViT, Soft MoE, losses, CLIP pretraining, detectors, OpenCLIP mapping, data) and of
chapter 04's study (facelab.studies.face_antispoofing: protocols, ablation, bootstrap intervals, figures)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facelab import antispoof as A
from facelab.antispoof.openclip import convert_openclip_state_dict, load_openclip_visual
from facelab.studies import face_antispoofing as S

TINY = A.ViTConfig(image_size=16, patch_size=4, width=16, layers=2, heads=2, embed_dim=16)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # these models are tiny: one thread is faster than two, and far faster on a loaded machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ Soft MoE
@pytest.mark.parametrize("groups", [1, 4])
def test_soft_moe_weights_are_normalised_along_the_right_axes(groups):
    moe = A.SoftMoE(dim=16, hidden=32, n_experts=3, slots_per_expert=2, groups=groups)
    x = torch.randn(2, 7, 16)
    dispatch, combine = moe.routing(x)
    assert dispatch.shape == combine.shape == (2, 7, groups, 6)
    torch.testing.assert_close(dispatch.sum(dim=1), torch.ones(2, groups, 6))  # each slot: convex mix of tokens
    torch.testing.assert_close(combine.sum(dim=3), torch.ones(2, 7, groups))   # each token: convex mix of slots
    assert moe(x).shape == x.shape


@pytest.mark.parametrize("groups", [1, 2])
def test_soft_moe_is_permutation_equivariant_over_tokens(groups):
    moe = A.SoftMoE(dim=8, hidden=16, n_experts=2, slots_per_expert=3, groups=groups)
    x = torch.randn(3, 9, 8)
    perm = torch.randperm(9)
    torch.testing.assert_close(moe(x[:, perm]), moe(x)[:, perm], atol=1e-5, rtol=1e-5)


def test_soft_moe_matches_the_paper_formula_for_one_group():
    moe = A.SoftMoE(dim=8, hidden=16, n_experts=2, slots_per_expert=2, groups=1)
    x = torch.randn(1, 5, 8)
    L = moe.scale * torch.nn.functional.normalize(x[0], dim=-1) @ torch.nn.functional.normalize(moe.phi[0], dim=0)
    D, C = L.softmax(0), L.softmax(1)
    slots = D.t() @ x[0]  # (4, 8)
    ys = []
    for j in range(4):
        e = j // 2
        ys.append(moe.act(slots[j] @ moe.w1[e] + moe.b1[e]) @ moe.w2[e] + moe.b2[e])
    torch.testing.assert_close(moe(x)[0], C @ torch.stack(ys), atol=1e-5, rtol=1e-5)


def test_upcycled_moe_reproduces_the_mlp_on_identical_tokens():
    vit = A.VisionTransformer(TINY)
    mlp = vit.transformer.resblocks[-1].mlp
    moe = A.SoftMoE.from_mlp(mlp, n_experts=3, slots_per_expert=2, groups=2, noise=0.0)
    torch.testing.assert_close(moe.w1[1], mlp.c_fc.weight.t())
    token = torch.randn(16)
    x = token.expand(2, 5, 16).contiguous()  # every slot averages identical tokens -> the token itself
    torch.testing.assert_close(moe(x), mlp(x), atol=1e-5, rtol=1e-5)


def test_soft_moe_bad_input():
    with pytest.raises(ValueError, match="divisor"):
        A.SoftMoE(dim=10, hidden=8, groups=3)
    with pytest.raises(ValueError, match=r"\(batch, tokens, 8\)"):
        A.SoftMoE(dim=8, hidden=8)(torch.randn(2, 5, 6))


# ------------------------------------------------------------------------------------------------ ViT
def test_vit_shapes_split_and_moe_swap():
    vit = A.VisionTransformer(TINY).eval()
    x = torch.rand(3, 3, 16, 16)
    out = vit(x)
    assert out.shape == (3, 16)
    torch.testing.assert_close(vit.head(vit.tokens(x, stop=1), start=1), out)
    vit.to_moe(last=1, n_experts=2, slots_per_expert=2, groups=2)
    assert isinstance(vit.transformer.resblocks[1].mlp, A.ParallelMoE)
    assert not isinstance(vit.transformer.resblocks[0].mlp, (A.SoftMoE, A.ParallelMoE))
    assert vit(x).shape == (3, 16)


@pytest.mark.parametrize("bad, match", [
    (torch.rand(2, 3, 20, 20), "16x16"),
    (torch.rand(2, 1, 16, 16), "3 colour channels"),
    (torch.rand(2, 4, 16, 16), "got 4 channels"),
    (torch.rand(3, 16, 16), "add a batch axis"),
    (torch.randint(0, 255, (2, 3, 16, 16)), "floating point"),
])
def test_vit_rejects_wrong_images(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        A.VisionTransformer(TINY)(bad)


# ------------------------------------------------------------------------------------------------ losses
def test_dm_increases_centre_distance():
    f = torch.randn(40, 8) * 0.3 + torch.randn(8)
    y = torch.arange(40) % 2
    f.requires_grad_(True)
    before = A.centre_distance(f, y)
    opt = torch.optim.Adam([f], lr=0.05)
    for _ in range(60):
        loss = A.disentanglement_loss(f, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert 0.0 <= loss.item() <= 1.0
    assert A.centre_distance(f, y) > before + 0.5


def test_dm_bounds():
    y = torch.tensor([1, 1, 0, 0])
    e = torch.eye(4)[:1]
    antipodal = torch.cat([e, e, -e, -e])
    assert float(A.disentanglement_loss(antipodal, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(A.disentanglement_loss(torch.cat([e] * 4), y)) == pytest.approx(1.0)


def test_cdm_zero_on_separated_centres_positive_otherwise():
    y = torch.tensor([1, 1, 1, 0, 0])
    c = torch.eye(6)[:2]
    on_centres = torch.stack([c[1], c[1], c[1], c[0], c[0]])
    assert float(A.cluster_distillation_loss(on_centres, y, margin=1.0)) == pytest.approx(0.0, abs=1e-6)
    moved = on_centres.clone()
    moved[0] = moved[0] + 0.8 * torch.eye(6)[3]
    assert float(A.cluster_distillation_loss(moved, y, margin=1.0)) > 0.01
    # too close centres violate the push margin even when every feature sits on its centre
    close = torch.stack([c[1], c[1], c[1], c[1] + 0.2 * c[0], c[1] + 0.2 * c[0]])
    assert float(A.cluster_distillation_loss(close, y, margin=1.0)) > 0.5


def test_cdm_weights_distant_features_more():
    y = torch.tensor([1, 1, 0, 0, 0, 0])
    f = torch.tensor([[1.0, 0.05, 0, 0], [1.0, 0.0, 0, 0], [0, 0, 1.0, 0.0], [0, 0, 1.0, 0.02], [0, 0, 1.0, -0.02],
                      [0, 0, 1.0, 0.9]], requires_grad=True)
    A.cluster_distillation_loss(f, y, margin=0.0, temperature=0.05).backward()
    g = f.grad.norm(dim=1)
    assert g[5] > 5 * g[2:5].max()  # the far fake feature (an unusual attack) gets most of the pull
    f.grad = None
    A.cluster_distillation_loss(f, y, margin=0.0, temperature=float("inf")).backward()
    g_flat = f.grad.norm(dim=1)
    assert g_flat[5] / g_flat[2:5].max() < g[5] / g[2:5].max()


# ------------------------------------------------------------------------------------------------ CLIP
def test_clip_loss_prefers_matching_pairs():
    t = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    idx = torch.tensor([0, 1, 2, 0, 1])
    good = A.clip_loss(t[idx], t, idx, math.log(10))
    bad = A.clip_loss(t[idx.roll(1)], t, idx, math.log(10))
    assert float(good) < float(bad)


def test_pretraining_aligns_images_and_captions():
    clip = A.CLIPModel(A.VisionTransformer(TINY), A.BagOfWordsTextTower(dim=16))
    x = torch.rand(64, 3, 16, 16) * 0.5 + 0.25
    caps = ["a face of a person"] * 32 + ["a face of a person with red lipstick"] * 32
    x[32:, 0] += 0.3  # the "lipstick" images are redder
    hist = A.pretrain_clip(clip, x.clamp(0, 1), caps, steps=60, batch_size=32, lr=3e-3)
    assert list(hist.columns) == ["step", "loss", "accuracy"]
    assert hist["loss"].tail(10).mean() < hist["loss"].head(5).mean() - 0.3
    with pytest.raises(ValueError, match="one caption per image"):
        A.pretrain_clip(clip, x, caps[:10], steps=1)
    with pytest.raises(ValueError, match="Unknown condition"):
        A.corrupt(x, "sepia")


# ------------------------------------------------------------------------------------------------ detectors
def _toy(n=64):
    x = torch.rand(n, 3, 16, 16) * 0.6
    live = np.arange(n) % 2
    x[live == 1] += 0.35  # live faces are brighter
    return x.clamp(0, 1), live


def _clip():
    return A.CLIPModel(A.VisionTransformer(TINY), A.BagOfWordsTextTower(dim=16))


def test_detector_learns_and_dm_cdm_separate_centres():
    x, live = _toy()
    clip = _clip()
    det = A.AttackDetector.from_clip(clip, moe={"last": 1, "n_experts": 2, "slots_per_expert": 2, "groups": 2})
    hist = A.train_detector(det, x, live, A.TrainConfig(steps=40, batch_size=32, lr=3e-3, lambda_dm=1.0,
                                                        lambda_cdm=1.0, finetune_last=1, log_every=5))
    assert {"ce", "dm", "cdm", "centre_distance"} <= set(hist.columns)
    p = A.predict_live(det, x)
    assert p.shape == (64,) and np.all((p >= 0) & (p <= 1))
    from facelab.metrics import pad_report
    assert pad_report(live, p)["AUC"] > 0.95
    assert hist["centre_distance"].iloc[-1] > hist["centre_distance"].iloc[0]
    # frozen blocks stayed frozen
    fresh = A.AttackDetector.from_clip(clip)
    torch.testing.assert_close(det.visual.conv1.weight, fresh.visual.conv1.weight)


def test_upcycling_gap_measures_how_far_the_moe_starts_from_the_dense_tower():
    x, _ = _toy()
    clip = _clip()
    moe = {"last": 1, "n_experts": 2, "slots_per_expert": 4, "groups": 1}
    det = A.AttackDetector.from_clip(clip, moe={**moe, "mode": "replace"})
    gap = A.upcycling_gap(clip, det, x)
    assert list(gap.index) == ["block 2 of 2", "image embedding"]
    ent = gap.loc["block 2 of 2", "dispatch entropy / log(tokens)"]
    assert 0.9 < ent <= 1.0 + 1e-6                   # fresh routing at scale 1: every slot is nearly the average token
    cos = gap["cosine to dense MLP output"]
    assert (cos.abs() <= 1 + 1e-6).all() and cos["image embedding"] < 0.999
    with torch.no_grad():                            # sharper routing: slots read fewer tokens
        det.visual.transformer.resblocks[-1].mlp.scale.fill_(50.0)
    assert A.upcycling_gap(clip, det, x).loc["block 2 of 2", "dispatch entropy / log(tokens)"] < ent - 0.2
    with pytest.raises(ValueError, match="no Soft MoE"):
        A.upcycling_gap(clip, A.AttackDetector.from_clip(clip), x)


def test_parallel_upcycling_preserves_the_dense_tower_at_initialisation():
    x, _ = _toy()
    clip = _clip()
    det = A.AttackDetector.from_clip(clip, moe={"last": 2, "n_experts": 2, "slots_per_expert": 4, "groups": 2},
                                     generator=torch.Generator().manual_seed(0))
    blocks = det.visual.transformer.resblocks
    assert all(isinstance(b.mlp, A.ParallelMoE) for b in blocks)
    assert float(blocks[-1].mlp.gate.detach()) == 0.0 and float(blocks[-1].mlp.scale.detach()) == 10.0
    gap = A.upcycling_gap(clip, det, x)
    assert (gap["cosine to dense MLP output"] >= 0.99).all()          # the bar; here it is exact
    torch.testing.assert_close(det.visual(x), clip.visual(x), atol=1e-5, rtol=1e-5)
    # the routing reads the patch tokens only, and a scale of 10 makes it far from uniform
    tokens = det.visual.tokens(x[:2], stop=1)
    h = blocks[1].ln_2(blocks[1].attention_residual(tokens))
    dispatch, combine = blocks[1].mlp.routing(h)
    assert dispatch.shape == (2, h.shape[1] - 1, 2, 8)
    torch.testing.assert_close(dispatch.sum(1), torch.ones(2, 2, 8))
    assert gap.iloc[:2]["dispatch entropy / log(tokens)"].max() < 0.97
    # with the gate open, [CLS] still goes through the dense MLP only, the patch tokens change
    with torch.no_grad():
        blocks[1].mlp.gate.fill_(1.0)
    y, ref = blocks[1].mlp(h), blocks[1].mlp.dense(h)
    torch.testing.assert_close(y[:, 0], ref[:, 0])
    assert (y[:, 1:] - ref[:, 1:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="mode must be"):
        A.VisionTransformer(TINY).to_moe(mode="swap")
    with pytest.raises(ValueError, match="scale must be a positive"):
        A.SoftMoE(dim=8, hidden=8, scale=0.0)
    with pytest.raises(ValueError, match="ParallelMoE expects tokens"):
        blocks[1].mlp(torch.randn(2, 1, 16))


def test_the_final_block_can_stay_dense_and_the_gate_opens_during_training():
    v = A.VisionTransformer(TINY).to_moe(last=2, final=False)
    assert isinstance(v.transformer.resblocks[0].mlp, A.ParallelMoE)
    assert not isinstance(v.transformer.resblocks[1].mlp, (A.ParallelMoE, A.SoftMoE))
    with pytest.raises(ValueError, match="no block to upcycle"):
        A.VisionTransformer(TINY).to_moe(last=1, final=False)
    x, live = _toy()
    det = A.AttackDetector.from_clip(_clip(), moe={"last": 2, "final": False, "n_experts": 2, "slots_per_expert": 2,
                                                   "groups": 1})
    A.train_detector(det, x, live, A.TrainConfig(steps=20, batch_size=32, lr=3e-3, finetune_last=2))
    gate = float(det.visual.transformer.resblocks[0].mlp.gate.detach())
    assert abs(gate) > 0.02                       # learns at 10x the rate: it leaves 0 within a short schedule


@pytest.mark.parametrize("what", ["gate", "routing scale"])
def test_training_stops_with_a_clear_message_when_the_routing_becomes_nan(what):
    x, live = _toy(32)
    det = A.AttackDetector.from_clip(_clip(), moe={"last": 1, "n_experts": 2, "slots_per_expert": 2, "groups": 1})
    mlp = det.visual.transformer.resblocks[-1].mlp
    with torch.no_grad():
        (mlp.gate if what == "gate" else mlp.scale).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=f"the {what} of the Soft MoE .* became nan at training step 0"):
        A.train_detector(det, x, live, A.TrainConfig(steps=3, batch_size=16, finetune_last=1))


def test_live_only_compaction_pulls_the_live_class_only():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([1] * 8 + [0] * 8)
    f = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1).requires_grad_(True)
    both = A.cluster_distillation_loss(f, y, margin=0.0, compact="both")
    live = A.cluster_distillation_loss(f, y, margin=0.0, compact="live")
    assert float(live.detach()) < float(both.detach())
    live.backward()
    assert f.grad[y == 0].abs().max() == 0 and f.grad[y == 1].abs().max() > 0   # no pull on fakes, margin 0
    # the distant-feature weighting is kept: the farthest live feature gets the largest pull
    norms = f.grad[y == 1].norm(dim=1)
    c = torch.nn.functional.normalize(f.detach()[y == 1].mean(0), dim=0)
    assert int(norms.argmax()) == int((1 - f.detach()[y == 1] @ c).argmax())
    with pytest.raises(ValueError, match="compact must be"):
        A.cluster_distillation_loss(f, y, compact="fake")


def test_throughput_counts_images_per_second(monkeypatch):
    import facelab.antispoof.diagnostics as E

    clock = iter([0.0, 0.5, 1.0, 1.25, 2.0, 3.0])        # three timed runs: 0.5 s, 0.25 s, 1 s
    monkeypatch.setattr(E.time, "perf_counter", lambda: next(clock))
    calls = []
    monkeypatch.setattr(E, "predict_live", lambda m, x, bs: calls.append((x.shape[0], bs)))
    assert E.throughput(object(), torch.zeros(40, 3, 16, 16), repeats=3, batch_size=16) == pytest.approx(160.0)
    assert calls == [(8, 16), (40, 16), (40, 16), (40, 16)]   # one warm-up batch, then the best of three
    with pytest.raises(ValueError, match="repeats"):
        E.throughput(object(), torch.zeros(4, 3, 16, 16), repeats=0)


def test_cnn_and_probe_baselines():
    x, live = _toy()
    cnn = A.CNNBaseline(image_size=16, width=8, embed_dim=16)
    A.train_detector(cnn, x, live, A.TrainConfig(steps=40, batch_size=32, lr=3e-3))
    assert np.mean((A.predict_live(cnn, x) > 0.5) == live) > 0.9
    probe = A.LinearProbe(_clip()).fit(x, live)
    assert A.predict_live(probe, x).shape == (64,)
    with pytest.raises(RuntimeError, match="not fitted"):
        A.LinearProbe(_clip()).predict_live(x)


def test_cnn_runs_channels_last_with_the_values_of_the_standard_layout():
    cnn = A.CNNBaseline(image_size=16, width=8, embed_dim=16, seed=0).eval()
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        standard = cnn.classifier(cnn.features((x - 0.5) / 0.25))       # the forward before 2026-12-05
        torch.testing.assert_close(cnn(x), standard, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cnn.embed(x), F.normalize(cnn.features((x - 0.5) / 0.25), dim=-1), atol=1e-5,
                                   rtol=1e-5)
    assert cnn.features[0][0].weight.is_contiguous()                       # the weights keep their layout


def test_cnn_training_reads_its_batches_channels_last_with_the_values_of_the_standard_layout(monkeypatch):
    """train_detector feeds the CNN through ``_normalised`` (channels-last), so its training runs in the layout the
    speed was measured in; a short run gives the losses of the standard layout to rounding."""
    x = torch.rand(48, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    live = np.arange(48) % 2
    cfg = A.TrainConfig(steps=3, batch_size=16, lr=3e-3, log_every=1)
    seen = []
    real = A.CNNBaseline._normalised

    def spy(self, images):
        out = real(self, images)
        seen.append(out.is_contiguous(memory_format=torch.channels_last))
        return out

    monkeypatch.setattr(A.CNNBaseline, "_normalised", spy)
    fast = A.train_detector(A.CNNBaseline(image_size=16, width=8, embed_dim=16, seed=0), x, live, cfg,
                            generator=torch.Generator().manual_seed(1))
    assert len(seen) == 3 and all(seen)
    monkeypatch.setattr(A.CNNBaseline, "_normalised", lambda self, images: (images - 0.5) / 0.25)
    standard = A.train_detector(A.CNNBaseline(image_size=16, width=8, embed_dim=16, seed=0), x, live, cfg,
                                generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(fast["loss"].to_numpy(), standard["loss"].to_numpy(), atol=1e-5)


def test_seeded_constructors_leave_the_global_rng_alone():
    torch.manual_seed(5)
    a = A.CNNBaseline(image_size=16, width=8, embed_dim=16)
    state = torch.get_rng_state()
    b = A.CNNBaseline(image_size=16, width=8, embed_dim=16, seed=5, device="cpu")
    c1 = A.build_clip(image_size=16, patch_size=4, width=16, layers=1, heads=2, text="bow", seed=3)
    assert torch.equal(torch.get_rng_state(), state)                  # seeded builds do not advance the global RNG
    torch.testing.assert_close(a.classifier.weight, b.classifier.weight)   # same weights as after manual_seed(5)
    c2 = A.build_clip(image_size=16, patch_size=4, width=16, layers=1, heads=2, text="bow", seed=3)
    assert torch.equal(c1.visual.conv1.weight, c2.visual.conv1.weight)


def test_training_rejects_bad_input():
    x, live = _toy(8)
    det = A.AttackDetector.from_clip(_clip())
    with pytest.raises(ValueError, match="only one class"):
        A.train_detector(det, x, np.ones(8, int), A.TrainConfig(steps=1))
    with pytest.raises(ValueError, match="16x16"):
        A.train_detector(det, torch.rand(8, 3, 32, 32), live, A.TrainConfig(steps=1))
    with pytest.raises(ValueError, match="3 colour channels"):
        A.predict_live(det, torch.rand(8, 1, 16, 16))
    with pytest.raises(ValueError, match="Unknown variant"):
        S.fit_variant("CLIP + magic", _clip(), None)


# ------------------------------------------------------------------------------------------------ OpenCLIP
def _openclip_like_state(width=16, layers=2, patch=4, grid=4, embed=8):
    """A random state dict with OpenCLIP's key names, written out by hand (not from our module)."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {"visual.conv1.weight": r(width, 3, patch, patch), "visual.class_embedding": r(width),
          "visual.positional_embedding": r(grid * grid + 1, width), "visual.ln_pre.weight": r(width),
          "visual.ln_pre.bias": r(width), "visual.ln_post.weight": r(width), "visual.ln_post.bias": r(width),
          "visual.proj": r(width, embed), "logit_scale": torch.tensor(4.6), "token_embedding.weight": r(10, embed),
          "text_projection": r(embed, embed)}
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}."
        sd |= {p + "ln_1.weight": r(width), p + "ln_1.bias": r(width), p + "attn.in_proj_weight": r(3 * width, width),
               p + "attn.in_proj_bias": r(3 * width), p + "attn.out_proj.weight": r(width, width),
               p + "attn.out_proj.bias": r(width), p + "ln_2.weight": r(width), p + "ln_2.bias": r(width),
               p + "mlp.c_fc.weight": r(4 * width, width), p + "mlp.c_fc.bias": r(4 * width),
               p + "mlp.c_proj.weight": r(width, 4 * width), p + "mlp.c_proj.bias": r(width)}
    return sd


def test_openclip_mapping_on_a_tiny_random_checkpoint(tmp_path):
    from safetensors.torch import save_file

    sd = _openclip_like_state()
    path = tmp_path / "open_clip_model.safetensors"
    save_file(sd, str(path))
    vit = load_openclip_visual(path, heads=2)
    c = vit.config
    assert (c.image_size, c.patch_size, c.width, c.layers, c.embed_dim, c.act) == (16, 4, 16, 2, 8, "quick_gelu")
    torch.testing.assert_close(vit.transformer.resblocks[1].attn.in_proj_weight,
                               sd["visual.transformer.resblocks.1.attn.in_proj_weight"])
    torch.testing.assert_close(vit.proj, sd["visual.proj"])
    assert vit(torch.rand(2, 3, 16, 16)).shape == (2, 8)
    # a different image size resamples the positional embedding; the [CLS] entry is kept
    state, cfg = convert_openclip_state_dict(sd, image_size=24, heads=2)
    assert state["positional_embedding"].shape == (37, 16) and cfg.image_size == 24
    torch.testing.assert_close(state["positional_embedding"][0], sd["visual.positional_embedding"][0])
    # torch pickles (weights_only) and a DataParallel prefix work too
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "m.bin")
    assert load_openclip_visual(tmp_path / "m.bin", heads=2).config.layers == 2


def test_openclip_refuses_clearly():
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_openclip_visual("/nonexistent/ViT-B-16.pt")
    with pytest.raises(FileNotFoundError, match="No OpenCLIP weights"):
        load_openclip_visual(None)
    sd = _openclip_like_state()
    del sd["visual.transformer.resblocks.1.mlp.c_fc.bias"]
    with pytest.raises(KeyError, match="missing"):
        convert_openclip_state_dict(sd)
    with pytest.raises(KeyError, match="not an OpenCLIP ViT"):
        convert_openclip_state_dict({"foo": torch.zeros(1)})


# ------------------------------------------------------------------------------------------------ data
def _fake_set():
    kinds = list(A.attack_kinds())
    rows = [{"identity": i, "live": k == "live", "attack": k,
             "family": "live" if k == "live" else A.attack_kinds()[k]}
            for i in range(6) for k in ["live", *kinds]]
    return A.AttackSet(torch.rand(len(rows), 3, 16, 16), pd.DataFrame(rows))


def test_protocol_splits_hold_out_types_and_identities():
    data = _fake_set()
    for protocol, test_family in [("P2.1", "physical"), ("P2.2", "digital")]:
        train, test = S.split_protocol(data, protocol, test_fraction=0.34)
        assert set(train.labels["family"]) == {"live", "digital" if test_family == "physical" else "physical"}
        assert set(test.labels["family"]) == {"live", test_family}
        assert not set(train.labels["identity"]) & set(test.labels["identity"])
    train, test = S.split_protocol(data, "P1")
    assert set(train.attack) == set(test.attack) == {"live", *A.attack_kinds()}


def test_unknown_attack_type_is_an_error():
    data = _fake_set()
    with pytest.raises(ValueError, match="Unknown attack type"):
        data.only(["print", "scan"])
    labels = data.labels.copy()
    labels.loc[0, "attack"] = "deepfake"
    with pytest.raises(ValueError, match="Unknown attack type"):
        A.AttackSet(data.images, labels)
    with pytest.raises(ValueError, match="Unknown attack"):
        S.build_attack_set(None, 2, 1, kinds=["print", "hologram"])


def test_attack_set_from_the_synthetic_world():
    from facelab.synth import FaceWorld

    data = S.build_attack_set(FaceWorld(seed=0, size=32), 2, 1, size=16, kinds=["print", "morph"],
                              generator=torch.Generator().manual_seed(0))
    assert data.images.shape == (6, 3, 16, 16)
    assert list(data.attack) == ["live", "live", "print", "print", "morph", "morph"]
    assert list(data.live) == [1, 1, 0, 0, 0, 0]


# ------------------------------------------------------------------------------------------------ the study
def _tiny_ablation(seeds=(0,)):
    data = _fake_set_of(12)
    clip = A.CLIPModel(A.VisionTransformer(TINY), A.BagOfWordsTextTower(dim=16))
    cfg = A.TrainConfig(steps=3, batch_size=16, finetune_last=1)
    return S.run_ablation(clip, data, protocols=["P1", "P2.2"], variants=["CNN baseline", "CLIP fine-tune",
                                                                          "CLIP + FG-MoE"],
                          config=cfg, seeds=seeds, test_fraction=0.34, moe={"last": 1, "n_experts": 2,
                                                                            "slots_per_expert": 2, "groups": 2},
                          device="cpu")


def _fake_set_of(n_identities):
    kinds = list(A.attack_kinds())
    rows = [{"identity": i, "live": k == "live", "attack": k,
             "family": "live" if k == "live" else A.attack_kinds()[k]}
            for i in range(n_identities) for k in ["live", *kinds]]
    x = torch.rand(len(rows), 3, 16, 16) * 0.6
    x[torch.as_tensor([r["live"] for r in rows])] += 0.3
    return A.AttackSet(x.clamp(0, 1), pd.DataFrame(rows))


def test_ablation_scores_from_cached_test_tokens_equal_the_full_forward():
    # run_ablation scores the CLIP variants from the frozen blocks' tokens of the test images, computed once per
    # protocol: the scores must be exactly those of predict_live on the images
    res = _tiny_ablation()
    for p in ("P1", "P2.2"):
        test = res.splits[p][1]
        for v in ("CLIP fine-tune", "CLIP + FG-MoE"):
            np.testing.assert_array_equal(res.scores[p, v], A.predict_live(res.models[p, v], test.images))
    model, test = res.models["P1", "CLIP + FG-MoE"], res.splits["P1"][1]
    with pytest.raises(ValueError, match="tokens hold"):
        S.evaluate(model, test, tokens=torch.zeros(1, 5, 8), finetune_last=1)


def test_ablation_tables_carry_bootstrap_intervals():
    res = _tiny_ablation(seeds=(0, 1))
    assert res.seed_scores["P1", "CNN baseline"].shape[0] == 2
    checks = {"fine-tune < CNN": ("ACER", "CLIP fine-tune", "CNN baseline", "lower"),
              "AUC: FG-MoE > fine-tune": ("AUC", "CLIP + FG-MoE", "CLIP fine-tune", "higher"),
              "absent variant": ("ACER", S.FULL_MODEL, "CNN baseline", "lower")}
    iv = S.ablation_intervals(res, checks=checks, n_boot=50, seed=0)
    assert iv.unit == "identity" and iv.n_boot == 50
    m = iv.metrics
    assert len(m) == 2 * 3 * 3 and set(m["metric"]) == {"ACER", "AUC", "EER"}
    assert ((m["lo"] <= m["value"] + 1e-12) & (m["value"] <= m["hi"] + 1e-12)).all()
    # the point estimate is the table's (mean over seeds) value
    acer = iv.table("ACER")
    assert list(acer.columns) == [(p, c) for p in ("P1", "P2.2") for c in ("value", "lo", "hi")]
    np.testing.assert_allclose(acer[("P1", "value")].to_numpy(), res.pivot("ACER")["P1"].to_numpy())
    for p in ("P1", "P2.2"):
        assert (acer[p, "lo"] <= acer[p, "value"]).all() and (acer[p, "value"] <= acer[p, "hi"]).all()
    cells = iv.formatted("AUC")
    assert cells.shape == (3, 2) and all("[" in c for c in cells.to_numpy().ravel())
    c = iv.checks
    assert set(c["check"]) == {"fine-tune < CNN", "AUC: FG-MoE > fine-tune"}   # absent variants are skipped
    assert ((c["lo"] <= c["difference"] + 1e-12) & (c["difference"] <= c["hi"] + 1e-12)).all()
    assert set(c["verdict"]) <= {"yes", "no (reversed)", "not resolved"}
    assert iv.verdicts().shape == (2, 2)
    words = S.summarise_checks(iv)
    assert words.count("\n") == 2 and "fine-tune < CNN" in words
    with pytest.raises(ValueError, match="direction"):
        S.ablation_intervals(res, checks={"x": ("ACER", "a", "b", "smaller")}, n_boot=5)
    with pytest.raises(ValueError, match="metric must be one of"):
        iv.table("HTER")


def test_paired_check_verdicts_follow_the_interval():
    data = _fake_set_of(20)
    y = data.live
    rng = np.random.default_rng(0)
    good = np.where(y == 1, 0.9, 0.1) + rng.normal(0, 0.01, len(y))         # perfect
    bad = rng.random(len(y))                                                 # chance
    checks = {"good < bad": ("ACER", "good", "bad", "lower"), "bad < good": ("ACER", "bad", "good", "lower"),
              "AUC good > bad": ("AUC", "good", "bad", "higher"), "same": ("ACER", "good", "good2", "lower")}
    rows, verdicts, unit = S.score_intervals(data, {"good": good, "bad": bad, "good2": good.copy()},
                                             checks=checks, n_boot=200, seed=1)
    assert unit == "identity"
    first = {r["variant"] + r["metric"]: r for r in rows}
    assert first["goodACER"]["value"] == first["goodACER"]["lo"] == first["goodACER"]["hi"] == 0.0
    v = {r["check"]: r["verdict"] for r in verdicts}
    assert v == {"good < bad": "yes", "bad < good": "no (reversed)", "AUC good > bad": "yes",
                 "same": "not resolved"}
    # unequal images per identity -> resampling by image within each class
    _, _, unit = S.score_intervals(data.subset(np.arange(len(y) - 1)), {"good": good[:-1]}, n_boot=20)
    assert unit == "image"


def test_seeds_spread_and_verdicts_that_need_every_seed():
    data = _fake_set_of(12)
    clip = A.CLIPModel(A.VisionTransformer(TINY), A.BagOfWordsTextTower(dim=16))
    cfg = A.TrainConfig(steps=3, batch_size=16, finetune_last=1)
    variants = ["CLIP linear probe", "CLIP fine-tune", S.FULL_MODEL, S.LIVE_CDM, "FG-MoE, routing scale 1"]
    res = S.run_ablation(clip, data, protocols=["P2.2"], variants=variants, config=cfg, seeds=(0, 1, 2),
                         test_fraction=0.34, single_seed=["FG-MoE, routing scale 1"],
                         moe={"last": 1, "n_experts": 2, "slots_per_expert": 2, "groups": 2}, device="cpu")
    assert res.seed_scores["P2.2", "CLIP fine-tune"].shape[0] == 3
    assert res.seed_scores["P2.2", "FG-MoE, routing scale 1"].shape[0] == 1
    probe = res.seed_scores["P2.2", "CLIP linear probe"]
    assert np.array_equal(probe[0], probe[2])                          # fitted once: deterministic
    m = res.seed_metrics
    assert len(m) == 4 * 3 + 1 and set(m.columns) >= {"protocol", "variant", "seed", "ACER", "AUC", "EER"}
    t = res.table.set_index("variant")
    ft = m[m["variant"] == "CLIP fine-tune"]
    assert t.loc["CLIP fine-tune", "ACER_std"] == pytest.approx(ft["ACER"].std(ddof=1))
    assert t.loc["CLIP fine-tune", "n_seeds"] == 3 and np.isnan(t.loc["FG-MoE, routing scale 1", "ACER_std"])
    spread = res.seed_spread()
    assert spread.loc["CLIP fine-tune", ("P2.2", "AUC")].endswith("(3)") and "±" in spread.loc["CLIP fine-tune",
                                                                                                  ("P2.2", "ACER")]
    assert spread.loc["FG-MoE, routing scale 1", ("P2.2", "EER")].endswith("(1)")
    iv = S.ablation_intervals(res, n_boot=30, seed=0)                  # mixed seed counts are fine
    c = iv.checks.set_index("check")
    assert c.loc["live-only CDM < both-class CDM", "seeds"].endswith("/3")
    assert "routing scale 10 < scale 1" not in c.index                # CLIP + FG-MoE was not run
    one = S.ablation_intervals(res, checks={"x": ("ACER", "FG-MoE, routing scale 1", "CLIP fine-tune", "lower")},
                               n_boot=10).checks
    assert one["seeds"].iloc[0] in ("0/1", "1/1")                      # paired over the seeds both have
    # the verdict needs the seeds: a 'yes' never has a seed on the wrong side
    for r in iv.checks.itertuples():
        got, n = map(int, r.seeds.split("/"))
        if r.verdict == "yes" and n > 1:
            assert got == n
    with pytest.raises(ValueError, match="single_seed names variants"):
        S.run_ablation(clip, data, protocols=["P2.2"], variants=["CLIP fine-tune"], config=cfg,
                       single_seed=["CNN baseline"])


def test_ablation_design_quick_and_full():
    q, f = S.ablation_design(True, seed=4), S.ablation_design(False, seed=4)
    assert q["protocols"]["P2.1"]["seeds"] == (4, 5, 6) and f["protocols"]["P1"]["seeds"] == (4, 5, 6, 7, 8)
    for p in ("P2.1", "P2.2"):
        assert set(S.HEADLINE) <= set(q["protocols"][p]["variants"])
    assert all(set(d["variants"]) == set(S.HEADLINE + S.ROUTING) and not d["single_seed"]
               for d in f["protocols"].values())
    assert all(v in S.VARIANTS for d in q["protocols"].values() for v in d["variants"] + d["single_seed"])


def test_study_tables_and_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    res = _tiny_ablation()
    fails = S.failure_cases(res, "P1", "CLIP fine-tune", k=3)
    assert list(fails.columns) == ["index", "attack", "p_live", "error"] and len(fails) <= 3
    test = res.splits["P2.2"][1]
    feats = S.feature_table(res.models["P2.2", "CLIP + FG-MoE"], test, seed=0)
    assert list(feats.columns) == ["pc1", "pc2", "attack", "live", "family"]
    apcer = S.per_species_apcer(res, "CLIP fine-tune")
    assert list(apcer.columns) == ["P1", "P2.2"] and "print" in apcer.index
    real = _fake_set_of(4)
    table = S.real_photo_table(res, real, variants=["CNN baseline", "CLIP fine-tune"], n_boot=20)
    assert (table["ACER_lo"] <= table["ACER"]).all() and (table["ACER"] <= table["ACER_hi"]).all()
    dispatch, combine = S.dispatch_weights(res.models["P1", "CLIP + FG-MoE"], test.images[:2])
    assert dispatch.shape[:2] == (2, 16)                      # parallel upcycling: the 16 patch tokens, no [CLS]
    iv = S.ablation_intervals(res, n_boot=20)
    figs = [S.plot_pretraining(pd.DataFrame({"step": [0, 1], "loss": [2.0, 1.0], "accuracy": [0.1, 0.5]})),
            S.plot_dispatch(dispatch[0, :, 0], res.models["P1", "CLIP + FG-MoE"].visual.grid, slots=4),
            S.plot_training({k[1]: h for k, h in res.histories.items() if k[0] == "P1"}, "ce"),
            S.plot_feature_space(feats, "test"), S.plot_intervals(iv, "ACER")]
    assert all(isinstance(f, Figure) for f in figs)
    fig, ax = plt.subplots()
    assert S.plot_training(res.histories, "ce", ax=ax) is fig
    with pytest.raises(ValueError, match="needs 2 axes"):
        S.plot_pretraining(pd.DataFrame({"step": [0], "loss": [1.0], "accuracy": [0.0]}), ax=ax)
    plt.close("all")


# ------------------------------------------------------------------------------------------------ cached CLIP
def _tiny_clip():
    return A.build_clip(image_size=16, patch_size=4, width=16, layers=2, heads=2, text="bow")


def test_save_and_load_pretrained_clip_round_trip(tmp_path):
    import hashlib
    import json

    from facelab.antispoof.pretrain import load_pretrained_clip, save_clip

    clip = _tiny_clip()
    path = tmp_path / "clip.safetensors"
    tiny = {"image_size": 16, "patch_size": 4, "width": 16, "layers": 2, "heads": 2, "text": "bow"}
    digest = save_clip(clip, {"settings": tiny, "seconds": 1.0}, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["sha256"] == digest and side["log"]["seconds"] == 1.0 and side["log"]["arch"]["width"] == 16
    assert side["settings"] == tiny and side["restore"] == "python -m facelab.antispoof.pretrain"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json", "clip.safetensors"]  # written atomically
    back, log2 = load_pretrained_clip(path, train_if_missing=False, settings=tiny)
    assert log2 == {**side["log"], "settings": tiny, "sha256": digest, "file": "clip.safetensors"}
    a, b = clip.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(3, 3, 16, 16)
    caps = ["a blurry photo. a face of a person", "a sharp photo. a face of a person"]
    with torch.no_grad():
        assert torch.equal(clip.eval()(x, caps), back(x, caps))
        assert back.encode_image(x).shape == (3, 16)
    # trained with other settings than the chapter's: refused (not loaded, not retrained) without training allowed
    with pytest.raises(RuntimeError, match=r"other settings.*python -m facelab.antispoof.pretrain"):
        load_pretrained_clip(path, train_if_missing=False)


def test_load_pretrained_clip_refuses_clearly(tmp_path):
    from safetensors.torch import save_file

    from facelab.antispoof.pretrain import load_pretrained_clip
    from facelab.checkpoints import CheckpointError

    with pytest.raises(FileNotFoundError, match="python -m facelab.antispoof.pretrain"):
        load_pretrained_clip(tmp_path / "missing.safetensors", train_if_missing=False)
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad))   # no sidecar: cannot be verified, so it is not loaded
    with pytest.raises(CheckpointError, match=r"bad.safetensors has no sidecar.*python -m facelab.antispoof.pretrain"):
        load_pretrained_clip(bad, train_if_missing=False)


def test_pretraining_captions_name_no_attack():
    from facelab.antispoof.pretrain import face_captions

    labels = pd.DataFrame({"emotion": ["happy", "neutral", "contempt"], "glasses": [True, False, False],
                           "beard": ["none", "full", "none"], "yaw": [-20.0, 0.0, 30.0],
                           "light_azimuth": [40.0, 0.0, -40.0], "light_intensity": [1.0, 0.5, 1.5],
                           "blur": [1.0, 0.0, 0.0], "noise": [0.0, 0.05, 0.0], "jpeg_quality": [100, 100, 30],
                           "resolution": [1.0, 0.5, 1.0], "occlusion": ["none", "hand", "none"]})
    caps = face_captions(labels)
    assert caps[0] == ("a face of a person looking happy, with glasses, turned left, lit from the right, "
                       "slightly out of focus")
    assert "with a beard" in caps[1] and "in dim light" in caps[1] and "at low resolution" in caps[1]
    assert caps[2].startswith("a face of a person showing contempt") and "compression artefacts" in caps[2]
    words = ("print", "replay", "mask", "adversarial", "swap", "morph", "spoof", "fake", "attack")
    assert not any(w in c for c in caps for w in words)


def test_pretrain_tower_entry_point_shapes_and_log():
    from facelab.antispoof.pretrain import PRETRAIN_SETTINGS, pretrain_tower

    tiny = {"image_size": 16, "patch_size": 4, "width": 16, "layers": 1, "heads": 2, "text": "bow",
            "world_size": 32, "n_identities": 6, "per_identity": 2, "held_out_identities": 2, "steps": 3,
            "batch_size": 8}
    clip, log = pretrain_tower(**tiny)
    assert log["settings"] == {**PRETRAIN_SETTINGS, **tiny}
    assert log["n_pairs"] == 12 and log["held_out_pairs"] == 8
    assert len(log["curve"]["loss"]) == 1 and 0.0 <= log["held_out_accuracy"] <= 1.0
    with torch.no_grad():
        assert clip.encode_image(torch.rand(2, 3, 16, 16)).shape == (2, 16)
    with pytest.raises(ValueError, match="unknown pretraining setting"):
        pretrain_tower(steps_per_epoch=3)


def test_the_cached_chapter_clip_loads():
    from facelab.antispoof.pretrain import CLIP_CHECKPOINT, PRETRAIN_SETTINGS, pretrained_clip

    if not CLIP_CHECKPOINT.is_file():
        pytest.skip("no cached CLIP; run `python -m facelab.antispoof.pretrain`")
    assert CLIP_CHECKPOINT.stat().st_size <= 10 * 2 ** 20
    clip, log = pretrained_clip(allow_train=False)   # verified, up to date: loads, never trains
    c = clip.visual.config
    assert (c.image_size, c.patch_size, c.width, c.layers) == (48, 8, 48, 4)
    assert log["settings"] == PRETRAIN_SETTINGS and log["held_out_accuracy"] > 0
    with torch.no_grad():
        assert clip.encode_image(torch.rand(2, 3, 48, 48)).shape == (2, 48)
