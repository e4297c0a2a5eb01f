"""facelab.affect: script grammar, espeak-ng speech, audio checks, the streamed affect corpus and mimicry clips."""

import shutil

import numpy as np
import pytest
import torch

from facelab.affect import (AH_CUES, AffectCorpus, AudioError, EspeakMissing, Prosody, check_audio,
                            check_expression, draw_script, grammar_sentences, mimicry_aus, synthesize)
from facelab.affect import corpus as C
from facelab.affect import speech as S
from facelab.metrics.abaw import ABAW_EXPRESSIONS

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_script_grammar_and_hesitancy():
    rng = np.random.default_rng(0)
    plain = draw_script("happiness", rng, n_sentences=1)
    assert plain.n_hedges == plain.n_fillers == plain.n_pauses == 0 and plain.sentiment == "positive"
    assert plain.tokens == plain.words
    h = draw_script("sadness", np.random.default_rng(1), hedged=True, pauses=True)
    assert h.n_hedges >= 1 and h.n_fillers >= 1 and h.n_pauses >= 2
    assert sum(t.startswith("<pause:") for t in h.tokens) == h.n_pauses
    assert not any(t.startswith("<pause:") for t in h.words)
    assert sum(w in ("um", "uh") for w in h.words) >= h.n_fillers
    sents = grammar_sentences()
    vocab = {w for s in sents for w in s.split()}
    for e in ABAW_EXPRESSIONS:  # everything the grammar says is in the LM text
        assert set(draw_script(e, np.random.default_rng(3), hedged=True).words) <= vocab
    with pytest.raises(ValueError, match="unknown expression class 'joyful'"):
        draw_script("joyful", rng)
    with pytest.raises(ValueError, match="unknown expression class"):
        check_expression("Happiness")


def test_corpus_labels_without_speech():
    corpus = AffectCorpus(8, seed=1, size=64, fps=5, speech=False, ah_rate=0.6)
    clips = list(corpus)
    assert len(clips) == 8 and [c.clip_id for c in clips] == [f"s1-c{i:05d}" for i in range(8)]
    for clip in clips:
        lab = clip.labels
        assert len(lab) == len(clip) == clip.frames.shape[0] == clip.landmarks.shape[0]
        assert clip.frames.shape[1:] == (3, 64, 64) and clip.audio is None
        assert set(lab["expression"]) <= set(ABAW_EXPRESSIONS) and set(lab["expression"]) <= {"neutral",
                                                                                                clip.face_emotion}
        assert (lab["expression_index"] == [ABAW_EXPRESSIONS.index(e) for e in lab["expression"]]).all()
        assert lab["valence"].between(-1, 1).all() and lab["arousal"].between(-1, 1).all()
        assert {"AU01", "AU12", "AU45", "speaking", "ah"} <= set(lab.columns)
        assert (lab["ah"] == clip.ah).all() and set(clip.ah_cues) <= set(AH_CUES)
        assert (clip.ah == 1) == (len(clip.ah_cues) > 0)
        if clip.face_emotion != "neutral":  # the face emotion reaches the labels with the circumplex sign
            shown = lab[lab["expression"] == clip.face_emotion]
            assert len(shown) > 0
            v0, a0 = C.CIRCUMPLEX[clip.face_emotion]
            assert np.all(np.sign(shown["valence"]) == np.sign(v0)) and np.all(np.sign(shown["arousal"]) == np.sign(a0))
        if "face" in clip.ah_cues:  # cross-modal conflict: face and words of opposite sentiment
            from facelab.affect.script import SENTIMENT

            assert {SENTIMENT[clip.face_emotion], SENTIMENT[clip.word_emotion]} == {"positive", "negative"}
        else:
            assert clip.face_emotion == clip.word_emotion
        if "words" in clip.ah_cues:
            assert clip.script.n_hedges >= 1
        if "voice" in clip.ah_cues:
            assert clip.script.n_pauses >= 2 and clip.script.words == [t for t in clip.script.tokens
                                                                        if not t.startswith("<")]
    # deterministic per index, independent of the order of access
    again = corpus.clip(5)
    assert torch.equal(again.frames, clips[5].frames) and again.transcript == clips[5].transcript
    with pytest.raises(IndexError):
        corpus.clip(8)
    with pytest.raises(ValueError, match="n_clips must be a positive integer"):
        AffectCorpus(0)


