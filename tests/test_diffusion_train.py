"""The quick latent diffusion model's training script (``python -m facelab.diffusion.train``): a tiny run in one
process, and the same run under ``accelerate launch`` with two CPU processes that must train ONE model (data-parallel
DDP over gloo: equal weights in both processes), whose checkpoints load.

Note on the launch flags: accelerate 1.16's ``--cpu --num_processes 2`` starts a single process unless mpirun is
used (its state only goes multi-CPU with ``LOCAL_RANK`` set), so the test launches with ``--multi_gpu`` (torchrun);
on a machine without a GPU the script then trains on the CPU with gloo (``Accelerator(cpu=True)``).
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facelab.diffusion import train as train_mod
from facelab.diffusion.model import (QUICK_STAGES, PaddingMaskAttnProcessor, load_quick_model, quick_vae_config,
                                     sha256_of)

TINY_STEPS = train_mod.TINY["steps"]


class _Tokens:
    """A stand-in for MiniLMTokenEncoder (no MiniLM load): a fixed vector per word, zero rows at padding."""

    dim = 384

    def __init__(self, *args, max_length=24, **kwargs):
        self.L = max_length
        self.tokenizer = _Words()

    def __call__(self, prompts):
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        out = torch.zeros(len(prompts), self.L, self.dim)
        for i, p in enumerate(prompts):
            for j, w in enumerate(["<s>"] + p.split()[: self.L - 2] + ["</s>"]):
                out[i, j] = torch.randn(self.dim, generator=torch.Generator().manual_seed(sum(map(ord, w))))
        return out


class _Words:
    """The stand-in's tokenizer: one piece per word (position 1 + i in the sequence, as _Tokens lays them out)."""

    @staticmethod
    def tokenize(text):
        return text.split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_outputs(out, summary, n_processes):
    vae_p, base_p, unet_p = (out / "face_vae_quick.safetensors", out / "face_ldm_quick_base.safetensors",
                             out / "face_ldm_quick.safetensors")
    assert vae_p.is_file() and base_p.is_file() and unet_p.is_file()
    for stage in ("vae", "base", "unet"):
        log = summary[stage]
        assert log["num_processes"] == n_processes and log["steps"] == TINY_STEPS, (stage, log)
        digests = log["weights_sha256_per_process"]
        assert len(digests) == n_processes and len(set(digests)) == 1, (stage, digests)   # one model
    # the book's UNet: the base through every stage of the recipe, each shrunk to the tiny size, in every process
    stages = summary["unet"]["stages"]
    assert len(stages) == len(QUICK_STAGES) and summary["unet"]["base_sha256"] == sha256_of(base_p)
    for st, want in zip(stages, QUICK_STAGES):
        assert st["steps"] == TINY_STEPS and st["attention_loss"] == want["attention_loss"], st
        assert st["distill_weight"] == want["distill_weight"] and st["distill_teacher"] == "the base UNet"
        assert len(set(st["weights_sha256_per_process"])) == 1 and st["num_processes"] == n_processes
    assert [st["init_unet"] for st in stages] == ["the base UNet"] + [f"stage {i}'s UNet" for i in range(1, len(stages))]
    for path in (base_p, unet_p):
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["restore"] == "python -m facelab.diffusion.train" and side["sha256"] == sha256_of(path)
        assert side["log"]["num_processes"] == n_processes
    side = json.loads(unet_p.with_suffix(".json").read_text())
    assert side["settings"]["base"] == json.loads(base_p.with_suffix(".json").read_text())["settings"]
    assert [st["steps"] for st in side["settings"]["stages"]] == [TINY_STEPS] * len(QUICK_STAGES)
    m = load_quick_model(unet_p, vae_path=vae_p, text_encoder=_Tokens())
    assert m.info["vae_sha256"] == sha256_of(vae_p)
    assert m.image_size == 64 and m.unet.config.sample_size == 16 and m.unet.config.in_channels == quick_vae_config()["latent_channels"]
    assert all(isinstance(p, PaddingMaskAttnProcessor) for p in m.unet.attn_processors.values())
    assert m.vae.config.scaling_factor == pytest.approx(summary["vae"]["scaling_factor"], rel=1e-3)
    return m


def test_tiny_training_in_one_process_writes_loadable_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "MiniLMTokenEncoder", _Tokens)
    out = tmp_path / "m"
    train_mod.main(["--tiny", "--threads", "1", "--out-dir", str(out), "--summary", str(tmp_path / "s.json")])
    summary = json.loads((tmp_path / "s.json").read_text())
    m = _check_outputs(out, summary, 1)
    side = json.loads((out / "face_vae_quick.json").read_text())
    assert side["settings"]["steps"] == TINY_STEPS and side["log"]["loss_curve"][0]["step"] == 1
    z = m.encode(torch.rand(1, 3, 64, 64))
    assert z.shape == (1, quick_vae_config()["latent_channels"], 16, 16) and torch.isfinite(z).all()


def test_a_run_with_other_settings_must_name_an_output_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):          # argparse: data/models keeps the committed model
        train_mod.main(["--tiny"])
    with pytest.raises(ValueError, match="stage must be"):
        train_mod.train(stage="everything")
    # an experiment's options (one run) belong to --stage unet, not to the recipe's other stages
    with pytest.raises(SystemExit):
        train_mod.main(["--stage", "all", "--out-dir", str(tmp_path), "--attention-loss", "0.1"])
    assert "with --stage unet only" in capsys.readouterr().err
    with pytest.raises(SystemExit):          # the layers the localisation loss supervises: an experiment's option too
        train_mod.main(["--stage", "base", "--out-dir", str(tmp_path), "--attention-sides", "16"])
    assert "--attention-sides" in capsys.readouterr().err and "attention_sides" in train_mod.EXPERIMENT_ARGS
    with pytest.raises(ValueError, match="for stage 'unet' only"):
        train_mod.train(stage="base", out_dir=tmp_path, unet_settings={"distill_weight": 1.0})
    with pytest.raises(SystemExit):
        train_mod.main(["--stage", "base", "--out-dir", str(tmp_path), "--base", "b.safetensors"])
    assert not any(tmp_path.iterdir())                               # nothing written


def test_the_book_unet_stage_needs_its_base_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "MiniLMTokenEncoder", _Tokens)
    out = tmp_path / "m"
    train_mod.main(["--stage", "vae", "--tiny", "--threads", "1", "--out-dir", str(out)])
    with pytest.raises(FileNotFoundError, match="--stage base"):
        train_mod.main(["--stage", "unet", "--tiny", "--threads", "1", "--out-dir", str(out)])


def test_staged_training_chains_the_stages_and_distils_towards_the_base(monkeypatch):
    """Each stage starts from the previous stage's weights (rounded through float16) and its teacher is the base."""
    calls = []

    def fake_train_unet(*, vae, init_unet, distill_teacher, **kw):
        calls.append({"init": {k: v.clone() for k, v in init_unet.items()},
                      "teacher": None if distill_teacher is None else {k: v.clone() for k, v in distill_teacher.items()},
                      **kw})
        out = torch.nn.Linear(2, 2)
        with torch.no_grad():
            out.weight.fill_(len(calls) + 1 / 3)            # not a float16 number
            out.bias.fill_(0.0)
        return out, {"steps": kw["steps"], "train_seconds": 1.5, "loss_curve": [{"step": 1, "loss": 1.0}]}

    monkeypatch.setattr(train_mod, "train_unet", fake_train_unet)
    base = {"weight": torch.full((2, 2), 0.1), "bias": torch.zeros(2)}
    stages = [{"steps": 5, "attention_loss": 0.05, "distill_weight": 20.0}, {"steps": 7, "lr": 1e-4},
              {"steps": 9, "attention_loss": 0.15, "distill_weight": 20.0}]
    ema, log = train_mod.train_staged_unet(vae=None, base=base, stages=stages,
                                           base_settings={"steps": 100, "lr": 1e-3, "threads": 1}, text_encoder=_Tokens())
    assert [c["steps"] for c in calls] == [5, 7, 9] and [c["lr"] for c in calls] == [1e-3, 1e-4, 1e-3]
    assert all(c["threads"] == 1 for c in calls)
    b16 = base["weight"].half().float()
    assert torch.equal(calls[0]["init"]["weight"], b16) and calls[0]["teacher"] is None   # stage 1: teacher = init
    for i in (1, 2):                                       # the previous stage's output, through float16
        assert torch.equal(calls[i]["init"]["weight"], torch.full((2, 2), i + 1 / 3).half().float())
    assert calls[1]["teacher"] is None                      # no distillation in that stage
    assert torch.equal(calls[2]["teacher"]["weight"], b16)
    assert ema.weight[0, 0].item() == pytest.approx(3 + 1 / 3)
    assert log["n_stages"] == 3 and [s["steps"] for s in log["stages"]] == [5, 7, 9] and "loss_curve" not in log
    assert log["train_seconds_total"] == 4.5 and log["steps"] == 9
    assert [s.get("distill_teacher") for s in log["stages"]] == ["the base UNet", None, "the base UNet"]
    with pytest.raises(ValueError, match="at least one stage"):
        train_mod.train_staged_unet(vae=None, base=base, stages=[])


