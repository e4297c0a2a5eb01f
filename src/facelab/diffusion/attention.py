r"""Attention of a diffusers ``Attention`` module computed explicitly, with hooks on its scores and probabilities.

The UNet's attention at a layer is :math:`\mathrm{softmax}(QK^\top/\sqrt d + b)\,V`. The model's own processor
(:class:`facelab.diffusion.model.PaddingMaskAttnProcessor`) hands this to ``scaled_dot_product_attention``, which never
materialises the probabilities; the methods that read or change them (prompt-to-prompt control in
:mod:`facelab.privacy.attention`, the word maps of :mod:`facelab.diffusion.quality`, DiffAIM's structure loss in
:mod:`facelab.diffusion.hooks`) all go through :func:`explicit_attention`, which writes the computation out:

1. spatial norm (if the module has one), a 4-D input (B, C, H, W) flattened to (B, HW, C), group norm;
2. the additive bias :math:`b`: the ``attention_mask`` given, or for cross-attention without one the padding bias of
   the conditioning (:func:`facelab.diffusion.model.padding_bias`: -10000 at the padded tokens, as the model's own
   processor adds), repeated over the heads;
3. query, key and value projections (keys and values from the normed conditioning in cross-attention, from the
   normed hidden states in self-attention), split into heads: (B * heads, tokens, head_dim);
4. scores :math:`QK^\top \cdot \mathrm{scale} + b` (B * heads, Q, K) -> ``on_scores`` -> softmax -> ``on_probs``;
5. :math:`AV`, heads merged, output projection and dropout, back to (B, C, H, W) for a 4-D input, the residual
   added if the module has a residual connection, divided by ``rescale_output_factor``.

With neither callback and no padding this is diffusers' ``AttnProcessor`` (0.42) operation for operation, so its
output is bit-identical to it; against the model's scaled-dot-product processor it agrees to float rounding
(about 1e-6). One addition to ``AttnProcessor``: a module with query/key normalisation (``norm_q``, ``norm_k``) gets
it as ``AttnProcessor2_0`` applies it (``AttnProcessor`` leaves it out); the UNets here have none.

>>> class Recorder:                                                     # doctest: +SKIP
...     def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
...         keep = lambda probs: (self.maps.append(probs.detach()), probs)[1]
...         return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
...                                   on_probs=keep)
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from facelab.diffusion.model import padding_bias

__all__ = ["explicit_attention", "attention_probabilities"]

Callback = Optional[Callable[[torch.Tensor], torch.Tensor]]


def _checked(name: str, new, old: torch.Tensor) -> torch.Tensor:
    if not isinstance(new, torch.Tensor) or new.shape != old.shape:
        got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
        raise ValueError(f"{name} must return a tensor of the shape it was given (batch*heads, queries, keys) = "
                         f"{tuple(old.shape)}, got {got}")
    return new


def attention_probabilities(attn, query: torch.Tensor, key: torch.Tensor, bias: torch.Tensor | None = None, *,
                            on_scores: Callback = None, on_probs: Callback = None) -> torch.Tensor:
    """Softmax attention probabilities (B * heads, Q, K) of head-split ``query`` and ``key``, as diffusers'
    ``Attention.get_attention_scores`` computes them (scale, additive ``bias``, upcasts of the module), with
    ``on_scores`` applied to the scores before the softmax and ``on_probs`` to the probabilities after it."""
    dtype = query.dtype
    if attn.upcast_attention:
        query, key = query.float(), key.float()
    if bias is None:
        empty = torch.empty(query.shape[0], query.shape[1], key.shape[1], dtype=query.dtype, device=query.device)
        scores = torch.baddbmm(empty, query, key.transpose(-1, -2), beta=0, alpha=attn.scale)
    else:
        scores = torch.baddbmm(bias, query, key.transpose(-1, -2), beta=1, alpha=attn.scale)
    if on_scores is not None:
        scores = _checked("on_scores", on_scores(scores), scores)
    if attn.upcast_softmax:
        scores = scores.float()
    probs = scores.softmax(dim=-1).to(dtype)
    if on_probs is not None:
        probs = _checked("on_probs", on_probs(probs), probs)
    return probs


def explicit_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                       attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *,
                       on_probs: Callback = None, on_scores: Callback = None,
                       mask_padding: bool = True) -> torch.Tensor:
    """One attention module's forward pass, written out so its probabilities can be recorded or edited.

    Parameters
    ----------
    attn : diffusers.models.attention_processor.Attention
    hidden_states : torch.Tensor
        (B, N, C) tokens or a (B, C, H, W) feature map.
    encoder_hidden_states : torch.Tensor, optional
        (B, K, D) conditioning for cross-attention; None for self-attention.
    attention_mask : torch.Tensor, optional
        Additive bias, (B, 1, K) or (B * heads, Q, K), as diffusers' processors take it.
    temb : torch.Tensor, optional
        Time embedding for a module with a spatial norm.
    on_probs : callable, optional
        ``on_probs(probs) -> probs`` on the (B * heads, Q, K) probabilities after the softmax (record them, or return
        edited ones of the same shape).
    on_scores : callable, optional
        ``on_scores(scores) -> scores`` on the pre-softmax scores (B * heads, Q, K), bias included.
    mask_padding : bool
        For cross-attention without an ``attention_mask``, add :func:`facelab.diffusion.model.padding_bias` of the
        conditioning (as the quick UNet's own processor does).

    Returns
    -------
    torch.Tensor
        The module's output, shaped as ``hidden_states``.

    Raises
    ------
    ValueError
        ``hidden_states`` that are not 3-D or 4-D, or a callback that returns another shape.
    """
    if hidden_states.ndim not in (3, 4):
        raise ValueError(f"hidden_states must be (B, N, C) tokens or a (B, C, H, W) feature map, got shape "
                         f"{tuple(hidden_states.shape)}")
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    is_cross = encoder_hidden_states is not None
    if is_cross and attention_mask is None and mask_padding:
        attention_mask = padding_bias(encoder_hidden_states)
    batch, n_keys, _ = (encoder_hidden_states if is_cross else hidden_states).shape
    attention_mask = attn.prepare_attention_mask(attention_mask, n_keys, batch)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if not is_cross:
        context = hidden_states
    elif attn.norm_cross:
        context = attn.norm_encoder_hidden_states(encoder_hidden_states)
    else:
        context = encoder_hidden_states
    key, value = attn.to_k(context), attn.to_v(context)
    query, key, value = (attn.head_to_batch_dim(t) for t in (query, key, value))
    if getattr(attn, "norm_q", None) is not None:
        query = attn.norm_q(query)
    if getattr(attn, "norm_k", None) is not None:
        key = attn.norm_k(key)
    probs = attention_probabilities(attn, query, key, attention_mask, on_scores=on_scores, on_probs=on_probs)
    out = attn.batch_to_head_dim(torch.bmm(probs, value))
    out = attn.to_out[1](attn.to_out[0](out))
    if input_ndim == 4:
        out = out.transpose(-1, -2).reshape(batch, channel, height, width)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor
