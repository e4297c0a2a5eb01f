"""The synthetic multimodal corpus (with a fast stand-in face renderer): ground truth, synchrony, bad input."""

import numpy as np
import pytest

from _micro_helpers import StubWorld
from facelab.micro import physio
from facelab.micro.corpus import (DIFFICULTY, MICRO_MAX_S, CorpusConfig, make_corpus, schedule_events,
                                  speech_events, with_physiology)
from facelab.micro.recognition import MultimodalData


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(world=StubWorld(48), n_subjects=2, trials_per_subject=2, size=48, crop_size=48,
                       full_video_trials=1, seed=3)


def test_ground_truth(corpus):
    ev = corpus.events
    assert len(corpus.sessions) == 2 and len(corpus.trials) == 4
    micro, macro = ev[ev.kind == "micro"], ev[ev.kind == "macro"]
    assert len(micro) >= 4
    assert ((micro.offset - micro.onset + 1) / corpus.config.fps < MICRO_MAX_S).all()
    assert ((macro.offset - macro.onset + 1) / corpus.config.fps >= MICRO_MAX_S).all()
    assert ((ev.onset <= ev.apex) & (ev.apex <= ev.offset)).all()
    assert set(ev.emotion) <= set(physio.EMOTIONS)
    # every event of a trial carries the trial's emotion
    for tr in corpus.trials:
        assert (tr.events["emotion"] == tr.emotion).all()
    assert [tr.spot for tr in corpus.trials] == [True, False, True, False]
    # the realistic default: macro-expressions may overlap micro ones, talking bursts are rendered but not truth
    assert corpus.config.macro_overlap and corpus.config.head_motion
    assert all(tr.speech.shape[1] == 2 for tr in corpus.trials)


def test_world_blinks_on_the_eeg_timeline(corpus):
    """The video's blinks (drawn by the world) are the session's blink annotations inside the video window."""
    for s in corpus.sessions:
        for tr in s.trials:
            end = tr.video_start_s + tr.n_frames / tr.fps
            inside = s.blinks_s[(s.blinks_s >= tr.video_start_s) & (s.blinks_s < end)]
            np.testing.assert_allclose(inside, tr.video_start_s + np.sort(tr.blinks) / tr.fps, atol=1e-9)


def test_presets():
    easy, real = CorpusConfig.preset("easy"), CorpusConfig()
    assert CorpusConfig.preset("realistic") == real
    for k, v in DIFFICULTY["realistic"].items():
        assert getattr(real, k) == v
    assert real.micro_intensity[1] < easy.micro_intensity[1] and real.eeg_coupling < easy.eeg_coupling
    assert easy.speech_per_s == 0 and not easy.head_motion and easy.jpeg_quality == 100
    assert CorpusConfig.preset("easy", n_subjects=2).n_subjects == 2
    with pytest.raises(ValueError, match="unknown difficulty"):
        CorpusConfig.preset("hard")
    with pytest.raises(ValueError, match="micro_intensity"):
        CorpusConfig(micro_intensity=(0.3, 0.9))
    with pytest.raises(ValueError, match="micro_length_s"):
        CorpusConfig(micro_length_s=(0.2, 0.6))
    with pytest.raises(ValueError, match="jpeg_quality"):
        CorpusConfig(jpeg_quality=0)


def test_overlapping_schedule_and_speech():
    rng = np.random.default_rng(0)
    overlaps = 0
    for _ in range(50):
        ev = schedule_events(240, 30, "fear", 2, 2, rng, micro_length_s=(0.2, 0.45), overlap=True)
        micro = [e for e in ev if e["kind"] == "micro"]
        macro = [e for e in ev if e["kind"] == "macro"]
        assert len(micro) == 2 and len(macro) == 2
        assert all(0 <= e["onset"] < e["apex"] < e["offset"] < 240 for e in ev)
        assert all((e["offset"] - e["onset"]) / 30 < MICRO_MAX_S for e in micro)
        a, b = sorted(micro, key=lambda e: e["onset"])
        assert b["onset"] - a["offset"] >= 36  # micro-expressions stay apart
        overlaps += any(m["onset"] <= u["offset"] and u["onset"] <= m["offset"] for m in macro for u in micro)
    assert overlaps > 5
    sp = speech_events(300, 30, 1.0, np.random.default_rng(1))
    assert len(sp) > 5 and all(e["kind"] == "speech" and 4 <= e["offset"] - e["onset"] + 1 <= 8 for e in sp)
    assert speech_events(300, 30, 0.0, np.random.default_rng(1)) == []


