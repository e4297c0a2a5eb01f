r"""Prompt-to-prompt attention control for MASQUE: record the source branch's attention maps once, replay them into
each makeup edit, and record the edited word's cross-attention (Hertz et al. 2023).

The UNet's attention at a layer is :math:`\mathrm{softmax}(QK^\top/\sqrt d + b)\,V`; its probabilities
:math:`A \in \mathbb R^{Q\times K}` say, for each of the :math:`Q` image positions, how much it reads from each of the
:math:`K` keys (text tokens in cross-attention, image positions in self-attention). The bias :math:`b` is
:func:`facelab.diffusion.model.padding_bias`: -10000 for the padded positions of the prompt (the quick model's MiniLM
token states are exact zeros there), so padding takes no attention. With the source prompt ("a face of a person")
and the makeup prompt ("... with red lipstick"):

* **cross-attention fusion** (first ``cross_replace`` fraction of the steps): for every token the two prompts share,
  the edit uses the *source* branch's map, :math:`A^{edit}_{:,j} \leftarrow A^{src}_{:,m(j)}`; new tokens (the makeup
  words) keep their own map. The layout of the face stays the source's while the new words act;
* **word re-weighting**: the maps of the named word are multiplied by ``word_weight`` (prompt-to-prompt's
  re-weighting edit);
* **self-attention injection** (first ``self_replace`` fraction): the edit uses the source's self-attention maps at
  layers with at most ``max_self_tokens`` positions, which keeps the geometry;
* **recording**: the cross-attention of the named word's tokens (all its word pieces: MiniLM splits "eyeshadow" into
  ``eyes ##had ##ow``) in the edit, averaged over heads and layers, is accumulated on the latent grid: the map that
  prompt-to-prompt's *local blend* thresholds to decide where the edit may act. MASQUE intersects it with a
  face-region mask (:mod:`facelab.privacy.masks`).

The source branch of a null-text inversion is the same in every edit of the same photos, so :class:`AttentionEditor`
works in two modes: ``"record"`` stores the conditional source pass's maps (once, while the inversion runs) in a
:class:`SourceAttention`, and ``"edit"`` replays them into the conditional group of an edit batch (the unconditional
group is left alone, as in prompt-to-prompt). An edit therefore costs one branch, not two.

A model whose prompt encoder gives a single conditioning token has :math:`K = 1`: every cross-attention map is
identically 1 and there is nothing to fuse or record, so :attr:`AttentionEditor.informative` is False and MASQUE
falls back to a map of where the source and edit noise predictions differ (as DiffEdit does). Self-attention
injection works for every model.

The processor is a diffusers attention processor: :class:`AttentionEditor` installs it on every attention module of
a ``UNet2DConditionModel`` on entry and restores the UNet's own processors on exit.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facelab.diffusion.attention import explicit_attention

__all__ = ["PromptError", "TokenAlignment", "align_prompts", "check_prompts", "word_pieces", "SourceAttention",
           "AttentionEditor", "EditAttnProcessor"]


class PromptError(ValueError):
    """The makeup prompt does not name the edited word, names no makeup the model has a region for, or the source
    prompt already names it."""


@dataclass
class TokenAlignment:
    """How the edit prompt's tokens map to the source prompt's.

    Attributes
    ----------
    mapper : torch.LongTensor
        (K,) for each edit token, the source token whose cross-attention map it takes.
    alpha : torch.Tensor
        (K,) 1 where the token is shared (map replaced), 0 for new tokens (own map kept).
    word_indices : list of int
        Positions of the named word's tokens (word pieces) in the edit prompt (empty for single-token encoders).
    n_tokens : int
        K, the number of keys of the UNet's cross-attention.
    pieces : list of str
        The word pieces of the named word, where the tokenizer can say (else empty).
    """

    mapper: torch.Tensor
    alpha: torch.Tensor
    word_indices: list
    n_tokens: int
    pieces: list = None

    @property
    def informative(self) -> bool:
        """Whether token-level cross-attention maps exist (more than one conditioning token)."""
        return self.n_tokens > 1


def _tokenizer(model):
    return getattr(getattr(model, "text_encoder", None), "tokenizer", None)


def _content_ids(tok, text: str) -> list:
    """Token ids of ``text`` without the start token, the end token and padding."""
    ids = tok([text], padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids[0].tolist()
    eos = getattr(tok, "eos_token_id", None)
    eos = 2 if eos is None else eos
    end = ids.index(eos, 1) if eos in ids[1:] else len(ids)
    return ids[1:end]


def word_pieces(model, word: str) -> list:
    """The tokenizer's pieces of ``word`` (``"eyeshadow"`` -> ``["eyes", "##had", "##ow"]`` for MiniLM); empty when
    the model has no tokenizer (one sentence vector per prompt)."""
    tok = _tokenizer(model)
    if tok is None or not hasattr(tok, "tokenize"):
        return []
    return list(tok.tokenize(word))


def check_prompts(source_prompt: str, edit_prompt: str, word: str) -> None:
    """The named word must appear in the makeup prompt (as whole words) and not in the source prompt."""
    if not isinstance(word, str) or not word.strip():
        raise PromptError(f"name the edited word (e.g. 'lipstick'), got {word!r}")
    if not isinstance(edit_prompt, str) or not isinstance(source_prompt, str):
        raise PromptError(f"prompts must be strings, got {type(source_prompt).__name__} and "
                          f"{type(edit_prompt).__name__}")
    w = word.lower().split()
    e = edit_prompt.lower().replace(",", " ").split()
    s = source_prompt.lower().replace(",", " ").split()
    has = lambda words: any(words[i:i + len(w)] == w for i in range(len(words) - len(w) + 1))
    if not has(e):
        example = repr(edit_prompt.split()[-1]) if edit_prompt.split() else "'lipstick'"
        raise PromptError(f"the makeup prompt {edit_prompt!r} does not contain the edited word {word!r}: "
                          f"name a word of the prompt, e.g. {example}")
    if has(s):
        raise PromptError(f"the source prompt {source_prompt!r} already contains the edited word {word!r}: "
                          f"the source prompt describes the face before the makeup")


def align_prompts(model, source_prompt: str, edit_prompt: str, word: str) -> TokenAlignment:
    """Token alignment of a prompt pair for :class:`AttentionEditor` (prompt-to-prompt "refinement").

    Start token, shared tokens (longest common subsequence) and the end token with the padding (aligned from the
    end) take the source's maps; the new tokens, among them every piece of ``word``, keep their own.

    Raises
    ------
    PromptError
        The makeup prompt lacks the named word, or the source prompt already has it.
    """
    check_prompts(source_prompt, edit_prompt, word)
    tok = _tokenizer(model)
    if tok is None:   # one conditioning vector per prompt (sentence embedding): nothing token-level to align
        K = int(model.encode_prompt([source_prompt]).shape[1])
        return TokenAlignment(torch.arange(K), torch.ones(K), [], K, [])
    K = int(tok.model_max_length)
    src, edt, wid = _content_ids(tok, source_prompt), _content_ids(tok, edit_prompt), _content_ids(tok, word)
    starts = [i for i in range(len(edt) - len(wid) + 1) if edt[i:i + len(wid)] == wid]
    if not wid or not starts:
        raise PromptError(f"the tokens of {word!r} are not in the tokenised makeup prompt {edit_prompt!r}")
    word_indices = [1 + starts[-1] + k for k in range(len(wid))]
    mapper, alpha = torch.arange(K), torch.zeros(K)
    mapper[0], alpha[0] = 0, 1.0                                  # start token
    for a, b, size in difflib.SequenceMatcher(None, src, edt, autojunk=False).get_matching_blocks():
        for k in range(size):
            mapper[1 + b + k], alpha[1 + b + k] = 1 + a + k, 1.0
    shift = len(edt) - len(src)                                   # end token and padding: aligned from the end
    for j in range(1 + len(edt), K):
        if 0 <= j - shift < K:
            mapper[j], alpha[j] = j - shift, 1.0
    alpha[word_indices] = 0.0
    return TokenAlignment(mapper, alpha, word_indices, K, word_pieces(model, word))


class SourceAttention:
    """The conditional source pass's attention, recorded once and replayed into every edit of the same photos.

    Attributes
    ----------
    probs : dict
        ``(step, layer) -> (N, heads, Q, K)`` probabilities: every cross-attention layer at every step, and the
        self-attention layers with at most ``max_self_tokens`` positions during the first ``self_steps`` steps.
    n_tokens : int or None
        K of the cross-attention layers.
    """

    def __init__(self, self_steps: int = 0, max_self_tokens: int = 16 * 16):
        self.probs = {}
        self.self_steps = int(self_steps)
        self.max_self_tokens = int(max_self_tokens)
        self.n_tokens = None

    @property
    def steps(self) -> int:
        return 1 + max((s for s, _ in self.probs), default=-1)

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.probs.values())


class AttentionEditor:
    """Context manager: prompt-to-prompt control of a UNet, in one of two modes.

    * ``mode="record"``: every UNet call of the batch (N source faces, conditional) stores its maps in ``source``.
    * ``mode="edit"``: the UNet batch is ``G`` groups of N edit faces (1 without classifier-free guidance, 2 with:
      unconditional group first); the last (conditional) group takes the recorded source maps as described in the
      module docstring, and the named word's cross-attention is recorded. Other batch sizes pass through unchanged.

    Call :meth:`begin_step` before each reverse step (the maps are indexed by step and by the order of the
    attention layers in the UNet's forward pass).

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel
    alignment : TokenAlignment or None
        Needed for ``"edit"``.
    n_faces : int
        N, faces per group.
    latent_size : (int, int)
        The UNet's input grid (h, w), on which word maps are accumulated.
    num_steps : int
    source : SourceAttention
        Filled (record) or read (edit).
    cross_replace, self_replace : float
        Fractions of the reverse steps (from the noisiest) with cross-attention fusion / self-attention injection.
    word_weight : float
        Multiplier of the named word's cross-attention in the edit.
    max_self_tokens : int
        Self-attention injection only at layers with at most this many positions (prompt-to-prompt: 16 x 16 on
        Stable Diffusion's 64 x 64 latent, i.e. the two coarsest levels).

    Attributes
    ----------
    word_maps : torch.Tensor or None
        (N, h, w) accumulated cross-attention of the named word (edit, conditional group).
    """

    def __init__(self, unet, alignment: TokenAlignment | None, n_faces: int, latent_size, num_steps: int, *,
                 source: SourceAttention, mode: str = "edit", cross_replace: float = 0.8, self_replace: float = 0.4,
                 word_weight: float = 1.0, max_self_tokens: int = 16 * 16):
        if mode not in ("record", "edit"):
            raise ValueError(f"mode must be 'record' or 'edit', got {mode!r}")
        if mode == "edit" and alignment is None:
            raise ValueError("an edit needs the prompts' TokenAlignment (align_prompts)")
        self.unet = unet
        self.alignment = alignment
        self.mode = mode
        self.source = source
        self.n_faces = int(n_faces)
        self.latent_size = tuple(latent_size)
        self.cross_steps = int(round(cross_replace * num_steps))
        own_self = int(round(self_replace * num_steps))
        if mode == "record":
            source.self_steps, source.max_self_tokens = own_self, int(max_self_tokens)
        self.self_steps = min(own_self, source.self_steps)
        self.max_self_tokens = source.max_self_tokens
        self.word_weight = float(word_weight)
        self.step = 0
        self.layer = 0
        self.active = True
        self.word_maps = None
        self.n_recorded = 0

    @property
    def informative(self) -> bool:
        return self.alignment is not None and self.alignment.informative and bool(self.alignment.word_indices)

    def begin_step(self, step: int) -> None:
        self.step = int(step)
        self.layer = 0

    def __enter__(self):
        self._saved = self.unet.attn_processors
        self.unet.set_attn_processor({name: EditAttnProcessor(self, fallback=proc)
                                      for name, proc in self._saved.items()})
        return self

    def __exit__(self, *exc):
        self.unet.set_attn_processor(self._saved)

    def word_map(self) -> torch.Tensor | None:
        """Mean recorded word map (N, h, w), or None when nothing informative was recorded."""
        if self.word_maps is None or not self.informative:
            return None
        return self.word_maps / max(1, self.n_recorded)

    def leaves_self_attention(self, batch: int, queries: int) -> bool:
        """Whether :meth:`__call__` would return the next self-attention layer's probabilities unchanged (neither
        recorded nor injected: after the injection steps, or at a layer with more positions than
        ``max_self_tokens``); then :class:`EditAttnProcessor` runs the module's own processor instead and only
        :meth:`skip_layer` counts the layer."""
        keep_self = self.step < self.self_steps and queries <= self.max_self_tokens
        return not self.active or batch % self.n_faces != 0 or not keep_self

    def skip_layer(self) -> None:
        """Count a layer that :meth:`__call__` does not see (layers are keyed by their order within a step)."""
        self.layer += 1

    def __call__(self, probs: torch.Tensor, is_cross: bool, heads: int) -> torch.Tensor:
        """Record or edit a layer's attention probabilities (B * heads, Q, K)."""
        layer = self.layer
        self.layer += 1
        B, Q, K = probs.shape[0] // heads, probs.shape[1], probs.shape[2]
        N = self.n_faces
        if not self.active or B % N:
            return probs
        key = (self.step, layer)
        keep_self = (not is_cross) and self.step < self.self_steps and Q <= self.max_self_tokens
        if self.mode == "record":
            if B == N and (is_cross or keep_self):
                self.source.probs[key] = probs.detach().view(N, heads, Q, K).clone()
                if is_cross:
                    self.source.n_tokens = K
            return probs
        p = probs.view(B // N, N, heads, Q, K)
        edt = p[-1]
        src = self.source.probs.get(key)
        if src is not None and tuple(src.shape) != (N, heads, Q, K):
            src = None
        if is_cross:
            if self.alignment is None or K != self.alignment.n_tokens:
                return probs
            if self.step < self.cross_steps and src is not None:
                a = self.alignment.alpha.to(probs)
                edt = src.to(probs)[..., self.alignment.mapper.to(probs.device)] * a + edt * (1 - a)
            if self.word_weight != 1.0 and self.alignment.word_indices:
                w = torch.ones(K, device=probs.device, dtype=probs.dtype)
                w[self.alignment.word_indices] = self.word_weight
                edt = edt * w
            if self.informative:
                self._record(edt, Q)
        elif keep_self and src is not None:
            edt = src.to(probs)
        else:
            return probs
        return torch.cat([p[:-1], edt.unsqueeze(0)]).reshape(B * heads, Q, K)

    def _record(self, edt_cond: torch.Tensor, Q: int):
        h, w = self.latent_size
        f = (h * w / Q) ** 0.5
        hq, wq = int(round(h / f)), int(round(w / f))
        if hq * wq != Q:
            return
        m = edt_cond[..., self.alignment.word_indices].sum(-1).mean(1).detach()      # (N, Q)
        m = F.interpolate(m.view(-1, 1, hq, wq).float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        self.word_maps = m if self.word_maps is None else self.word_maps + m
        self.n_recorded += 1


class EditAttnProcessor:
    """Attention computed explicitly (:func:`facelab.diffusion.attention.explicit_attention`, so its probabilities
    can be edited) with an :class:`AttentionEditor`.

    Cross-attention logits get the padding bias of the conditioning (:func:`facelab.diffusion.model.padding_bias`),
    as the quick UNet's own processor does, so edited and unedited passes attend to the same tokens. A self-attention
    layer the editor leaves alone (:meth:`AttentionEditor.leaves_self_attention`) runs the module's own processor
    ``fallback`` (fused attention, equal to float rounding) instead of materialising its probabilities."""

    def __init__(self, editor: AttentionEditor, fallback=None):
        self.editor = editor
        self.fallback = fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        is_cross = encoder_hidden_states is not None
        if not is_cross and self.fallback is not None and attention_mask is None:
            queries = (hidden_states.shape[-2] * hidden_states.shape[-1] if hidden_states.ndim == 4
                       else hidden_states.shape[1])
            if self.editor.leaves_self_attention(hidden_states.shape[0], queries):
                self.editor.skip_layer()
                return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                  on_probs=lambda probs: self.editor(probs, is_cross, attn.heads))