def test_accelerate_launch_with_two_cpu_processes_trains_one_model(tmp_path):
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("Hugging Face accelerate is not installed (pip install accelerate)")
    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", "1", "--main_process_port", str(_free_port()),
           "-m", "facelab.diffusion.train", "--tiny", "--threads", "1", "--out-dir", str(out),
           "--summary", str(out / "s.json")]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "FACELAB_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-4000:])
    summary = json.loads((out / "s.json").read_text())
    _check_outputs(out, summary, 2)
    # only the main process wrote: one checkpoint pair, no leftovers of the periodic EMA save
    assert sorted(p.name for p in out.iterdir()) == ["face_ldm_quick.json", "face_ldm_quick.safetensors",
                                                     "face_ldm_quick_base.json", "face_ldm_quick_base.safetensors",
                                                     "face_vae_quick.json", "face_vae_quick.safetensors", "s.json"]


def test_colour_loss_sees_chroma_not_brightness():
    x = torch.full((2, 3, 16, 16), 0.5)
    grey = x + 0.2                                   # brighter, same chroma
    red = x.clone()
    red[:, 0] += 0.2                                 # redder
    assert train_mod.colour_loss(grey, x).item() == pytest.approx(0.0, abs=1e-6)
    # Cb changes by -0.168736 * 0.2, Cr by 0.5 * 0.2: the mean of their absolute values
    assert train_mod.colour_loss(red, x).item() == pytest.approx((0.168736 + 0.5) * 0.2 / 2, rel=1e-5)
    # a pattern finer than the 4 x 4 blocks averages out: the term weighs colour per latent cell
    checker = x.clone()
    checker[:, 0, ::2, ::2] += 0.2
    checker[:, 0, 1::2, 1::2] -= 0.2
    assert train_mod.colour_loss(checker, x).item() == pytest.approx(0.0, abs=1e-6)


def test_makeup_share_chooses_which_chunks_wear_makeup():
    assert [train_mod._worn(i, 0.5) for i in range(6)] == [True, False] * 3    # the committed UNet's data
    assert all(train_mod._worn(i, 1.0) for i in range(5))
    assert not any(train_mod._worn(i, 0.0) for i in range(5))
    with pytest.raises(ValueError, match="makeup_share"):
        train_mod.render_training_set(2, 1, 32, makeup_share=1.5)


# ------------------------------------------------------------------------------------ the attention loss (experiment)
def test_attention_loss_is_off_by_default_and_checks_its_weight():
    import inspect

    params = inspect.signature(train_mod.train_unet).parameters
    assert params["attention_loss"].default == 0 and params["init_unet"].default is None
    vae = _random_vae()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="attention_loss"):
            train_mod.train_unet(vae=vae, **train_mod.TINY, threads=1, attention_loss=bad, text_encoder=_Tokens())
    with pytest.raises(ValueError, match="attention_kind"):
        train_mod.train_unet(vae=vae, **train_mod.TINY, threads=1, attention_loss=1.0, attention_kind="l2",
                             text_encoder=_Tokens())
    # the default run: no attention terms logged, the model's own processors on the returned UNet
    ema, log = train_mod.train_unet(vae=vae, **train_mod.TINY, threads=1, log_every=1, text_encoder=_Tokens())
    assert "attention" not in log["loss_curve"][0] and "attention_loss" not in log
    assert all(isinstance(p, PaddingMaskAttnProcessor) for p in ema.attn_processors.values())


def _random_vae():
    from facelab.diffusion.model import build_quick_vae

    torch.manual_seed(5)
    return build_quick_vae(64).eval().requires_grad_(False)


