"""facelab.prompting: scenes and their cue reliabilities, the AU regressor, the SoVTP prompt ladder, scorers and
their cache, bad input (unknown labels, no face, unknown variant)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import facelab.prompting as pr
from facelab.prompting import aus, scorers
from facelab.synth import AU_NAMES, FaceWorld


@pytest.fixture(scope="module")
def data():
    world = FaceWorld(seed=0, size=112)
    scenes = pr.make_scenes(world, 7, seed=0)
    reg, meta = pr.load_au_regressor(allow_train=False)
    return scenes, reg, meta


class FakeFaceModel:
    """Stands in for face-api: reads the displayed emotion from a tile index table."""

    def __init__(self, scenes):
        self.table = {id(p.tile): p.display for s in scenes for p in s.persons}

    def predict(self, tiles):
        return torch.full((len(tiles), 7), 1 / 7)


def test_scenes_tiers_balance_and_composition(data):
    scenes, _, _ = data
    assert len(scenes) == 21 and [s.tier for s in scenes[:7]] == ["easy"] * 7
    assert sorted(s.label for s in scenes[:7]) == sorted(pr.LABELS)          # 7 per tier: one per label
    for s in scenes:
        assert 2 <= len(s.persons) <= 3 and s.image.shape[0] == 3 and 0 <= float(s.image.min())
        assert s.image.shape[2] == 8 + len(s.persons) * 120
        x0, y0, x1, y1 = s.person.box
        assert 0 <= x0 < x1 < s.image.shape[2] and 0 <= y0 < y1 < s.image.shape[1]
    hard = [s for s in scenes if s.tier == "hard"]
    assert {s.kind for s in hard} == {"occluded", "contradicting"}
    for s in hard:
        if s.kind == "contradicting":
            assert s.person.display != s.person.emotion and s.person.visible.all()
        else:
            assert s.person.occlusion in pr.scenes.OCCLUDERS and not s.person.visible.all()
    medium = [s for s in scenes if s.tier == "medium"]
    assert all(0.15 <= s.person.intensity <= 0.35 for s in medium)
    assert min(p.identity for s in scenes for p in s.persons) >= pr.scenes.SCENE_IDENTITY_OFFSET


def test_cue_reliability_is_controlled():
    world = FaceWorld(seed=1, size=112)
    sure = pr.make_scenes(world, 7, tiers=("easy",), reliability=pr.Reliability(1.0, 1.0, 1.0), seed=1)
    for s in sure:
        assert s.scene_emotion == s.label and s.person.posture_emotion == s.label
        assert all(p.emotion == s.label for p in s.persons)
    never = pr.make_scenes(world, 7, tiers=("easy",), reliability=pr.Reliability(0.0, 0.0, 0.0), seed=1)
    for s in never:
        assert s.scene_emotion != s.label and s.person.posture_emotion != s.label
        assert all(p.emotion != s.label for p in s.persons if p is not s.person)
    with pytest.raises(ValueError, match="probability"):
        pr.Reliability(posture=1.5)


def test_make_scenes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="112-px"):
        pr.make_scenes(FaceWorld(seed=0, size=64), 2)
    world = FaceWorld(seed=0, size=112)
    with pytest.raises(ValueError, match="positive integer"):
        pr.make_scenes(world, 0)
    with pytest.raises(ValueError, match="unknown tiers"):
        pr.make_scenes(world, 2, tiers=("impossible",))


def test_au_regressor_reads_a_smile_and_hides_occluded_regions(data):
    scenes, reg, meta = data
    assert meta["log"]["val_corr"]["AU12"] > 0.5 and meta["log"]["val_corr"]["AU26"] > 0.5
    world = FaceWorld(seed=3, size=112)
    b = world.sample(identities=[30000, 30001], expression=[{"AU12": 1.0, "AU06": 0.8}, {}],
                     generator=torch.Generator().manual_seed(0))
    est = reg.predict(b.landmarks.numpy())
    k = AU_NAMES.index("AU12")
    assert est.shape == (2, len(AU_NAMES)) and est[0, k] > est[1, k] + 0.2
    vis = np.ones(68, bool)
    vis[48:68] = False
    text = aus.au_phrases(est[0], AU_NAMES, vis)
    assert "mouth not visible" in text and "AU12" not in text
    assert "AU12 lip corner puller" in aus.au_phrases(est[0], AU_NAMES)
    with pytest.raises(ValueError, match=r"\(N, 68, 2\)"):
        aus.landmark_features(np.zeros((5, 2)))


def test_prompt_ladder_adds_one_cue_family_per_rung(data):
    scenes, reg, _ = data
    readings = {(s.index, p.number): np.eye(7)[pr.LABELS.index(p.display)] for s in scenes for p in s.persons}
    s = scenes[0]
    ps = {v: pr.build_prompt(s, v, readings, reg) for v in pr.VARIANTS}
    k = s.person.number
    assert "box" not in ps["face"].body and f"Person {k} (box" in ps["marks"].body
    assert "action units" not in ps["marks"].body and "action units" in ps["aus"].body
    assert "Scene:" not in ps["aus"].body and s.scene_type in ps["context"].body
    assert s.person.posture in ps["context"].body and "Other people" in ps["others"].body
    for a, b in zip(pr.VARIANTS, pr.VARIANTS[1:]):
        assert ps[b].body.startswith(ps[a].body.split("\n")[0][:20]) or a == "face"
        assert len(ps[b].body) > len(ps[a].body)
    full = ps["others"]
    assert full.text.endswith(f"Answer: Person {k} feels") and full.label == s.label
    assert s.label not in full.question.split("Options:")[0]               # the truth is not leaked
    for v in pr.VARIANTS:
        cf = pr.content_free_prompt(v)
        assert "N/A" in cf.body and cf.text.endswith("feels")
    with pytest.raises(ValueError, match="unknown prompt variant"):
        pr.build_prompt(s, "everything", readings, reg)
    with pytest.raises(ValueError, match="AU regressor"):
        pr.build_prompt(s, "aus", readings, None)
    with pytest.raises(KeyError, match="no face reading"):
        pr.build_prompt(s, "face", {}, reg)


def test_scene_with_no_detected_face_is_a_clear_error(data):
    scenes, reg, _ = data
    import copy

    s = copy.deepcopy(scenes[1])
    for p in s.persons:
        p.visible[:] = False
    with pytest.raises(pr.NoFaceError, match="no detected face"):
        pr.build_prompt(s, "others", {}, reg)
    s2 = copy.deepcopy(scenes[1])
    s2.person.visible[:] = False
    with pytest.raises(pr.NoFaceError, match="target"):
        pr.build_prompt(s2, "face", {}, reg)
    s3 = copy.deepcopy(scenes[1])
    s3.persons = []
    with pytest.raises(pr.NoFaceError):
        pr.scenes.detected_persons(s3)


def test_face_readings_and_marks_figure(data):
    scenes, _, _ = data
    readings = pr.face_readings(scenes[:3])
    assert len(readings) == sum(len(s.persons) for s in scenes[:3])
    assert all(np.isclose(v.sum(), 1, atol=1e-4) for v in readings.values())
    import matplotlib

    matplotlib.use("Agg")
    fig = pr.draw_marks(scenes[-1])
    assert len(fig.axes[0].patches) == len(scenes[-1].persons)


class Encoder:
    """A deterministic bag-of-words stand-in for MiniLM (no model load)."""

    def __call__(self, texts):
        out = torch.zeros(len(texts), len(pr.LABELS) + 1)
        for i, t in enumerate(texts):
            for k, lab in enumerate(pr.LABELS):
                out[i, k] = t.count(lab)
            out[i, -1] = 1.0
        return out


def test_minilm_scorer_modes_and_label_checks():
    sc = pr.MiniLMScorer(encoder=Encoder())
    s = sc.scores(["The face looks happy. The scene is happy.", "sad"])
    assert s.shape == (2, 7) and pr.predictions(s).tolist() == ["happy", "sad"]
    with pytest.raises(ValueError, match="unknown labels"):
        pr.MiniLMScorer(labels=("happy", "bored"), encoder=Encoder())
    sc2 = pr.MiniLMScorer(labels=("happy", "bored"), descriptions={"happy": "happy", "bored": "bored"},
                          encoder=Encoder(), mode="prompt")
    assert sc2.scores(["happy"]).shape == (1, 2)
    with pytest.raises(ValueError, match="mode"):
        pr.MiniLMScorer(encoder=Encoder(), mode="tokens")
    with pytest.raises(ValueError, match="unknown labels"):
        pr.check_label_set(("happy", "joy"))


class CountingScorer:
    labels = pr.LABELS

    def __init__(self):
        self.calls = 0

    def logprobs(self, texts):
        self.calls += len(texts)
        return np.array([[-float(len(t) % 7 + k) for k in range(7)] for t in texts])


def test_lm_scorer_cache_checkpoint_and_calibration(tmp_path, monkeypatch):
    monkeypatch.setattr(scorers.checkpoints, "MODELS_DIR", tmp_path)
    inner = CountingScorer()
    lm = pr.LMScorer(inner, "fake-lm", cache_dir=tmp_path)
    a = lm.logprobs(["one", "two", "one"])
    assert inner.calls == 2 and a.shape == (3, 7) and np.allclose(a[0], a[2])
    lm2 = pr.LMScorer(CountingScorer(), "fake-lm", cache_dir=tmp_path)          # from the json cache
    assert np.allclose(lm2.logprobs(["two"]), a[1]) and lm2.scorer.calls == 0
    scorers.save_score_checkpoint(tmp_path / "scores", lm.entries(["one", "two"]), "fake-lm", pr.LABELS)
    lm3 = pr.LMScorer(None, "fake-lm", cache_dir=tmp_path / "empty", checkpoint=str(tmp_path / "scores"))
    assert np.allclose(lm3.logprobs(["one"]), a[0], atol=1e-6)
    with pytest.raises(LookupError, match="no cached"):
        lm3.logprobs(["three"])
    assert pr.LMScorer(None, "other-lm", cache_dir=tmp_path / "e2", checkpoint=str(tmp_path / "scores")).entries(
        ["one"]) == {}
    cal = pr.calibrate(np.log([[0.6, 0.4], [0.5, 0.5]]), np.log([0.6, 0.4]))
    assert pr.predictions(cal, ("a", "b")).tolist() == ["a", "b"] and np.allclose(cal[0], 0)
    with pytest.raises(ValueError, match="content-free"):
        pr.calibrate(np.zeros((2, 3)), np.zeros(2))
    assert np.allclose(pr.label_bias(["a", "a", "b"], ("a", "b", "c")), [2 / 3, 1 / 3, 0])
