"""facelab.diffusion.attention: the explicit attention shared by the prompt-to-prompt editor, the attention recorder
of the quality gates and DiffAIM's UNet probe."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from facelab.diffusion import attention as fa
from facelab.diffusion.attention import explicit_attention

torch.set_num_threads(1)


def _attn(**kw):
    torch.manual_seed(0)
    return Attention(**{"query_dim": 32, "heads": 4, "dim_head": 8, **kw}).eval()


def _x(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _context(n=2, k=6, d=16, used=None, seed=2):
    """Conditioning tokens; with ``used``, exact zero rows from ``used`` on (padding, as MiniLMTokenEncoder)."""
    c = _x(n, k, d, seed=seed)
    if used is not None:
        c[:, used:] = 0
    return c


def _recorder(store):
    def keep(probs):
        store.append(probs.detach().clone())
        return probs
    return keep


# ----------------------------------------------------------------------------------- equal to diffusers
@torch.no_grad()
def test_self_attention_is_bit_identical_to_diffusers_attn_processor():
    attn = _attn()
    h = _x(2, 10, 32)
    assert torch.equal(explicit_attention(attn, h), AttnProcessor()(attn, h))
    mask = torch.zeros(2, 1, 10)
    mask[1, :, 7:] = -10000.0                                     # an explicit mask is used as given
    assert torch.equal(explicit_attention(attn, h, attention_mask=mask), AttnProcessor()(attn, h, None, mask))


@torch.no_grad()
def test_cross_attention_without_padding_is_bit_identical_to_diffusers_attn_processor():
    for kw in ({}, {"cross_attention_norm": "layer_norm", "upcast_attention": True, "upcast_softmax": True}):
        attn = _attn(cross_attention_dim=16, **kw)
        h, c = _x(2, 10, 32), _context()                          # no zero rows: no padding bias
        assert torch.equal(explicit_attention(attn, h, c), AttnProcessor()(attn, h, c))
        probs = []
        explicit_attention(attn, h, c, on_probs=_recorder(probs))
        assert probs[0].shape == (2 * 4, 10, 6)
        assert torch.allclose(probs[0].sum(-1), torch.ones(8, 10), atol=1e-6)


@torch.no_grad()
def test_four_d_input_with_group_norm_residual_and_rescale():
    attn = _attn(norm_num_groups=8, residual_connection=True, rescale_output_factor=2.0)
    h = _x(2, 32, 3, 5)                                           # (B, C, H, W): 15 positions
    out = explicit_attention(attn, h)
    assert out.shape == h.shape
    assert torch.equal(out, AttnProcessor()(attn, h))
    probs = []
    explicit_attention(attn, h, on_probs=_recorder(probs))
    assert probs[0].shape == (2 * 4, 15, 15)
    # residual and rescale: (attention + h) / 2 with the attention of the flattened, group-normed map
    attn.residual_connection, attn.rescale_output_factor = False, 1.0
    assert torch.allclose(out, (explicit_attention(attn, h) + h) / 2.0, atol=1e-6)


@torch.no_grad()
def test_spatial_norm_takes_the_time_embedding():
    attn = _attn(spatial_norm_dim=3, residual_connection=True)
    h, zq = _x(2, 32, 4, 4), _x(2, 3, 2, 2, seed=3)
    out = explicit_attention(attn, h, temb=zq)
    assert torch.equal(out, AttnProcessor()(attn, h, temb=zq))
    assert not torch.allclose(out, explicit_attention(attn, h, temb=2 * zq + 1), atol=1e-4)


# ----------------------------------------------------------------------------------- padding
@torch.no_grad()
def test_padding_mask_zeroes_attention_to_padded_keys():
    attn = _attn(cross_attention_dim=16)
    h, c = _x(2, 10, 32), _context(used=3)                        # keys 3..5 are padding (zero rows)
    probs = []
    out = explicit_attention(attn, h, c, on_probs=_recorder(probs))
    assert float(probs[0][..., 3:].abs().max()) == 0.0           # exp(-10000) underflows: exactly no attention
    assert torch.allclose(probs[0][..., :3].sum(-1), torch.ones(8, 10), atol=1e-6)
    # the same as attending to the real tokens only
    assert torch.allclose(out, AttnProcessor()(attn, h, c[:, :3]), atol=1e-6)
    # without the mask the zero rows take attention (key = bias of to_k = 0 here, so logit 0) and change the output
    unmasked = []
    plain = explicit_attention(attn, h, c, on_probs=_recorder(unmasked), mask_padding=False)
    assert float(unmasked[0][..., 3:].min()) > 0
    assert torch.equal(plain, AttnProcessor()(attn, h, c))
    assert not torch.allclose(plain, out, atol=1e-4)
    # a conditioning that is all padding keeps its keys (no empty row of attention)
    empty = []
    explicit_attention(attn, h, torch.zeros(2, 6, 16), on_probs=_recorder(empty))
    assert torch.allclose(empty[0], torch.full_like(empty[0], 1 / 6), atol=1e-6)


class _Plain:
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


@torch.no_grad()
def test_matches_the_quick_unets_own_masked_processor():
    from facelab.diffusion.model import build_quick_unet

    torch.manual_seed(0)
    unet = build_quick_unet(latent_size=8, cross_attention_dim=32).eval()
    x, c = _x(2, 4, 8, 8), _context(k=6, d=32, used=3)
    own = unet(x, 500, encoder_hidden_states=c).sample         # PaddingMaskAttnProcessor: scaled-dot-product
    saved = unet.attn_processors
    unet.set_attn_processor(_Plain())
    try:
        mine = unet(x, 500, encoder_hidden_states=c).sample
    finally:
        unet.set_attn_processor(saved)
    assert torch.allclose(mine, own, atol=1e-5)


# ----------------------------------------------------------------------------------- callbacks
@torch.no_grad()
def test_edited_probabilities_change_the_output():
    attn = _attn(cross_attention_dim=16)
    h, c = _x(2, 10, 32), _context()
    ref = explicit_attention(attn, h, c)
    assert torch.equal(explicit_attention(attn, h, c, on_probs=lambda p: p), ref)
    uniform = explicit_attention(attn, h, c, on_probs=lambda p: torch.full_like(p, 1 / p.shape[-1]))
    assert not torch.allclose(uniform, ref, atol=1e-4)
    # uniform attention reads the mean value of the keys at every query
    v = attn.to_v(c).mean(1, keepdim=True).expand(-1, 10, -1)
    assert torch.allclose(uniform, attn.to_out[0](v), atol=1e-5)
    # re-weighting one token (prompt-to-prompt) moves the output towards that token's value
    def boost(p):
        p = p.clone()
        p[..., 2] *= 5
        return p
    assert not torch.allclose(explicit_attention(attn, h, c, on_probs=boost), ref, atol=1e-4)


@torch.no_grad()
def test_scores_callback_sees_the_biased_logits_before_the_softmax():
    attn = _attn(cross_attention_dim=16)
    h, c = _x(2, 10, 32), _context(used=4)
    seen, probs = [], []
    explicit_attention(attn, h, c, on_scores=_recorder(seen), on_probs=_recorder(probs))
    q = attn.head_to_batch_dim(attn.to_q(h))
    k = attn.head_to_batch_dim(attn.to_k(c))
    logits = q @ k.transpose(1, 2) * attn.scale
    assert torch.allclose(seen[0][..., :4], logits[..., :4], atol=1e-5)
    assert torch.allclose(seen[0][..., 4:], logits[..., 4:] - 10000.0, atol=1e-3)
    assert torch.allclose(probs[0], seen[0].softmax(-1), atol=1e-7)
    # a temperature on the scores sharpens the attention
    sharp = []
    explicit_attention(attn, h, c, on_scores=lambda s: 4 * s, on_probs=_recorder(sharp))
    assert float(sharp[0].amax(-1).mean()) > float(probs[0].amax(-1).mean())


def test_bad_shapes_say_what_was_expected():
    attn = _attn()
    with pytest.raises(ValueError, match=r"\(B, N, C\) tokens or a \(B, C, H, W\)"):
        explicit_attention(attn, torch.zeros(10, 32))
    with pytest.raises(ValueError, match="on_probs must return a tensor of the shape"):
        explicit_attention(attn, _x(2, 10, 32), on_probs=lambda p: p[:, :5])
    with pytest.raises(ValueError, match="on_scores must return a tensor"):
        explicit_attention(attn, _x(2, 10, 32), on_scores=lambda s: None)


# ----------------------------------------------------------------------------------- the three processors
def test_editor_recorder_and_probe_all_compute_through_the_shared_function(monkeypatch):
    from facelab.diffusion import UNetProbe, hooks, quality
    from facelab.diffusion.model import build_quick_unet
    from facelab.privacy import attention as pa

    calls = []

    def counted(*args, **kw):
        calls.append(kw.get("on_probs") is not None or kw.get("on_scores") is not None)
        return explicit_attention(*args, **kw)

    for mod in (fa, pa, hooks):
        monkeypatch.setattr(mod, "explicit_attention", counted)
    torch.manual_seed(0)
    unet = build_quick_unet(latent_size=8, cross_attention_dim=32).eval().requires_grad_(False)
    n_modules = len(unet.attn_processors)                          # self- and cross-attention modules
    x, c = _x(2, 4, 8, 8), _context(k=6, d=32, used=3)
    with torch.no_grad():
        with quality.AttentionRecorder(unet) as rec:
            unet(x, 500, encoder_hidden_states=c)
        assert len(calls) == n_modules // 2 and all(calls) and len(rec.probs) == n_modules // 2
        calls.clear()
        src = pa.SourceAttention()
        with pa.AttentionEditor(unet, None, 2, (8, 8), 4, source=src, mode="record", self_replace=0.5) as ed:
            ed.begin_step(0)
            unet(x, 500, encoder_hidden_states=c)
        assert len(calls) == n_modules and all(calls) and len(src.probs) == n_modules
        calls.clear()
        with UNetProbe(unet) as probe:
            probe.reset()
            unet(torch.cat([x, x + 1]), 500, encoder_hidden_states=torch.cat([c, c]))
        assert len(calls) == n_modules and sum(calls) == n_modules // 2      # scores hook on self-attention only
        assert probe.structure.shape == (2,) and (probe.structure > 0).all()
