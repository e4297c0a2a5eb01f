"""Teacher distillation in :func:`facelab.diffusion.train.train_unet` (issue #20: keep what the words draw while the
attention loss localises their maps): off by default and then step-for-step the old run, the teacher frozen, the term
zero while the student is still the teacher, bad input refused. Tiny configuration, a random autoencoder and the
word-vector stand-in for MiniLM of tests/test_diffusion_train.py."""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facelab.diffusion import train as train_mod
from facelab.diffusion.model import build_quick_unet, build_quick_vae
from test_diffusion_train import _Tokens  # the word-vector stand-in for MiniLM


def _vae():
    torch.manual_seed(5)
    return build_quick_vae(64).eval().requires_grad_(False)


def _init(vae):
    torch.manual_seed(9)
    return build_quick_unet(16, _Tokens.dim, int(vae.config.latent_channels))


def _run(vae, **kw):
    settings = {**train_mod.TINY, "steps": 4, "batch_size": 4, "lr": 1e-2, "threads": 1, "log_every": 1,
                "ema_decay": 0.0}
    return train_mod.train_unet(vae=vae, **{**settings, **kw}, text_encoder=_Tokens())


def test_distillation_is_off_by_default_and_then_the_run_is_unchanged():
    import inspect

    params = inspect.signature(train_mod.train_unet).parameters
    assert params["distill_weight"].default == 0 and params["distill_kind"].default == "eps"
    vae = _vae()
    init = _init(vae)
    a, log_a = _run(vae, init_unet=init)
    b, log_b = _run(vae, init_unet=init, distill_weight=0.0, distill_kind="guided")   # weight 0: the kind is moot
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    assert [r["loss"] for r in log_a["loss_curve"]] == [r["loss"] for r in log_b["loss_curve"]]
    assert "distill" not in log_b["loss_curve"][0] and log_b["distill_weight"] == 0
    assert log_b["distill_kind"] is None
    # with the attention loss on too, weight 0 leaves that run as it was
    c, _ = _run(vae, init_unet=init, attention_loss=0.5)
    d, _ = _run(vae, init_unet=init, attention_loss=0.5, distill_weight=0.0)
    assert all(torch.equal(x, y) for x, y in zip(c.state_dict().values(), d.state_dict().values()))


@pytest.mark.parametrize("kind", ["eps", "guided"])
def test_the_distill_term_is_zero_while_the_student_is_the_teacher(kind):
    vae = _vae()
    init = _init(vae)
    _, log = _run(vae, init_unet=init, distill_weight=1.0, distill_kind=kind, steps=3)
    first = log["loss_curve"][0]        # step 1's loss is computed before the first update: student == teacher
    assert first["distill"] == 0.0, first
    assert first["loss"] == pytest.approx(first["mse"], abs=1e-6)
    assert log["distill_weight"] == 1.0 and log["distill_kind"] == kind
    if kind == "guided":
        assert first["distill_eps"] == 0.0 and first["distill_guided"] == 0.0
    assert any(r["distill"] > 0 for r in log["loss_curve"][1:])      # then the student moves away
    # the attention loss swaps in its explicit attention: equal to float rounding
    _, log = _run(vae, init_unet=init, distill_weight=1.0, distill_kind=kind, attention_loss=0.5, steps=2)
    assert log["loss_curve"][0]["distill"] == pytest.approx(0.0, abs=1e-8)
    assert np.isfinite([r["attention"] for r in log["loss_curve"]]).all()


def test_the_teacher_is_frozen_and_the_term_pulls_the_student_back(monkeypatch):
    """The teacher is the initial weights for the whole run (never trained, no gradients): captured by wrapping
    copy.deepcopy, checked after training. A large weight keeps the student nearer the initial weights."""
    import copy

    made = []
    real = copy.deepcopy

    def spy(obj, *a, **k):
        out = real(obj, *a, **k)
        if isinstance(obj, torch.nn.Module):
            made.append(out)
        return out

    vae = _vae()
    init = _init(vae)
    before = {k: v.clone() for k, v in init.state_dict().items()}
    monkeypatch.setattr(train_mod.copy, "deepcopy", spy)
    ema, log = _run(vae, init_unet=init, distill_weight=1.0, attention_loss=0.5, steps=4)
    monkeypatch.undo()
    teachers = [m for m in made if m is not ema]        # the copies made: the EMA (returned) and the teacher
    assert len(teachers) == 1
    teacher = teachers[0]
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, before[k]) for k, v in ema.state_dict().items())    # the student did train

    def dist(m):
        return sum(float((v - before[k]).pow(2).sum()) for k, v in m.state_dict().items())

    free, _ = _run(vae, init_unet=init, attention_loss=0.5, steps=4)
    held, _ = _run(vae, init_unet=init, attention_loss=0.5, steps=4, distill_weight=1000.0)
    assert dist(held) < dist(free)


def test_another_teacher_than_the_initial_weights():
    """distill_teacher: the student starts from init_unet and is pulled towards the other weights (the term is then
    not zero at step 1); it only makes sense with a distillation weight."""
    vae = _vae()
    init = _init(vae)
    torch.manual_seed(10)
    other = build_quick_unet(16, _Tokens.dim, int(vae.config.latent_channels))
    _, log = _run(vae, init_unet=init, distill_weight=1.0, distill_teacher=other.state_dict(), steps=2)
    assert log["loss_curve"][0]["distill"] > 0 and log["distill_teacher"] == "OrderedDict"
    _, same = _run(vae, init_unet=init, distill_weight=1.0, distill_teacher=init, steps=2)
    assert same["loss_curve"][0]["distill"] == 0.0
    with pytest.raises(ValueError, match="distill_teacher"):
        _run(vae, init_unet=init, distill_teacher=other)


def test_bad_distillation_settings_are_refused():
    vae = _vae()
    init = _init(vae)
    for bad in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="distill_weight"):
            _run(vae, init_unet=init, distill_weight=bad)
    with pytest.raises(ValueError, match="init_unet"):
        _run(vae, distill_weight=0.5)
    with pytest.raises(ValueError, match="distill_kind"):
        _run(vae, init_unet=init, distill_weight=0.5, distill_kind="logits")


def test_the_command_line_passes_the_weight_and_kind(tmp_path, monkeypatch):
    seen = {}

    def fake_train(**kw):
        seen.update(kw)
        return {}

    monkeypatch.setattr(train_mod, "train", fake_train)
    train_mod.main(["--stage", "unet", "--out-dir", str(tmp_path), "--init-unet", "x.safetensors",
                    "--distill-weight", "0.5", "--distill-kind", "guided", "--distill-teacher", "t.safetensors"])
    assert seen["unet_settings"]["distill_weight"] == 0.5 and seen["unet_settings"]["distill_kind"] == "guided"
    assert seen["unet_settings"]["distill_teacher"] == "t.safetensors"
    seen.clear()
    train_mod.main(["--stage", "unet", "--out-dir", str(tmp_path)])
    assert "distill_weight" not in seen["unet_settings"]
