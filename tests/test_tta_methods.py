"""facelab.adaptation.test_time: normalisation, Fisher masks, the adapters, bad input, and TENT/EATA against the
torch-ttt package (test-only oracle)."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from facelab.adaptation import test_time as tta
from facelab.adaptation.test_time.norm import StreamBatchNorm2d


def tiny(n_classes=5, seed=0, scale=1.0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, n_classes))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
        m[-1].weight.mul_(scale)
    return m.eval()


def _torch_ttt_engine(module: str, cls: str):
    """An engine class of torch-ttt. The package's registry imports every engine at import time, and some need
    torchvision (not a dependency here); a stand-in registry lets the two engines we compare with load alone."""
    import importlib
    import sys
    import types

    pytest.importorskip("torch_ttt")
    if "torch_ttt.engine_registry" not in sys.modules:
        try:
            importlib.import_module("torch_ttt.engine_registry")
        except ImportError:
            stub = types.ModuleType("torch_ttt.engine_registry")

            class EngineRegistry:
                @classmethod
                def register(cls, name):
                    return lambda engine: engine

            stub.EngineRegistry = EngineRegistry
            sys.modules["torch_ttt.engine_registry"] = stub
    return getattr(importlib.import_module(f"torch_ttt.engine.{module}"), cls)


def frames(n, seed=1, size=12):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ normalisation
def test_stream_bn_modes_match_torch_batchnorm():
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
    x = torch.randn(3, 4, 5, 5)
    s = StreamBatchNorm2d(4, alpha=0.0)
    s.load_state_dict(bn.state_dict())
    assert torch.allclose(s(x), bn.eval()(x), atol=1e-6)           # source statistics
    s.alpha = 1.0
    ref = nn.BatchNorm2d(4, track_running_stats=False)
    ref.load_state_dict({k: v for k, v in bn.state_dict().items() if k in ("weight", "bias")})
    assert torch.allclose(s(x), ref.train()(x), atol=1e-5)          # the batch's own statistics (TENT)
    # the running estimate moves towards the batch by `momentum`
    s.alpha, s.stream_momentum = 0.0, 0.5
    before = s.running_mean.clone()
    s(x)
    assert torch.allclose(s.running_mean, 0.5 * before + 0.5 * x.mean((0, 2, 3)), atol=1e-6)


def test_single_frame_batch_is_capped_and_counted():
    s = StreamBatchNorm2d(2, alpha=1.0, single_frame_alpha=0.0)
    x = torch.randn(1, 2, 4, 4) * 5 + 3
    out = s(x)                       # alpha capped to 0: source statistics (mean 0, var 1) -> unchanged input
    assert torch.allclose(out, x / math.sqrt(1 + s.eps), atol=1e-5)
    assert s.single_frame_batches == 1


# ------------------------------------------------------------------------------------------------ Fisher
def test_fisher_matches_per_sample_squared_gradients():
    m = tiny().train()
    tta.convert_batchnorm(m, alpha=0.0)
    x = frames(3)
    F_ = tta.fisher_diagonal(m, x)
    manual = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for i in range(3):
        m.zero_grad()
        logp = torch.log_softmax(m(x[i:i + 1]), 1)
        logp[0, int(logp.argmax())].backward()
        for n, p in m.named_parameters():
            manual[n] += p.grad ** 2 / 3
    for n in F_:
        assert torch.allclose(F_[n], manual[n], atol=1e-7)
    assert all(not p.requires_grad or True for p in m.parameters())


def test_topk_mask_size_jaccard_and_errors():
    f = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([[4.0, 0.0], [2.0, 6.0]])}
    m = tta.topk_mask(f, 3)
    assert m["a"].tolist() == [True, False, False] and m["b"].tolist() == [[True, False], [False, True]]
    assert sum(int(v.sum()) for v in tta.topk_mask(f, 0.5).values()) == 4 - 0  # round(0.5 * 7) = 4
    assert tta.mask_jaccard(m, m) == 1.0
    m2 = tta.topk_mask(f, 1)
    assert tta.mask_jaccard(m, m2) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="larger than the model"):
        tta.topk_mask(f, 8)
    with pytest.raises(ValueError, match="at least one"):
        tta.topk_mask(f, 0)
    with pytest.raises(ValueError, match="NaN"):
        tta.topk_mask({"a": torch.tensor([float("nan"), 1.0])}, 1)
    df = tta.mask_by_layer({"x.weight": m["a"], "x.bias": m["b"]})
    assert df.loc[0, "selected"] == 3 and df.loc[0, "total"] == 7


# ------------------------------------------------------------------------------------------------ torch-ttt oracle
def _bn_params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.split(".")[0] in ("1", "4")}


def test_tent_matches_torch_ttt():
    TentEngine = _torch_ttt_engine("tent_engine", "TentEngine")

    base = tiny()
    eng = TentEngine(copy.deepcopy(base), {"lr": 1e-2, "num_steps": 1, "copy_model": False,
                                           "optimizer_name": "adam"})
    eng.eval()
    for mod in eng.model.modules():          # TENT normalises with each batch's statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.train()
    mine = tta.Tent(base, lr=1e-2, optimizer="adam", bn_alpha=1.0, bn_momentum=0.0)
    for b in range(3):
        x = frames(6, seed=10 + b)
        eng(x)
        mine.adapt(x)
    theirs = _bn_params(eng.model)
    ours = _bn_params(mine.model)
    assert set(theirs) == set(ours) and len(ours) == 4
    for n in ours:
        assert torch.allclose(ours[n], theirs[n], atol=1e-6), n
    assert mine.n_updated == 2 * (4 + 6)
    assert not torch.allclose(ours["1.weight"], base[1].weight)     # it did move


def test_eata_matches_torch_ttt():
    EataEngine = _torch_ttt_engine("eata_engine", "EataEngine")

    base = tiny(scale=12.0)
    fishers = {n: (torch.rand_like(p) * 0.1, p.detach().clone()) for n, p in base.named_parameters()
               if n.split(".")[0] in ("1", "4")}
    kw = dict(e_margin=1.2, d_margin=0.9, fisher_alpha=5.0)
    eng = EataEngine(copy.deepcopy(base), {"lr": 1e-2, "num_steps": 1, "copy_model": False,
                                           "optimizer_name": "adam"}, fishers=copy.deepcopy(fishers), **kw)
    eng.eval()
    for mod in eng.model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.train()
    mine = tta.EATA(base, lr=1e-2, bn_alpha=1.0, bn_momentum=0.0, fishers=fishers, **kw)
    for b in range(3):
        x = frames(8, seed=20 + b)
        eng(x)
        mine.adapt(x)
    assert mine.log["updates"] == 3
    theirs, ours = _bn_params(eng.model), _bn_params(mine.model)
    for n in ours:
        assert torch.allclose(ours[n], theirs[n], atol=1e-6), n
    assert torch.allclose(mine.current_probs, eng.current_model_probs, atol=1e-6)


# ------------------------------------------------------------------------------------------------ adapters
@pytest.mark.parametrize("name", list(tta.METHODS))
def test_every_adapter_runs_and_returns_distributions(name):
    m = tiny()
    kw = dict(k=20, n_fisher=2) if name == "FIESTA" else {}
    a = tta.METHODS[name](m, **kw)
    for b in range(3):
        p = a.adapt(frames(4, seed=b))
        assert p.shape == (4, 5)
        assert torch.allclose(p.sum(1), torch.ones(4), atol=1e-5)
    assert a.log["frames"] == 12 and a.log["batches"] == 3


def test_fiesta_updates_only_masked_entries():
    m = tiny()
    a = tta.Fiesta(m, k=15, n_fisher=3, lr=1e-2, temporal=1.0)
    a.adapt(frames(2, seed=0))
    assert a.mask is None and a.log["updates"] == 0                  # still collecting Fisher frames
    a.adapt(frames(4, seed=1))
    assert a.mask is not None and a.n_updated == 15
    for _ in range(3):
        a.adapt(frames(4, seed=5))
    src = dict(m.named_parameters())
    changed = 0
    for n, p in a.model.named_parameters():
        diff = (p.detach() - src[n].detach()).abs() > 0
        assert not bool((diff & ~a.mask[n]).any()), n            # nothing outside the mask moved
        changed += int(diff.sum())
    assert 0 < changed <= 15
    assert a.n_parameters == tta.count_parameters(m)


def test_fiesta_mask_larger_than_model_fails_early():
    m = tiny()
    with pytest.raises(ValueError, match="larger than the model"):
        tta.Fiesta(m, k=tta.count_parameters(m) + 1)
    with pytest.raises(ValueError, match="n_fisher"):
        tta.Fiesta(m, n_fisher=0)


def test_nan_loss_resets_to_source_and_reports():
    m = tiny()
    a = tta.Tent(m, lr=1e-1)
    a.adapt(frames(4, seed=0))
    a.adapt(frames(4, seed=1))
    assert not torch.allclose(a.model[1].weight, m[1].weight)
    a._loss = lambda logits, x: logits.sum() * float("nan")
    with pytest.warns(RuntimeWarning, match="reset to the source weights"):
        p = a.adapt(frames(4, seed=2))
    assert a.log["nan_resets"] == 1
    assert torch.isfinite(p).all()
    for (n, q), (_, r) in zip(a.model.named_parameters(), m.named_parameters()):
        assert torch.equal(q, r), n


def test_no_face_frames_hold_the_last_prediction():
    a = tta.Tent(tiny())
    x = frames(5)
    x[1] = float("nan")
    p = a.adapt(x, valid=[True, True, True, False, True])
    assert torch.equal(p[1], p[0]) and torch.equal(p[3], p[2])
    assert a.log["no_face_frames"] == 2
    q = tta.Tent(tiny()).adapt(torch.full((2, 3, 12, 12), float("nan")))
    assert torch.allclose(q, torch.full((2, 5), 0.2))                # nothing seen yet: uniform


def test_batch_of_one_with_batchnorm():
    a = tta.Tent(tiny(), bn_alpha=1.0, lr=1e-2)
    p = a.adapt(frames(1))
    assert p.shape == (1, 5) and torch.isfinite(p).all()
    assert a.log["single_frame_batches"] == 2                        # two BN layers saw a one-frame batch


def test_empty_batch_and_empty_stream():
    a = tta.Fiesta(tiny(), k=10)
    assert a.adapt(torch.zeros(0, 3, 12, 12)).shape == (0, 5)
    assert a.log["updates"] == 0
    r = tta.run_stream(tta.Tent(tiny()), torch.zeros(0, 3, 12, 12), batch_size=4)
    assert r["probs"].shape[0] == 0 and math.isnan(r["ms_per_frame"])
    with pytest.raises(ValueError, match="batch_size"):
        tta.run_stream(a, frames(3), batch_size=0)
    with pytest.raises(TypeError, match="float tensor"):
        a.adapt(torch.zeros(2, 3, 12, 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        a.adapt(torch.zeros(2, 12, 12))


def test_reset_every_and_stream_length_shorter_than_fisher():
    a = tta.Tent(tiny(), reset_every=8, lr=1e-2)
    r = tta.run_stream(a, frames(20), batch_size=4)
    assert r["log"]["scheduled_resets"] == 2 and r["probs"].shape == (20, 5)
    f = tta.Fiesta(tiny(), n_fisher=30, k=10)
    tta.run_stream(f, frames(12), batch_size=4)
    assert f.mask is None and f.log["updates"] == 0                  # too short to estimate: predicts only


def test_temporal_consistency():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert float(tta.temporal_consistency(p)) == pytest.approx(1.0)   # (2 + 0) / 2
    assert float(tta.temporal_consistency(p[:1])) == 0.0
    assert float(tta.temporal_consistency(p[:1], torch.tensor([0.0, 1.0]))) == pytest.approx(2.0)


def test_sar_recovery_resets_weights_but_keeps_stream_statistics():
    m = tiny(scale=12.0)
    a = tta.SAR(m, lr=1e-2, bn_alpha=0.0, bn_momentum=0.5, e_margin=2.0, reset_constant=10.0)
    a.adapt(frames(6, seed=3))
    assert a.log["updates"] == 1 and a.log["recoveries"] == 1
    for (n, q), (_, r) in zip(a.model.named_parameters(), m.named_parameters()):
        assert torch.equal(q, r), n
    assert not torch.allclose(a.model[1].running_mean, m[1].running_mean)