def test_corpus_streams_with_workers():
    corpus = AffectCorpus(4, seed=2, size=48, fps=4, speech=False)
    loader = torch.utils.data.DataLoader(corpus, batch_size=None, num_workers=0, collate_fn=lambda x: x)
    assert [c.clip_id for c in loader] == [f"s2-c{i:05d}" for i in range(4)]
    import facelab.affect.corpus as mod

    class Info:
        id, num_workers = 1, 2

    orig = mod.get_worker_info
    mod.get_worker_info = lambda: Info()
    try:
        assert [c.clip_id for c in corpus] == ["s2-c00001", "s2-c00003"]
    finally:
        mod.get_worker_info = orig


def test_frame_labels_threshold_and_unknown():
    lab = C.frame_labels(np.array(["neutral", "happy", "happy", "sad"]), np.array([0.0, 0.1, 0.9, 0.5]))
    assert list(lab["expression"]) == ["neutral", "neutral", "happiness", "sadness"]
    assert lab["valence"].iloc[2] == pytest.approx(0.8 * 0.9) and lab["valence"].iloc[3] == pytest.approx(-0.35)
    with pytest.raises(ValueError, match="unknown world emotion"):
        C.frame_labels(np.array(["glad"]), np.array([1.0]))


def test_mimicry_clip():
    corpus = AffectCorpus(2, seed=3, size=48, fps=8, n_identities=5)
    m = corpus.mimicry_clip(0, noise=0.1)
    assert m.seed_identity != m.imitator_identity
    assert m.seed_intensities.shape == (6,) and m.target is m.seed_intensities
    assert np.all((m.shown_intensities >= 0) & (m.shown_intensities <= 1))
    assert 0 < np.abs(m.shown_intensities - m.seed_intensities).max() < 0.6
    assert m.frames.shape == m.seed_frames.shape == (16, 3, 48, 48)
    assert not torch.equal(m.frames[8], m.frames[0])  # the imitator moves
    exact = corpus.mimicry_clip(1, noise=0.0)
    assert np.allclose(exact.shown_intensities, exact.seed_intensities)
    aus = mimicry_aus([0, 0, 0, 0, 0, 1.0])
    assert aus == {"AU06": 0.9, "AU12": 1.0}
    assert mimicry_aus([1, 1, 1, 1, 1, 1])["AU12"] == 1.0  # capped
    with pytest.raises(ValueError, match="6 numbers in"):
        mimicry_aus([0.5] * 5)
    with pytest.raises(ValueError, match="noise must lie"):
        corpus.mimicry_clip(0, noise=2)


def test_audio_checks():
    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    x, chk = check_audio(tone, sr)
    assert not chk.silent and not chk.clipped and chk.duration_s == pytest.approx(1.0)
    assert check_audio(np.zeros(sr, np.float32), sr)[1].silent
    assert check_audio(np.clip(tone * 10, -1, 1), sr)[1].clipped
    assert check_audio((tone * 32767).astype(np.int16), sr)[0].dtype == np.float32
    with pytest.raises(AudioError, match="empty"):
        check_audio(np.zeros(0, np.float32), sr)
    with pytest.raises(AudioError, match="unexpected sample rate 12345"):
        check_audio(tone, 12345)
    with pytest.raises(AudioError, match="NaN"):
        check_audio(np.full(sr, np.nan, np.float32), sr)
    with pytest.raises(AudioError, match=r"\[-1, 1\]"):
        check_audio(tone * 5, sr)
    with pytest.raises(AudioError, match="int16"):
        check_audio(np.ones(sr, np.int64), sr)


def test_espeak_missing(monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: None)
    with pytest.raises(EspeakMissing, match="apt-get install espeak-ng"):
        synthesize(["hello"])
    with pytest.raises(EspeakMissing):
        AffectCorpus(1, size=48, fps=4).clip(0)


@needs_espeak
def test_speech_prosody_and_corpus_audio():
    slow = synthesize(["the", "plan", "was", "great"], Prosody(rate=110))
    fast = synthesize(["the", "plan", "was", "great"], Prosody(rate=220))
    paused = synthesize(["the", "plan", "<pause:800>", "was", "great"], Prosody(rate=220))
    assert slow.dtype == np.float32 and np.abs(slow).max() <= 1
    assert len(slow) > 1.5 * len(fast)
    assert len(paused) - len(fast) > 0.6 * S.ESPEAK_RATE
    with pytest.raises(ValueError, match="no words"):
        synthesize(["<pause:300>"])
    with pytest.raises(ValueError, match="rate"):
        Prosody(rate=10)
    clip = AffectCorpus(1, seed=4, size=48, fps=5).clip(0)
    assert clip.audio is not None and clip.sample_rate == S.ESPEAK_RATE
    assert abs(len(clip.audio) / clip.sample_rate - clip.duration_s) < 0.01  # audio and video have one length
    assert check_audio(clip.audio, clip.sample_rate)[1].rms > 0.01
