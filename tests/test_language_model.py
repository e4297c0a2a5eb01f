"""facelab.models.language: label scoring on tiny randomly initialised models of Gemma's classes (no download, no
240 MB load), truncation, label checks, the GGUF asset's missing / wrong-hash errors, the vision-LLM loader."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from facelab import assets
from facelab.models import language

pytest.importorskip("transformers")

WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_image>", "<image_soft_token>", "<end_of_image>"] + \
    ("neutral happy sad angry fearful disgusted surprised person feels the question answer which emotion does feel "
     "options a photo of people 1 2 3 : . , ? N/A").split()


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(WORDS))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>", extra_special_tokens={
                                      "boi_token": "<start_of_image>", "image_token": "<image_soft_token>",
                                      "eoi_token": "<end_of_image>"})
    from tokenizers import processors

    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tok


def tiny_text_config(n_vocab, max_pos=32):
    return dict(vocab_size=n_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, max_position_embeddings=max_pos, sliding_window=16)


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**tiny_text_config(len(tok)))).eval()
    return tok, model


LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def test_label_scorer_one_forward_matches_full_softmax(tiny_lm):
    tok, model = tiny_lm
    sc = language.LabelScorer(model, tok, LABELS)
    out = sc.logprobs(["a photo of people . person 1 feels", "the person feels"])
    assert out.shape == (2, 7) and np.all(out < 0)
    ids = torch.tensor([tok("the person feels")["input_ids"]])
    ref = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)[[tok.convert_tokens_to_ids(x) for x in LABELS]]
    assert np.allclose(out[1], ref.detach().numpy(), atol=1e-5)


def test_prompt_longer_than_context_is_cut_from_the_left_with_a_warning(tiny_lm):
    tok, model = tiny_lm
    sc = language.LabelScorer(model, tok, LABELS, max_tokens=8)
    long = " ".join(["people"] * 20) + " person 1 feels"
    with pytest.warns(language.PromptTruncatedWarning, match="longer than the model's context of 8"):
        ids = sc.encode(long)
    assert len(ids) == 8 and ids[0] == tok.bos_token_id
    assert ids[-3:] == tok("person 1 feels", add_special_tokens=False)["input_ids"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(sc.encode("person 1 feels")) == 4          # short prompt: untouched, no warning
    with pytest.warns(language.PromptTruncatedWarning):
        assert sc.logprobs([long]).shape == (1, 7)
    with pytest.raises(ValueError, match="at least 2"):
        language.LabelScorer(model, tok, LABELS, max_tokens=1)
    assert language.LabelScorer(model, tok, LABELS).max_tokens == 32   # the model's own context


def test_bad_label_sets(tiny_lm):
    tok, model = tiny_lm
    with pytest.raises(ValueError, match="single string"):
        language.LabelScorer(model, tok, "happy")
    with pytest.raises(ValueError, match="distinct"):
        language.LabelScorer(model, tok, ["happy", "happy"])
    with pytest.raises(ValueError, match="at least two"):
        language.LabelScorer(model, tok, ["happy"])
    with pytest.raises(ValueError, match="share their first token"):
        language.LabelScorer(model, tok, ["elated", "joyful"])         # both unknown -> the same <unk> token
    with pytest.raises(ValueError, match="non-empty string"):
        language.LabelScorer(model, tok, LABELS).encode("  ")


def test_gemma_asset_missing_or_corrupt(tmp_path, monkeypatch):
    reg = assets.registry()
    assert set(language.GEMMA_PARTS) <= set(reg)
    for name in language.GEMMA_PARTS:
        a = reg[name]
        assert a.license.startswith("Gemma Terms of Use") and a.files[0].size > 60_000_000
    monkeypatch.setattr(assets, "ASSET_DIR", tmp_path / "assets")
    # Asset.folder reads the module constant at call time
    with pytest.raises(assets.AssetMissingError, match="make assets"):
        language.gemma_gguf_path(cache_dir=tmp_path)
    # a joined file with the right size but wrong content: wrong hash -> clear error
    fake_parts = []
    for name in language.GEMMA_PARTS:
        p = tmp_path / f"{name}.bin"
        p.write_bytes(b"x" * 10)
        fake_parts.append(p)
    monkeypatch.setattr(assets, "path", lambda name: fake_parts[language.GEMMA_PARTS.index(name)])
    with pytest.raises(assets.AssetCorruptError, match="sha256"):
        language.gemma_gguf_path(cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / language.GEMMA_GGUF_NAME).stat().st_size == 40


def test_load_gemma_refuses_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GGUF model file"):
        language.load_gemma(gguf=tmp_path / "absent.gguf")


def test_vision_llm_loader_and_scorer_on_a_tiny_random_gemma3(tmp_path):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    with pytest.raises(FileNotFoundError, match="no config.json"):
        language.load_vision_llm(tmp_path / "nothing")
    tok = tiny_tokenizer()
    proc = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
                           tokenizer=tok, image_seq_length=4)
    cfg = Gemma3Config(text_config=tiny_text_config(len(tok), max_pos=64),
                       vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, image_size=32, patch_size=8),
                       mm_tokens_per_image=4, boi_token_index=tok.boi_token_id, image_token_index=tok.image_token_id,
                       eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"))
    torch.manual_seed(0)
    Gemma3ForConditionalGeneration(cfg).save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    processor, model = language.load_vision_llm(tmp_path)
    assert type(model).__name__ == "Gemma3ForConditionalGeneration" and not model.training
    vs = language.VisionLabelScorer(model, processor, LABELS)
    img = torch.rand(3, 40, 60)
    out = vs.logprobs([img, img], ["a photo of people .", "a photo of people ."], ["person 1 feels"] * 2)
    assert out.shape == (2, 7) and np.all(np.isfinite(out)) and np.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="one image, prompt and answer stem"):
        vs.logprobs([img], ["a", "b"], ["c"])
    short = language.VisionLabelScorer(model, processor, LABELS, max_tokens=6)
    with pytest.raises(ValueError, match="context"):
        short.logprobs([img], ["a photo of people ."], ["person 1 feels"])
