"""Recognition models: focal loss, STN, TCN, batch-first cross-attention fusion (samples never mix), LOSO."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from facelab.micro.recognition import (CrossAttentionFusion, EEGTCN, FlowSTN, FocalLoss, MultimodalData,
                                       PeripheralNet, loso_evaluate, loso_linear, standardise_per_subject,
                                       apply_late_fusion, calibrate_late_fusion, predict_proba, train_model)


def _batch(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 3, 28, 28, generator=g), torch.randn(B, 11, 160, generator=g),
            torch.randn(B, 8, generator=g))


def test_focal_loss():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.3, 0.2]])
    y = torch.tensor([0, 2])
    assert FocalLoss(gamma=0)(logits, y) == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    # focusing: down-weights the easy (confident, correct) sample more than the hard one
    easy, hard = torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.1]])
    t = torch.tensor([0])
    ratio_easy = FocalLoss(2)(easy, t) / F.cross_entropy(easy, t)
    ratio_hard = FocalLoss(2)(hard, t) / F.cross_entropy(hard, t)
    assert ratio_easy < 0.01 < ratio_hard
    alpha = torch.tensor([2.0, 1.0, 1.0])
    assert FocalLoss(0, alpha)(easy, t) == pytest.approx(2 * F.cross_entropy(easy, t).item(), rel=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(-1)


def test_branch_shapes_and_identity_stn():
    v, e, p = _batch()
    stn = FlowSTN(5, 32).eval()
    assert stn(v).shape == (6, 5) and stn.tokens(v).shape == (6, 49, 32)
    torch.testing.assert_close(stn.warp(v), v, atol=1e-4, rtol=1e-4)  # initialised to the identity warp
    tcn = EEGTCN(160, 5, 32).eval()
    assert tcn(e).shape == (6, 5) and tcn.tokens(e).shape == (6, 11, 32)
    # causal: changing the last window does not change earlier outputs
    e2 = e.clone()
    e2[:, -1] += 10
    torch.testing.assert_close(tcn.tokens(e)[:, :-1], tcn.tokens(e2)[:, :-1])
    pn = PeripheralNet(8, 5, 32).eval()
    assert pn(p).shape == (6, 5) and pn.tokens(p).shape == (6, 8, 32)


def test_fusion_is_batch_first_samples_do_not_mix():
    torch.manual_seed(0)
    model = CrossAttentionFusion(5, d=32, heads=4).eval()
    v, e, p = _batch(8)
    out = model(video=v, eeg=e, periph=p)
    assert out.shape == (8, 5)
    perm = torch.randperm(8)
    out_perm = model(video=v[perm], eeg=e[perm], periph=p[perm])
    torch.testing.assert_close(out_perm, out[perm], atol=1e-5, rtol=1e-5)
    # a sample's output does not depend on the other samples of the batch
    v2, e2, p2 = v.clone(), e.clone(), p.clone()
    v2[1:] = torch.randn_like(v2[1:])
    e2[1:] = torch.randn_like(e2[1:])
    torch.testing.assert_close(model(video=v2, eeg=e2, periph=p2)[0], out[0], atol=1e-5, rtol=1e-5)
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            assert m.batch_first
        if isinstance(m, nn.TransformerEncoderLayer):
            assert m.self_attn.batch_first


def test_the_original_bug_mixes_samples():
    """Feeding (batch, seq, dim) to a layer built without batch_first attends across the batch."""
    torch.manual_seed(0)
    wrong = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0).eval()  # expects (seq, batch, dim)
    x = torch.randn(4, 3, 16)  # (batch, seq, dim)
    y = wrong(x)
    x2 = x.clone()
    x2[1:] = torch.randn_like(x2[1:])
    assert not torch.allclose(wrong(x2)[0], y[0], atol=1e-4)  # sample 0 changed because others did


def test_fusion_subsets_and_errors():
    v, e, p = _batch(4)
    m = CrossAttentionFusion(5, d=16, heads=2, modalities=("video", "eeg")).eval()
    assert m(video=v, eeg=e).shape == (4, 5)
    with pytest.raises(ValueError, match="two modalities"):
        CrossAttentionFusion(5, modalities=("video",))


def _toy_data(n_per=9, n_subjects=3, seed=0):
    """EEG carries the label, video is noise, peripheral carries it weakly."""
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(3), n_per * n_subjects // 3)
    subjects = np.repeat(np.arange(n_subjects), n_per)
    eeg = rng.normal(0, 1, (len(y), 5, 20))
    eeg[:, 2:, :] += 2.0 * np.eye(3)[y][:, None, :].repeat(7, axis=2)[:, :, :20]
    periph = rng.normal(0, 1, (len(y), 4))
    periph[:, 0] += 0.8 * y
    video = rng.normal(0, 1, (len(y), 3, 28, 28))
    return MultimodalData(video=video.astype(np.float32), eeg=eeg.astype(np.float32),
                          periph=periph.astype(np.float32), y=y, subjects=subjects, classes=("a", "b", "c"))


def test_loso_on_known_ground_truth():
    data = _toy_data()
    table, probs = loso_evaluate(data, kinds=("eeg", "periph"), late={"late": ("eeg", "periph")}, epochs=30, lr=3e-3, d=16)
    assert table.loc["EEG (band power + TCN)", "UF1"] > 0.7
    assert set(probs) == {"eeg", "periph", "late"}
    np.testing.assert_allclose(probs["late"], (probs["eeg"] + probs["periph"]) / 2)
    lin, _ = loso_linear(data)
    assert lin.loc["EEG (logistic)", "UF1"] > 0.8 and lin.loc["video (logistic)", "UF1"] < 0.6


def test_data_validation_and_standardisation():
    d = _toy_data()
    with pytest.raises(ValueError, match="one row per label"):
        MultimodalData(video=d.video[:-1], eeg=d.eeg, periph=d.periph, y=d.y, subjects=d.subjects,
                       classes=d.classes)
    with pytest.raises(ValueError, match="two subjects"):
        loso_evaluate(MultimodalData(d.video[:5], d.eeg[:5], d.periph[:5], d.y[:5], np.zeros(5), d.classes),
                      kinds=("eeg",), late={})
    x = np.array([[1.0, np.nan], [3.0, 2.0], [10.0, 4.0], [30.0, 8.0]])
    z = standardise_per_subject(x, np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(z[:2, 0], [-1, 1]) and np.testing.assert_allclose(z[2:, 0], [-1, 1])
    assert z[0, 1] == 0.0  # NaN -> the subject's mean -> 0 after centring


def test_late_residual_fusion_starts_as_late_fusion_of_its_branches():
    torch.manual_seed(0)
    v, e, p = _batch(5)
    m = CrossAttentionFusion(5, d=16, heads=2, late_residual=True).eval()
    out, branch = m.forward_all(video=v, eeg=e, periph=p)
    assert set(branch) == {"video", "eeg", "periph"} and all(b.shape == (5, 5) for b in branch.values())
    torch.testing.assert_close(out, sum(branch.values()) / 3)  # zero attention head, equal weights
    torch.testing.assert_close(branch["eeg"], m.encoders["eeg"](e))  # auxiliary head = the branch's classifier


def test_pretrained_fusions_frozen_and_fine_tuned():
    data = _toy_data()
    train = np.flatnonzero(data.subjects != 0)
    kw = dict(epochs=3, d=16, lr=3e-3)
    branches = {k: train_model(k, data, train, **kw) for k in ("video", "eeg", "periph")}
    frozen = train_model("fusion (frozen)", data, train, branches=branches, **kw)
    for k, b in branches.items():  # frozen: the encoders keep the pretrained weights exactly
        for (n, w), w0 in zip(frozen.encoders[k].state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(w, w0, msg=n)
    tuned = train_model("fusion (fine-tuned)", data, train, branches=branches, **kw)
    moved = [not torch.equal(w, w0) for w, w0 in zip(tuned.encoders["eeg"].state_dict().values(),
                                                      branches["eeg"].state_dict().values())]
    assert any(moved)
    with pytest.raises(ValueError, match="pretrained branches"):
        train_model("fusion (frozen)", data, train, **kw)


def test_loso_with_pretrained_and_calibrated_fusions():
    data = _toy_data()
    kinds = ("video", "eeg", "periph", "fusion (frozen)", "fusion (fine-tuned)")
    table, probs = loso_evaluate(data, kinds=kinds, late={}, calibrated=True, epochs=20, lr=3e-3, d=16)
    assert set(probs) == {*kinds, "late fusion (calibrated)"}
    for p in probs.values():
        assert p.shape == (len(data.y), 3)
        np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    # the calibration learns to follow the informative EEG branch and ignore the noise video branch
    assert table.loc["late fusion (calibrated weights)", "UF1"] > 0.6
    with pytest.raises(ValueError, match="need the branches"):
        loso_evaluate(data, kinds=("eeg", "fusion (frozen)"), late={})


def test_calibrated_late_fusion_weights_follow_the_informative_branch():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    good = np.full((200, 3), 0.1)
    good[np.arange(200), y] = 0.8
    noise = rng.dirichlet(np.ones(3), 200)
    cal = calibrate_late_fusion({"good": good, "noise": noise}, y)
    assert cal["weight"]["good"] >= 0.9 and sum(cal["weight"].values()) == pytest.approx(1)
    fused = apply_late_fusion({"good": good, "noise": noise}, cal)
    np.testing.assert_allclose(fused.sum(1), 1, atol=1e-9)
    assert (fused.argmax(1) == y).mean() == 1.0
    with pytest.raises(ValueError, match="one row per label"):
        calibrate_late_fusion({"good": good[:-1]}, y)
    with pytest.raises(ValueError, match="NaN"):
        calibrate_late_fusion({"good": np.where(good > 0.5, np.nan, good)}, y)
    with pytest.raises(ValueError, match="labels must lie"):
        calibrate_late_fusion({"good": good}, y + 3)


def test_fuse_of_encode_is_forward_all():
    v, e, p = _batch(5)
    m = CrossAttentionFusion(5, d=16, heads=2, late_residual=True).eval()
    out, branch = m.forward_all(video=v, eeg=e, periph=p)
    raw = m.encode(video=v, eeg=e, periph=p)
    assert set(raw) == {"video", "eeg", "periph"} and raw["video"].shape == (5, 49, 16)
    out2, branch2 = m.fuse(raw)
    assert torch.equal(out, out2) and all(torch.equal(branch[k], branch2[k]) for k in branch)


def _train_as_before(kind, data, train, branches=None, *, epochs, lr, d, seed=0, batch_size=32):
    """train_model's loop before the frozen fusion's encoder tokens were computed once: every batch runs the
    encoders, and Adam updates one tensor at a time (foreach=False)."""
    torch.manual_seed(seed)
    C = len(data.classes)
    if kind == "eeg":
        model = EEGTCN(data.eeg.shape[-1], C, d)
        params = list(model.parameters())
    else:
        model = CrossAttentionFusion(C, d, eeg_features=data.eeg.shape[-1], periph_features=data.periph.shape[-1],
                                     late_residual=True)
        for m, enc in model.encoders.items():
            enc.load_state_dict(branches[m].state_dict())
            enc.requires_grad_(False)
        params = [p for n, p in model.named_parameters() if not n.startswith("encoders.")]
    counts = np.bincount(data.y[train], minlength=C).astype(float)
    loss_fn = FocalLoss(2.0, torch.as_tensor(counts.sum() / (C * counts), dtype=torch.float32))
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-3, foreach=False)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=15, gamma=0.3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    if kind != "eeg":
        model.encoders.eval()
    y = torch.as_tensor(data.y[train])
    t = {m: torch.as_tensor(getattr(data, m)) for m in ("video", "eeg", "periph")}
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=g).numpy()
        for start in range(0, len(perm), batch_size):
            b = perm[start:start + batch_size]
            rows = train[b]
            out = model(t["eeg"][rows]) if kind == "eeg" else model(**{m: x[rows] for m, x in t.items()})
            loss = loss_fn(out, y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def test_training_gives_the_values_of_the_previous_loop():
    """Efficiency changes (Adam foreach, the frozen fusion's encoder tokens computed once) keep the trained models:
    the same predictions as the loop they replaced, to float rounding."""
    data = _toy_data(n_per=24)  # 48 training expressions: batches of 32 and 16
    train, test = np.flatnonzero(data.subjects != 0), np.flatnonzero(data.subjects == 0)
    kw = dict(epochs=4, d=16, lr=3e-3)
    new = train_model("eeg", data, train, **kw)
    old = _train_as_before("eeg", data, train, **kw)
    np.testing.assert_array_equal(predict_proba(new, "eeg", data, test), predict_proba(old, "eeg", data, test))
    branches = {k: train_model(k, data, train, **kw) for k in ("video", "eeg", "periph")}
    new = train_model("fusion (frozen)", data, train, branches=branches, **kw)
    old = _train_as_before("fusion (frozen)", data, train, branches, **kw)
    np.testing.assert_allclose(predict_proba(new, "fusion (frozen)", data, test),
                               predict_proba(old, "fusion (frozen)", data, test), rtol=0, atol=1e-6)
