"""facelab.studies.test_time_adaptation: streams, labels, scoring, tables (chapter 09)."""

import numpy as np
import pandas as pd
import pytest
import torch

from facelab.studies import test_time_adaptation as S


@pytest.fixture(scope="module")
def world():
    from facelab.synth import FaceWorld

    return FaceWorld(seed=0, size=S.SIZE)


def test_stream_has_frames_labels_and_shift(world):
    s = S.make_stream(world, 6000, 200, duration_s=6.0, fps=8.0)
    T = 48
    assert s["frames"].shape == (T, 3, S.SIZE, S.SIZE) and s["labels"].shape == (T,)
    assert set(np.unique(s["labels"])) <= set(range(7)) and (s["labels"] != 6).any()
    bad = ~torch.isfinite(s["frames"]).flatten(1).all(1).numpy()
    assert np.array_equal(bad, ~s["valid"]) and bad.sum() >= 1                 # the no-face drop-out
    ok = s["frames"][torch.as_tensor(s["valid"])]
    assert float(ok.min()) >= 0 and float(ok.max()) <= 1
    clean = S.make_stream(world, 6000, 200, duration_s=6.0, fps=8.0, shift="none")
    assert np.array_equal(clean["labels"], s["labels"]) and clean["valid"].all()  # same episodes, no shift
    with pytest.raises(ValueError, match="shift"):
        S.make_stream(world, 1, 1, shift="storm")


def test_splits_are_disjoint():
    (a, sa), (b, sb) = S.SPLITS["validation"], S.SPLITS["test"]
    assert abs(a - b) >= 100 and abs(sa - sb) >= 100
    assert S.SOURCE_SETTINGS["identities"][1] <= min(a, b)


def test_stream_f1_ignores_unlabelled_frames_and_rejects_empty():
    y = np.array([0, 0, 3, -1, 6])
    p = np.array([0, 0, 3, 5, 6])
    assert S.stream_f1(y, p) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no labelled frames"):
        S.stream_f1(np.array([-1]), np.array([0]))
    with pytest.raises(ValueError, match="differ"):
        S.stream_f1(y, p[:2])


def test_methods_table_intervals_and_factors():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        base = rng.uniform(0.2, 0.4)
        for m, d, nu in (("none", 0.0, 0), ("TENT", 0.05, 100), ("FIESTA", 0.1, 50),
                         ("TempT (all parameters)", 0.02, 5000)):
            rows.append(dict(stream=i, method=m, f1=base + d, n_updated=nu, n_parameters=5000, ms_per_frame=1.0,
                             resets=0))
    t = S.methods_table(pd.DataFrame(rows))
    assert t.loc["FIESTA", "vs none"] == pytest.approx(10.0)
    assert t.loc["FIESTA", "vs none lo"] == pytest.approx(10.0)           # constant difference: zero-width interval
    assert t.loc["FIESTA", "x fewer than all"] == pytest.approx(100.0)
    assert t.loc["TENT", "FIESTA - method"] == pytest.approx(5.0)
    assert t.loc["none", "lo"] <= t.loc["none", "macro-F1"] <= t.loc["none", "hi"]
    f = S.paired_table(t)
    assert "[" in f.loc["FIESTA", "macro-F1 x100 [95% CI]"]


def test_build_adapter_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        S.build_adapter("MEMO", torch.nn.Identity(), {})


def test_protocol_runs_end_to_end_on_a_short_stream(world):
    model, meta = S.source_model()
    assert meta["log"]["val_accuracy"] > 0.5                       # the committed source checkpoint
    s = [S.make_stream(world, 6000, 200, duration_s=4.0)]
    hp = S.chosen_hyperparameters()
    df = S.evaluate(model, s, ("none", "FIESTA"), hp=hp)
    assert list(df["method"]) == ["none", "FIESTA"]
    assert df.loc[1, "n_updated"] == hp["FIESTA"]["k"] and 0 <= df.loc[1, "f1"] <= 1
    assert df.loc[1, "no_face_frames"] >= 1
    ff = S.fisher_frames_study(model, s, ns=(1, 3))
    assert ff.loc[ff["n_frames"] == 3, "jaccard"].item() == 1.0
    curves, summary = S.drift_study(model, s, methods=("FIESTA",), reset_every=16, window=8, hp=hp)
    assert set(summary["policy"]) == {"no adaptation", "no reset", "reset every 16"}
    assert summary.loc[summary["policy"] == "reset every 16", "resets"].item() == 2
    abl = S.temporal_ablation(model, s, hp=hp, results=df)
    assert abl["temporal_off"].notna().all() and abl["weight"].iloc[0] > 0
