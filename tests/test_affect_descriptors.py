"""facelab.affect.descriptors: face (detected, aligned frames; missing faces counted), voice (eGeMAPS), words (ASR
with a grammar LM, word error rate, MiniLM), and the content-hash cache."""

import shutil

import numpy as np
import pytest
import torch

from facelab.affect import AffectCorpus, AudioError, Prosody, synthesize
from facelab.affect import descriptors as D

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


@pytest.fixture(scope="module")
def clip():
    return AffectCorpus(1, seed=5, size=96, fps=4, speech=False).clip(0)


def test_face_descriptors_mark_missing_frames(clip, tmp_path):
    frames = clip.frames[:6].clone()
    frames[2] = 0.5  # a grey frame: no face
    frames[4] = torch.rand(3, 96, 96)
    cache = D.DescriptorCache(tmp_path)
    f = D.face_descriptors(frames, cache=cache)
    assert f.n_frames == 6 and f.n_missing == 2 and list(f.present) == [True, True, False, True, False, True]
    assert f.faceapi_probs.shape == (6, 7) and f.faceapi_features.shape == (6, 256)
    assert f.fer_probs.shape == (6, 7) and f.fer_features.shape == (6, 128)
    assert np.isnan(f.fer_probs[[2, 4]]).all() and np.isnan(f.faceapi_features[[2, 4]]).all()
    ok = f.present
    assert np.allclose(f.fer_probs[ok].sum(1), 1, atol=1e-5) and np.allclose(f.faceapi_probs[ok].sum(1), 1, atol=1e-5)
    # the penultimate features are what the classifiers read
    from facelab.models import load_expression_model

    fa = load_expression_model()
    logits = torch.from_numpy(f.faceapi_features[ok]) @ fa.fc.weight.T.detach() + fa.fc.bias.detach()
    assert np.allclose(torch.softmax(logits, 1).numpy(), f.faceapi_probs[ok], atol=1e-5)
    # cached by content: the rerun reads the file
    assert cache.misses == 1 and len(list((tmp_path / "face").glob("*.npz"))) == 1
    again = D.face_descriptors(frames, cache=cache)
    assert cache.hits == 1 and np.array_equal(again.fer_features, f.fer_features, equal_nan=True)
    uint8 = (frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(D.face_descriptors(uint8, cache=cache).present, f.present) and cache.hits == 2
    with pytest.raises(ValueError, match="no frames"):
        D.face_descriptors(torch.zeros(0, 3, 32, 32))


def test_cache_key_and_damaged_file(tmp_path):
    a = np.arange(6, dtype=np.float32)
    assert D.content_hash(a, x=1) == D.content_hash(a.copy(), x=1) != D.content_hash(a, x=2)
    assert D.content_hash(a) != D.content_hash(a.astype(np.float64))
    cache = D.DescriptorCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"v": a * 2}

    assert np.array_equal(cache.get_or_compute("k", "key", compute)["v"], a * 2)
    cache.path("k", "key").write_bytes(b"damaged")
    assert np.array_equal(cache.get_or_compute("k", "key", compute)["v"], a * 2) and len(calls) == 2
    assert np.array_equal(cache.get_or_compute("k", "key", compute)["v"], a * 2) and len(calls) == 2


def test_voice_descriptors_and_bad_audio(tmp_path):
    pytest.importorskip("opensmile")
    sr = 16000
    t = np.arange(sr) / sr
    voice = (0.3 * np.sin(2 * np.pi * (140 + 30 * np.sin(2 * np.pi * 3 * t)) * t)).astype(np.float32)
    v = D.voice_descriptors(voice, sr)
    assert v.features.shape == (88,) and len(v.names) == 88 and v.status == "ok" and np.isfinite(v.features).all()
    assert "F0semitoneFrom27.5Hz_sma3nz_amean" in v.names
    silent = D.voice_descriptors(np.zeros(sr, np.float32), sr)
    assert silent.status == "silent" and np.isnan(silent.features).all()
    assert D.voice_descriptors(np.clip(voice * 20, -1, 1), sr).status == "clipped"
    with pytest.raises(AudioError, match="empty"):
        D.voice_descriptors(np.zeros(0, np.float32), sr)
    with pytest.raises(AudioError, match="unexpected sample rate"):
        D.voice_descriptors(voice, 9000)