def test_one_timeline(corpus):
    s = corpus.sessions[0]
    raw = s.raw
    assert len(raw.ch_names) == 37 and raw.get_montage() is not None
    assert raw.times[-1] == pytest.approx(2 * corpus.config.trial_s - 1 / corpus.config.sfreq)
    desc = list(raw.annotations.description)
    n_expr = sum(d.startswith(("micro/", "macro/")) for d in desc)
    assert n_expr == sum(len(tr.events) for tr in s.trials)
    assert desc.count("blink") == len(s.blinks_s)
    tr = s.trials[0]
    first = tr.events.iloc[0]
    onsets = raw.annotations.onset[[d == f"{first.kind}/{first.emotion}" for d in desc]]
    assert np.min(np.abs(onsets - (tr.video_start_s + first.onset / tr.fps))) < 1e-6


def test_ppg_pulses_the_skin():
    c = make_corpus(CorpusConfig.preset("easy"), world=StubWorld(48), n_subjects=1, trials_per_subject=1, size=48,
                    crop_size=48, seed=3)
    tr = c.trials[0]  # still face, no talking: away from expressions and blinks, brightness changes are the pulse
    green = tr.crops.reshape(len(tr.crops), -1).astype(float).mean(1)
    quiet = np.ones(len(green), bool)
    for ev in tr.events.itertuples():
        quiet[max(0, ev.onset - 2):ev.offset + 3] = False
    for b in tr.blinks:
        quiet[max(0, b - 6):b + 7] = False
    r = np.corrcoef(green[quiet], tr.ppg[quiet])[0, 1]
    assert r < -0.8  # more blood volume, darker skin (as the world renders it)


def test_features_line_up(corpus):
    n = len(corpus.events)
    assert corpus.video_features().shape == (n, 3, 28, 28)
    assert corpus.eeg_features().shape == (n, 11, 160)
    per = corpus.peripheral_features()
    assert per.shape == (n, 8)
    data = MultimodalData.from_corpus(corpus)
    assert len(data.y) == n and np.isfinite(data.eeg).all() and np.isfinite(data.periph).all()


def test_with_physiology_keeps_video_changes_signals(corpus):
    c0 = with_physiology(corpus, eeg_coupling=0.0, periph_coupling=0.0)
    assert c0.trials[0] is corpus.trials[0]
    assert c0.config.eeg_coupling == 0.0
    assert not np.allclose(c0.sessions[0].raw.get_data(picks="eeg"), corpus.sessions[0].raw.get_data(picks="eeg"))
    with pytest.raises(ValueError, match="changes only"):
        with_physiology(corpus, video_coupling=0.1)


def test_trial_without_events():
    c = make_corpus(world=StubWorld(48), n_subjects=1, trials_per_subject=1, size=48, crop_size=48,
                    micro_per_trial=(0, 0), macro_per_trial=(0, 0))
    assert len(c.events) == 0 and c.video_features().shape[0] == 0 and c.eeg_features().shape[0] == 0
    assert len(c.peripheral_features()) == 0
    with pytest.raises(ValueError, match="no expressions"):
        MultimodalData.from_corpus(c)


def test_bad_config():
    with pytest.raises(ValueError, match="n_subjects"):
        CorpusConfig(n_subjects=0)
    with pytest.raises(ValueError, match="video_coupling"):
        CorpusConfig(video_coupling=1.5)
    with pytest.raises(ValueError, match="emotions"):
        CorpusConfig(emotions=("happy", "bored"))
    with pytest.raises(ValueError, match="need"):
        schedule_events(30, 30, "happy", 3, 2, np.random.default_rng(0))
