"""Train the quick latent UNet from scratch with cross-attention supervision on a GPU machine that has no MiniLM.

Issue #20's attention gate ("lipstick" / "eyeshadow" put at least half of their cross-attention mass inside their
landmark regions) was missed by every CPU fine-tune of the base UNet (then the book's UNet) without distillation
(stops 30-32: the gate rose, the prompted colour was lost; the book's UNet now reaches it with distillation towards
the base, :data:`facelab.diffusion.model.QUICK_STAGES`: lipstick clearly, eyeshadow at the gate's edge). This script is the experiment those notes ask for: the
localisation loss is part of the *base* training, at GPU scale, with a control run without it.

A GPU machine without network has no copy of ``all-MiniLM-L6-v2`` (90 MB, more than the transfer allows), so the
prompts' token states are computed here once, on the CPU, with the real encoder, and travel as a small file:

    python scripts/ldm_attention_gpu.py prepare --out .gpu/ldm_text.safetensors --n-identities 4096
    # on the GPU machine (diffusers carried as a wheel):
    python scripts/ldm_attention_gpu.py train --text .gpu/ldm_text.safetensors --out-dir OUT/a \\
        --n-identities 4096 --attention-loss 0.1 --batch-size 64 --minutes 6

A UNet of more attention capacity (issue #20's eyeshadow gate: the 16 x 16 layers' maps settle at about 0.71 of their
mass in the eyelid band in every UNet trained so far, GPU or CPU; data/runs/ldm_attention_gpu) trains the same way
with ``--architecture`` (:func:`facelab.diffusion.model.quick_unet_config`), e.g. two runs side by side:

    python scripts/ldm_attention_gpu.py train ... --out-dir OUT/h8 --attention-loss 0.05 \
        --architecture '{"attention_head_dim": [8, 8, 8]}'
    python scripts/ldm_attention_gpu.py train ... --out-dir OUT/t2 --attention-loss 0.05 \
        --architecture '{"transformer_layers_per_block": [2, 1, 1], "block_out_channels": [64, 64, 96]}'

and is measured back here like the others (``benchmarks/bench_masque_attention.py --unet OUT/h8/face_ldm_quick.safetensors
--gate-faces 64 --chapter-now --blend-thresholds 0``).

``prepare`` renders the training set's captions (:func:`facelab.diffusion.train.render_training_set`, the same
deterministic faces ``train`` renders), encodes every distinct caption with :class:`MiniLMTokenEncoder` and stores the
non-padded token states in float16 (relative rounding ~5e-4) with the word pieces of every caption and of the
supervised words and colour phrases. ``train`` runs :func:`facelab.diffusion.train.train_unet` with a
:class:`CachedTokenEncoder` built from that file (a caption that is not in it is an error, never a silent zero) and
saves the EMA UNet as a quick-model checkpoint (:func:`facelab.diffusion.model.save_quick_model`) that
:func:`facelab.diffusion.model.load_quick_model` reads with the real encoder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


class _CachedTokenizer:
    """The word-piece split of the prompts and words of a prepared file (``tokenize`` only)."""

    def __init__(self, pieces: dict, max_length: int):
        self._pieces = pieces
        self.model_max_length = int(max_length)

    def tokenize(self, text: str) -> list:
        try:
            return list(self._pieces[text])
        except KeyError:
            raise KeyError(f"{text!r} was not tokenized by `prepare` (prepare with the same --n-identities and "
                           f"--per-identity as the training run)") from None


class CachedTokenEncoder:
    """Prompts -> (B, L, 384) token states read from a ``prepare`` file (zeros at padding, as the real encoder)."""

    dim = 384

    def __init__(self, path):
        from safetensors.torch import load_file

        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        tensors = load_file(str(path))
        self.length = int(meta["token_length"])
        flat, offsets = tensors["states"].float(), tensors["offsets"].tolist()
        self._states = {}
        for k, p in enumerate(meta["prompts"]):
            s = torch.zeros(self.length, flat.shape[1])
            a, b = offsets[k], offsets[k + 1]
            s[:b - a] = flat[a:b]
            self._states[p] = s
        self.tokenizer = _CachedTokenizer(meta["pieces"], self.length)
        self.meta = meta

    def __call__(self, prompts) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        missing = [p for p in prompts if p not in self._states]
        if missing:
            raise KeyError(f"{len(missing)} prompts are not in the prepared token file, e.g. {missing[0]!r}")
        return torch.stack([self._states[p] for p in prompts])


def prepare(out, n_identities: int, per_identity: int = 4, size: int = 64, seed: int = 0) -> dict:
    from safetensors.torch import save_file

    from facelab.diffusion.model import TOKEN_LENGTH, MiniLMTokenEncoder
    from facelab.diffusion.train import ATTENTION_WORDS, render_training_set
    from facelab.synth.world import MAKEUP_COLOURS

    t0 = time.perf_counter()
    _, captions = render_training_set(n_identities, per_identity, size, seed)
    prompts = sorted(set(captions)) + [""]
    enc = MiniLMTokenEncoder()
    states = torch.cat([enc(prompts[i:i + 64]) for i in range(0, len(prompts), 64)])       # (P, L, 384)
    tok = enc.tokenizer
    lengths = [len(tok.tokenize(p)) + 2 if p else 2 for p in prompts]
    for p, n, s in zip(prompts, lengths, states):
        if s[n:].abs().max() > 0:
            raise AssertionError(f"token states beyond the prompt's {n} positions are not zero for {p!r}")
    flat = torch.cat([s[:n] for s, n in zip(states, lengths)]).half()
    offsets = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0).tolist()), dtype=torch.long)
    words = list(ATTENTION_WORDS)
    extra = words + [f"{c} {w}" for w in words for c in MAKEUP_COLOURS.get(w, ())]
    pieces = {t: tok.tokenize(t) for t in prompts + extra}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"states": flat.contiguous(), "offsets": offsets}, str(out))
    meta = {"prompts": prompts, "pieces": pieces, "token_length": TOKEN_LENGTH, "n_identities": n_identities,
            "per_identity": per_identity, "size": size, "seed": seed, "encoder": "all-MiniLM-L6-v2 token states, "
            "float16, non-padded positions only", "seconds": round(time.perf_counter() - t0, 1)}
    out.with_suffix(".json").write_text(json.dumps(meta))
    err = (flat.float() - torch.cat([s[:n] for s, n in zip(states, lengths)])).abs().max().item()
    return {"prompts": len(prompts), "bytes": out.stat().st_size, "max_abs_rounding": err,
            "seconds": meta["seconds"]}


def train(text, out_dir, *, vae_path=None, **settings) -> dict:
    from facelab import checkpoints
    from facelab.diffusion.model import QUICK_CHECKPOINT, QUICK_VAE_CHECKPOINT, save_quick_model, vae_from_state
    from facelab.diffusion.train import train_unet

    enc = CachedTokenEncoder(text)
    for k in ("n_identities", "per_identity"):
        if settings.get(k) is not None and settings[k] != enc.meta[k]:
            raise ValueError(f"--{k.replace('_', '-')} {settings[k]} differs from the prepared file's {enc.meta[k]}")
    vae_path = Path(vae_path or QUICK_VAE_CHECKPOINT)
    vae_state, vae_meta = checkpoints.load(vae_path, restore="python -m facelab.diffusion.train --stage vae")
    t0 = time.perf_counter()
    ema, log = train_unet(vae=vae_from_state(vae_state, vae_meta), text_encoder=enc, checkpoint_every_minutes=None,
                          **settings)
    log["text_encoder"] += " (token states precomputed on the CPU by scripts/ldm_attention_gpu.py prepare, float16)"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / QUICK_CHECKPOINT.name
    save_quick_model(ema, path, vae_sha256=vae_meta["sha256"], settings=settings, log=log,
                     token_length=log["token_length"])
    short = {k: v for k, v in log.items() if k not in ("loss_curve", "unet_config", "scheduler")}
    short["loss_curve_tail"] = log["loss_curve"][-5:]
    short["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / "summary.json").write_text(json.dumps(short, indent=1, default=str))
    return short


def _architecture_arg(text):
    from facelab.diffusion.train import _architecture_arg as parse

    return parse(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", required=True)
    p.add_argument("--n-identities", type=int, required=True)
    p.add_argument("--per-identity", type=int, default=4)
    t = sub.add_parser("train")
    t.add_argument("--text", required=True)
    t.add_argument("--out-dir", required=True)
    t.add_argument("--vae", default=None)
    t.add_argument("--n-identities", type=int, required=True)
    t.add_argument("--per-identity", type=int, default=4)
    t.add_argument("--minutes", type=float, required=True)
    t.add_argument("--steps", type=int, default=10 ** 7)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--attention-loss", type=float, default=0.0)
    t.add_argument("--attention-kind", choices=("nll", "linear"), default="nll")
    t.add_argument("--attention-max-t", type=int, default=None)
    t.add_argument("--log-every", type=int, default=200)
    t.add_argument("--architecture", type=_architecture_arg, default=None,
                   help="a JSON object changing the UNet's attention capacity (python -m facelab.diffusion.train "
                        "--help: --architecture)")
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        print(json.dumps(prepare(a.out, a.n_identities, a.per_identity)))
        return
    if Path(a.out_dir).exists() and any(Path(a.out_dir).iterdir()):
        sys.exit(f"{a.out_dir} is not empty: choose a new --out-dir (nothing is overwritten)")
    s = train(a.text, a.out_dir, vae_path=a.vae, n_identities=a.n_identities, per_identity=a.per_identity,
              minutes=a.minutes, steps=a.steps, batch_size=a.batch_size, lr=a.lr, threads=a.threads,
              attention_loss=a.attention_loss, attention_kind=a.attention_kind, attention_max_t=a.attention_max_t,
              log_every=a.log_every, **({"architecture": a.architecture} if a.architecture else {}))
    print(json.dumps({k: v for k, v in s.items() if k not in ("scaling_factor",)}, default=str)[:4000])


if __name__ == "__main__":
    main()