def test_word_error_rate():
    assert D.word_error_rate("the plan was great", "the plan was great") == 0
    assert D.word_error_rate("the plan was great", "the plan is great") == pytest.approx(0.25)
    assert D.word_error_rate("the plan", "") == 1.0
    assert D.word_error_rate("a b", "a x b c") == 1.0  # two insertions over two words
    assert D.word_error_rate(["a b c", "d"], ["a c", "d e"]) == pytest.approx(2 / 4)
    assert D.word_error_rate("The  Plan", "the plan") == 0
    with pytest.raises(ValueError, match="no words"):
        D.word_error_rate("", "hello")
    with pytest.raises(ValueError, match="2 references but 1"):
        D.word_error_rate(["a", "b"], ["a"])
    with pytest.raises(TypeError):
        D.word_error_rate("a", ["a"])


def test_asr_model_missing(monkeypatch, tmp_path):
    pocketsphinx = pytest.importorskip("pocketsphinx")
    monkeypatch.setattr(pocketsphinx, "get_model_path", lambda: str(tmp_path))
    with pytest.raises(D.ASRModelMissing, match="reinstall pocketsphinx"):
        D.SphinxASR(["hello there"])
    with pytest.raises(ValueError, match="no sentences"):
        D.build_language_model(["  "], tmp_path / "x.arpa")


@needs_espeak
def test_asr_with_grammar_lm(tmp_path):
    pytest.importorskip("pocketsphinx")
    sents = ["the plan was great", "i feel very sad about the food", "nobody came to the park today",
             "stop talking about the news"]
    asr = D.SphinxASR(sents, cache_dir=tmp_path)
    assert asr.oov == [] and len(list(tmp_path.glob("lm-*.arpa"))) == 1
    audio = synthesize("nobody came to the park today".split(), Prosody(voice="en-us+f2", rate=150))
    hyp = asr.transcribe(audio, 22050)
    assert D.word_error_rate("nobody came to the park today", hyp) <= 0.34
    assert asr.transcribe(np.zeros(22050, np.float32), 22050) == ""
    with pytest.raises(AudioError, match="unexpected sample rate"):
        asr.transcribe(audio, 22051)


@needs_espeak
def test_clip_descriptors_cached(tmp_path):
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("opensmile")
    corpus = AffectCorpus(1, seed=4, size=64, fps=4)
    c = corpus.clip(0)
    asr = D.SphinxASR(corpus.sentences(), cache_dir=tmp_path / "asr")
    cache = D.DescriptorCache(tmp_path)
    d = D.clip_descriptors(c, asr=asr, cache=cache)
    assert d.clip_id == c.clip_id and d.face.n_frames == len(c) and d.voice.features.shape == (88,)
    assert d.true_transcript == c.transcript and isinstance(d.asr_transcript, str)
    assert d.text_true.shape == (384,) and d.text_asr.shape == (384,)
    assert abs(np.linalg.norm(d.text_true) - 1) < 1e-3  # MiniLM's own output is unit length
    misses = cache.misses
    again = D.clip_descriptors(c, asr=asr, cache=cache)
    assert cache.misses == misses and cache.hits == 3 and again.asr_transcript == d.asr_transcript
    assert D.text_descriptors(["", "the plan was great"]).abs().sum(1)[0] == 0


def test_to_abaw():
    from facelab.models.expression import EXPRESSIONS
    from facelab.models.fer import FER_CLASSES

    p = np.eye(7, dtype=np.float32)
    fer = D.to_abaw(p, FER_CLASSES)
    assert fer.shape == (7, 8) and np.allclose(fer.sum(1), 1) and fer[:, 7].sum() == 0
    assert fer[FER_CLASSES.index("happy")].argmax() == 4 and fer[FER_CLASSES.index("neutral")].argmax() == 0
    fa = D.to_abaw(np.vstack([p, np.full((1, 7), np.nan)]), EXPRESSIONS)
    assert fa[EXPRESSIONS.index("disgusted")].argmax() == 2 and np.isnan(fa[7]).all()
    from facelab.models.emotiefflib import EMOTIEFFLIB_CLASSES_8

    assert D.to_abaw(np.eye(8), EMOTIEFFLIB_CLASSES_8)[1].argmax() == 7  # contempt -> other
    with pytest.raises(ValueError, match="unknown class name"):
        D.to_abaw(np.ones((1, 2)), ["happy", "bored"])
    with pytest.raises(ValueError, match="expected probabilities"):
        D.to_abaw(np.ones((1, 3)), ["happy", "sad"])