def test_attention_region_mass_is_the_share_of_each_token_map_inside_the_region():
    B, side, K = 2, 4, 6
    mask = torch.zeros(B, 1, side * side)
    mask[:, 0, :4] = 1.0                                   # the first row of the 4 x 4 grid: a quarter of the area
    w = torch.zeros(B, 1, K)
    w[:, 0, 2] = 1.0
    uniform = torch.full((B, side * side, K), 1.0 / K)
    assert train_mod.attention_region_mass([uniform], w, {side: mask}).flatten().tolist() == pytest.approx([0.25, 0.25])
    inside = uniform.clone()
    inside[:, 4:, 2] = 0.0                                 # token 2 is read only inside the region
    m = train_mod.attention_region_mass([inside, uniform], w, {side: mask})
    assert m.flatten().tolist() == pytest.approx([0.625, 0.625])  # layers averaged: (1 + 0.25) / 2


def test_attention_loss_is_finite_and_falls_faster_with_weight_on_the_tiny_config():
    """Same seed -> the same batches, timesteps and noise in both runs (the loss draws nothing); a near-zero weight
    only measures the attention term, a large one trains it: after a few steps its attention term is lower."""
    vae = _random_vae()
    settings = {**train_mod.TINY, "steps": 16, "batch_size": 8, "lr": 3e-3, "threads": 1, "log_every": 1,
                "p_uncond": 0.0}
    curves = {}
    for w in (1e-12, 1.0):
        ema, log = train_mod.train_unet(vae=vae, **settings, attention_loss=w, text_encoder=_Tokens())
        curves[w] = log["loss_curve"]
        assert all(np.isfinite([r["loss"], r["attention"], r["attention_mass"]]).all() for r in curves[w])
        assert log["attention_loss"] == w and log["attention_sides"] == [16, 8]
        assert all(isinstance(p, PaddingMaskAttnProcessor) for p in ema.attn_processors.values())
    seen = [r["attention"] for r in curves[1e-12]]
    assert max(seen) > 0                                    # the tiny set's captions name the makeup words
    late = slice(-6, None)
    assert (np.mean([r["attention"] for r in curves[1.0][late]])
            < np.mean([r["attention"] for r in curves[1e-12][late]]))
    assert (np.mean([r["attention_mass"] for r in curves[1.0][late]])
            > np.mean([r["attention_mass"] for r in curves[1e-12][late]]))


def test_fine_tuning_starts_from_the_given_weights():
    vae = _random_vae()
    torch.manual_seed(9)
    from facelab.diffusion.model import build_quick_unet

    init = build_quick_unet(16, _Tokens.dim, vae.config.latent_channels)
    ema, log = train_mod.train_unet(vae=vae, **{**train_mod.TINY, "steps": 1}, lr=0.0, threads=1,
                                    init_unet=init, text_encoder=_Tokens())
    for (k, a), b in zip(init.state_dict().items(), ema.state_dict().values()):
        assert torch.equal(a, b), k                       # lr 0: the EMA is the initial weights
    with pytest.raises(ValueError, match="init_unet"):
        train_mod.train_unet(vae=vae, **train_mod.TINY, threads=1, init_unet=3.0, text_encoder=_Tokens())


def test_cross_qk_fine_tune_changes_only_the_cross_attention_queries_and_keys():
    vae = _random_vae()
    torch.manual_seed(9)
    from facelab.diffusion.model import build_quick_unet

    init = build_quick_unet(16, _Tokens.dim, vae.config.latent_channels)
    ema, log = train_mod.train_unet(vae=vae, **{**train_mod.TINY, "steps": 4, "ema_decay": 0.0}, lr=1e-2, threads=1,
                                    init_unet=init, trainable="cross_qk", attention_loss=1.0, text_encoder=_Tokens())
    assert log["trainable"] == "cross_qk"
    changed = {k for (k, a), b in zip(init.state_dict().items(), ema.state_dict().values()) if not torch.equal(a, b)}
    assert changed and all(".attn2.to_q." in k or ".attn2.to_k." in k for k in changed), sorted(changed)[:5]
    assert any(".attn2.to_k." in k for k in changed)
    with pytest.raises(ValueError, match="trainable"):
        train_mod.train_unet(vae=vae, **train_mod.TINY, threads=1, trainable="values", text_encoder=_Tokens())
    assert len(train_mod.trainable_parameters(build_quick_unet(16, 384, 8), "all")) > len(
        train_mod.trainable_parameters(build_quick_unet(16, 384, 8), "cross_qk")) > 0


