"""studies.emotion_prompting: the chapter's protocol and tables on a tiny dataset with stand-in scorers (no MiniLM or
Gemma load)."""

from __future__ import annotations

import numpy as np
import pytest

import facelab.prompting as pr
from facelab.studies import emotion_prompting as study


from test_prompting import Encoder  # the bag-of-words stand-in for MiniLM


class WordCountLM:
    """Scores a label by how often its word appears in the prompt's evidence (a stand-in causal LM)."""

    labels = pr.LABELS

    def logprobs(self, texts):
        return np.array([[np.log(1 + t.split("Question:")[0].count(x)) - 3.0 for x in pr.LABELS] for t in texts])


@pytest.fixture(scope="module")
def data():
    return study.make_dataset(7, seed=0)


def test_dataset_and_minilm_protocol(data):
    assert len(data["scenes"]) == 21 and len(data["prompts"]) == 21 * len(pr.VARIANTS)
    res = study.minilm_results(data, pr.MiniLMScorer(encoder=Encoder()))
    assert len(res) == 105 and set(res.variant) == set(pr.VARIANTS)
    assert {"pred", "pred_raw", "correct", "correct_raw", "tier", "kind"} <= set(res.columns)
    table = study.ladder_table(res)
    assert list(table.index) == [pr.VARIANT_NAMES[v] for v in pr.VARIANTS]
    assert ((table["easy_lo"] <= table["easy"]) & (table["easy"] <= table["easy_hi"])).all()
    assert (table["n per tier"] == 7).all() and (table["n"] == 21).all()
    shown = study.format_ladder(table)
    assert shown.iloc[0, 0].count("[") == 1


def test_gemma_protocol_with_a_stand_in(tmp_path, data):
    lm = pr.LMScorer(WordCountLM(), "word-count", cache_dir=tmp_path)
    res, cf = study.gemma_results(data, lm, variants=("face", "others"))
    assert set(res.variant) == {"face", "others"} and set(cf) == {"face", "others"} and len(res) == 42
    gain = study.gain_table(res, n_boot=200)
    assert list(gain.index) == ["easy", "medium", "hard", "all"]
    assert np.isclose(gain.loc["all", "gain"], gain.loc["all", "to"] - gain.loc["all", "from"])
    assert (gain.gain_lo <= gain.gain).all() and (gain.gain <= gain.gain_hi).all()
    bias = study.bias_table(res)
    assert np.isclose(bias.sum().to_numpy(), 100).all() and np.allclose(bias.truth, 100 / 7)
    fails = study.failure_cases(res, data, n=3)
    assert len(fails) <= 3 and {"felt", "face shows", "predicted"} <= set(fails.columns)
    assert (fails.felt != fails.predicted).all()
    with pytest.raises(ValueError, match="unknown prompt variant"):
        study.gemma_results(data, lm, variants=("all",))
    acc = study.calibration_accuracy(res)
    assert list(acc.index) == ["raw", "calibrated"] and (acc.n == 21).all()
    full = res[res.variant == "others"]
    assert np.isclose(acc.loc["calibrated", "accuracy"], 100 * full.correct.mean())
    assert np.isclose(acc.loc["raw", "accuracy"], 100 * full.correct_raw.mean())
    assert ((acc.lo <= acc.accuracy) & (acc.accuracy <= acc.hi)).all()
    assert np.allclose(acc.over_chance, acc.accuracy - 100 / 7)
    with pytest.raises(ValueError, match="no row of variant 'marks'"):
        study.calibration_accuracy(res, "marks")
    import matplotlib

    matplotlib.use("Agg")
    assert len(study.plot_examples(data["scenes"]).axes) == len(study.EXAMPLE_KINDS)
    with pytest.raises(ValueError, match="no scene of kind 'party'"):
        study.plot_examples(data["scenes"], kinds=("full", "party"))
    fig = study.plot_ladder({"a": study.ladder_table(res)})
    assert len(fig.axes) == 1
    assert len(study.plot_bias(bias).axes) == 1


def test_quick_scores_checkpoint_matches_the_quick_prompts():
    """The committed Gemma scores cover the quick profile's face-only and full prompts (else the chapter would
    score them again, which takes minutes on a CPU)."""
    from facelab import checkpoints

    if checkpoints.status(study.SCORE_CHECKPOINT) != "ok":
        pytest.skip("no committed Gemma score checkpoint")
    cached = pr.scorers.load_score_checkpoint(study.SCORE_CHECKPOINT, study.MODEL_KEY, pr.LABELS)
    data = study.make_dataset(study.QUICK_SCENES, seed=0)
    texts = [p.text for p in data["prompts"] if p.variant in study.GEMMA_QUICK_VARIANTS]
    keys = [pr.scorers.prompt_hash(t, study.MODEL_KEY, pr.LABELS) for t in texts]
    missing = sum(k not in cached for k in keys)
    assert missing <= len(keys) // 20, f"{missing} of {len(keys)} quick prompts have no committed score"


def test_error_sources_counts_the_cues_of_every_error(tmp_path, data):
    lm = pr.LMScorer(WordCountLM(), "word-count", cache_dir=tmp_path)
    res, _ = study.gemma_results(data, lm, variants=("face", "others"))
    errs = study.error_sources(res, data)
    wrong = res[(res.variant == "others") & ~res.correct]
    assert len(errs) == len(wrong) > 0 and errs.scene.tolist() == wrong.scene.tolist()
    assert errs.attrs["favoured"] == study.bias_table(res)["calibrated"].idxmax()
    assert (errs.favoured == (errs.predicted == errs.attrs["favoured"])).all()
    for _, e in errs.iterrows():      # recount by hand from the scene's ground truth
        s = data["scenes"][e.scene]
        cues = [s.person.posture_emotion, s.scene_emotion] + [o.emotion for o in s.persons if o is not s.person]
        assert e.cues == len(cues) and e.felt == s.label != e.predicted
        assert e.to_felt == cues.count(s.label) and e.to_predicted == cues.count(e.predicted)
        assert e.misled == (e.to_predicted > e.to_felt) and e.informed == (e.to_felt > len(cues) / 2)
    assert study.error_sources(res, data, favoured="sad").favoured.tolist() == (errs.predicted == "sad").tolist()
    none = study.error_sources(res.assign(correct=True), data)
    assert len(none) == 0 and int(none.misled.sum()) == 0
    with pytest.raises(ValueError, match="favoured must be one of"):
        study.error_sources(res, data, favoured="bored")
    with pytest.raises(ValueError, match="unknown prompt variant"):
        study.error_sources(res, data, variant="everything")
