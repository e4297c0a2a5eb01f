"""Chapter 07 study module (facelab.studies.expressions_faces_voices_words) on a small fake descriptor bank."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from facelab.affect.bank import DescriptorBank  # noqa: E402
from facelab.studies import expressions_faces_voices_words as study  # noqa: E402


def _bank(n=40, T=10, m=30, seed=0):
    rng = np.random.default_rng(seed)
    ah = np.array([i % 2 for i in range(n)])
    label = np.concatenate([np.repeat(rng.integers(0, 8, 2), T // 2) for _ in range(n)])
    F = len(label)
    onehot = np.eye(8)[label]
    probs = rng.dirichlet(np.ones(7), F).astype(np.float32)
    frames = {"clip": np.repeat(np.arange(n), T), "label": label, "present": np.ones(F, bool),
              "faceapi_probs": probs, "fer_probs": probs[:, ::-1].copy(),
              "net": rng.normal(size=(F, 4)) + onehot[:, :4] * 2, "shape": rng.normal(size=(F, 3)),
              "deform": rng.normal(size=(F, 4)) + onehot[:, 4:] * 2}
    frames["present"][3] = False
    clips = {"ah": ah, "ah_cues": np.zeros((n, 3), int), "face_emotion": np.zeros(n, int),
             "word_emotion": np.zeros(n, int), "voice": rng.normal(size=(n, 88)) + ah[:, None],
             "text_true": rng.normal(size=(n, 6)) + ah[:, None], "text_asr": rng.normal(size=(n, 6)),
             "wer_edits": rng.integers(0, 4, n), "wer_words": np.full(n, 10), "n_missing": np.zeros(n, int)}
    target = rng.uniform(size=(m, 6))
    mimicry = {"mim_clip": np.repeat(np.arange(m), 6), "mim_net": rng.normal(size=(6 * m, 4)),
               "mim_probs": rng.dirichlet(np.ones(7), 6 * m), "mim_deform": np.repeat(target, 6, 0) @
               rng.normal(size=(6, 4)) + 0.1 * rng.normal(size=(6 * m, 4)),
               "mim_true_deform": np.repeat(target, 6, 0) @ rng.normal(size=(6, 4)), "mim_target": target}
    return DescriptorBank(frames, clips, mimicry, {}, {})


@pytest.fixture(scope="module")
def bank():
    return _bank()


@pytest.fixture(scope="module")
def res(bank):
    return study.run_study(bank, seeds=(0, 1), n_boot=20, n_components=4)


def test_affect_data_variants_and_errors(bank):
    for face, dim in (("nets", 4), ("landmarks", 7), ("nets + landmarks", 11)):
        d = study.affect_data(bank, face)
        assert d.n == 40 and d.frame_features[0].shape == (10, dim) and d.pretrained_probs[0].shape == (10, 8)
        assert np.isnan(d.frame_features[0][3]).all() and np.isnan(d.pretrained_probs[0][3]).all()
        assert len(d.mimicry_features) == 30
    with pytest.raises(ValueError, match="unknown face descriptor 'pixels'"):
        study.affect_data(bank, "pixels")
    with pytest.raises(ValueError, match="pretrained must be 'faceapi' or 'fer'"):
        study.affect_data(bank, pretrained="emotiefflib")


def test_run_study_summary_and_comparison(res):
    t = res["tables"]
    assert set(t["face"]) == set(study.FACE_VARIANTS)
    assert sorted(t[t["face"] == "nets + landmarks"]["seed"].unique()) == [0, 1]
    assert (t[t["face"] == "nets"]["seed"] == 0).all()
    s = study.ablation_summary(res)
    assert list(s.columns[:3]) == ["task", "variant", "metric"] and "mean over 2 seeds" in s.columns
    assert len(s) == len(t[(t["face"] == "nets + landmarks") & (t["seed"] == 0)])
    c = study.descriptor_comparison(res, n_boot=20)
    assert list(c["face descriptor"]) == list(study.FACE_VARIANTS)
    assert c["expression: difference to nets"].iloc[0] == "—"
    assert c["expression: difference to nets"].iloc[2].count("[") == 1
    # the landmark-like block carries classes 4-7: adding it to the nets must help expressions here
    e = t[(t["seed"] == 0) & (t["task"] == "expression") & (t["variant"] == "classifier")].set_index("face")
    assert e.loc["nets + landmarks", "estimate"] > e.loc["nets", "estimate"]


def test_crossval_mimicry_targets(bank, res):
    cv = study.crossval_fusion(bank, seeds=(0,), n_boot=20, n_components=4)
    assert list(cv["transcript"]) == ["true", "ASR"]
    assert {"face", "voice", "words", "fusion", "best single", "fusion - best", "p"} <= set(cv.columns)
    assert (cv["delta_lo"] <= cv["delta"]).all() and (cv["delta"] <= cv["delta_hi"]).all()
    mim = study.mimicry_study(bank, seeds=(0,), n_boot=20, n_components=4)
    assert len(mim) == 4 and (mim["lo"] <= mim["hi"]).all()
    up = mim.set_index("descriptor").loc["world's landmarks (upper bound)", "estimate"]
    assert up > 0.5                                         # a noiseless linear view of the targets
    wer = study.asr_error(bank, n_boot=50)
    e, w = bank.clips["wer_edits"], bank.clips["wer_words"]
    assert wer[0] == pytest.approx(e.sum() / w.sum()) and wer[1] <= wer[0] <= wer[2]
    tt = study.targets_table(res, cv, wer, mim)
    assert len(tt) == 4 and set(tt["met"]) <= {"yes", "no", "in the mean only", "in the estimate only"}
    assert tt["met"].iloc[3] == "yes"


def test_net_agreement_counts(bank):
    a = study.net_agreement(bank)
    assert list(a["class (world)"])[:8] == list(study.ABAW_EXPRESSIONS)
    assert a["frames"].iloc[:8].sum() == int(bank.frames["present"].sum())
    assert a["face-api agrees"].str.match(r"^\d\.\d\d \[").all()


def test_plots_return_figures(bank, res):
    from matplotlib.figure import Figure

    pr = res["predictions"]["nets"]
    fig = study.plot_confusions(pr["expression_true"], {"a": pr["expression"]["classifier"],
                                                        "b": pr["expression"]["pretrained only"]})
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    import matplotlib.pyplot as plt

    plt.close("all")


def test_real_corpora_messages(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOTIEFFLIB_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    msg = study.emotiefflib_status()
    assert msg.startswith("absent:") and "never downloads" in msg
    (tmp_path / "enet_b0_8_best_vgaf.onnx").write_bytes(b"x")
    assert study.emotiefflib_status().startswith("found:")
    monkeypatch.delenv("AFFWILD2_ROOT", raising=False)
    assert "AFFWILD2_ROOT" in study.affwild2_example()
    assert "no ABAW annotation file" in study.affwild2_example(tmp_path)


def test_clip_views():
    from matplotlib.figure import Figure

    from facelab.affect import bank as B

    s = B.settings_for("quick")
    s = {**s, "corpus": {**s["corpus"], "n_clips": 30}}
    corpus, i, clip = study.example_clip(s, ah=1, cue="face")
    assert clip.ah == 1 and "face" in clip.ah_cues
    assert isinstance(study.plot_clip_frames(clip, n=4), Figure)
    assert isinstance(study.plot_spectrogram(clip), Figure)
    with pytest.raises(ValueError, match="no clip with ah=1 and cue 'nothing'"):
        study.example_clip(s, ah=1, cue="nothing")
    import matplotlib.pyplot as plt

    plt.close("all")