def test_attention_targets_can_supervise_the_colour_that_names_the_makeup():
    lms = torch.rand(1, 68, 2) * 48 + 8
    prompts = ["a face with dark red lipstick and blue eyeshadow", "a face with red lipstick", "a face", ""]
    w0, m0 = train_mod.attention_targets(_Words(), prompts, lms, 64, (16, 8))
    w1, m1 = train_mod.attention_targets(_Words(), prompts, lms, 64, (16, 8), colour_words=True)
    on = lambda w, i, j: (w[i, j] > 0).nonzero().flatten().tolist()
    # positions: 1 + word index ("a"=1, "face"=2, "with"=3, "dark"=4, "red"=5, "lipstick"=6, "and"=7, "blue"=8, ...)
    assert on(w0, 0, 0) == [6] and on(w0, 0, 1) == [9] and on(w0, 1, 0) == [5]
    assert on(w1, 0, 0) == [4, 5, 6] and on(w1, 0, 1) == [8, 9] and on(w1, 1, 0) == [4, 5]
    assert w1[0, 0].sum() == pytest.approx(1.0) and w1[0, 0, 4] == pytest.approx(1 / 3)
    assert not w1[2:].any() and not w0[2:].any()                 # no makeup named: nothing to supervise
    assert all(torch.equal(m0[k], m1[k]) for k in m0)            # the regions do not change


# ------------------------------------------------------------------------------------ another UNet architecture
def test_a_unet_of_another_architecture_trains_saves_and_loads(tmp_path):
    from facelab import checkpoints
    from facelab.diffusion.model import (build_quick_unet, quick_unet_config, save_quick_model, unet_from_state)

    arch = {"attention_head_dim": [8, 8, 8], "transformer_layers_per_block": [2, 1, 1]}
    assert quick_unet_config(architecture=None) == quick_unet_config()          # the book's UNet is unchanged
    vae = _random_vae()
    torch.manual_seed(3)
    ema, log = train_mod.train_unet(vae=vae, **train_mod.TINY, threads=1, text_encoder=_Tokens(), architecture=arch)
    assert list(log["unet_config"]["attention_head_dim"]) == [8, 8, 8]
    assert list(log["unet_config"]["transformer_layers_per_block"]) == [2, 1, 1]
    assert len(ema.down_blocks[0].attentions[0].transformer_blocks) == 2          # two attention layers at 16 x 16
    assert len(ema.down_blocks[1].attentions[0].transformer_blocks) == 1
    assert ema.down_blocks[0].attentions[0].transformer_blocks[0].attn2.heads == 8
    # the checkpoint carries its configuration: it loads without being told the architecture
    path = tmp_path / "unet.safetensors"
    save_quick_model(ema, path, vae_sha256="0" * 64, token_length=24)
    state, meta = checkpoints.load(path, restore="test")
    loaded = unet_from_state(state, meta)
    z, t = torch.randn(2, vae.config.latent_channels, 16, 16), torch.tensor([10, 500])
    cond = torch.randn(2, 24, _Tokens.dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, t, encoder_hidden_states=cond).sample,
                                   ema(z, t, encoder_hidden_states=cond).sample, atol=2e-3, rtol=1e-2)  # fp16 file
    # a fine-tune must name the architecture its initial weights have
    with pytest.raises(ValueError, match="do not fit this UNet"):
        train_mod.train_unet(vae=vae, **train_mod.TINY, threads=1, text_encoder=_Tokens(), init_unet=ema)
    init = build_quick_unet(16, _Tokens.dim, vae.config.latent_channels, arch)
    train_mod.train_unet(vae=vae, **{**train_mod.TINY, "steps": 1}, threads=1, text_encoder=_Tokens(),
                         init_unet=init, architecture=arch)


def test_architecture_errors_name_what_is_allowed():
    from facelab.diffusion.model import UNET_ARCHITECTURE_KEYS, build_quick_unet

    vae = _random_vae()
    with pytest.raises(ValueError, match="not \\['cross_attention_dim'\\]"):
        train_mod.train_unet(vae=vae, **train_mod.TINY, threads=1, text_encoder=_Tokens(),
                             architecture={"cross_attention_dim": 64})
    with pytest.raises(ValueError, match="does not build"):
        build_quick_unet(16, 384, 8, {"block_out_channels": [30, 64, 96]})
    assert "architecture" in train_mod.EXPERIMENT_ARGS and "attention_head_dim" in UNET_ARCHITECTURE_KEYS
    assert train_mod._architecture_arg('{"attention_head_dim": [8, 8, 8]}') == {"attention_head_dim": [8, 8, 8]}
    import argparse

    for bad in ("[8, 8]", "{not json", '{"sample_size": 8}'):
        with pytest.raises(argparse.ArgumentTypeError):
            train_mod._architecture_arg(bad)
