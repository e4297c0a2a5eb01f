"""Chapter 08's study: tables and figures on known predictions; the committed checkpoints load."""

import numpy as np
import pandas as pd
import pytest

from facelab.studies import neutral_video_adaptation as study


def _run(acc_by_method, n=50, targets=(1, 2, 3), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for t in targets:
        y = rng.integers(0, 2, n)
        preds = {}
        for m, a in acc_by_method.items():
            right = rng.random(n) < a
            preds[m] = np.where(right, y, 1 - y)
        for i in range(n):
            rows.append({"target": t, "frame": i, "label": int(y[i]), **{m: int(preds[m][i]) for m in acc_by_method}})
    return {"predictions": pd.DataFrame(rows), "methods": list(acc_by_method)}


def test_summary_table_gap_and_paired_difference():
    run = _run({"source only": 0.6, "DSFDA": 0.8, "oracle (target labels)": 0.9}, n=200)
    table = study.summary_table(run, n_boot=300)
    acc = table["accuracy"]
    df = run["predictions"]
    assert acc["DSFDA"] == pytest.approx(df.groupby("target").apply(
        lambda g: (g["DSFDA"] == g["label"]).mean(), include_groups=False).mean())
    d = table.loc["DSFDA"]
    assert d["delta"] == pytest.approx((df["DSFDA"] == df["label"]).mean() - (df["source only"] == df["label"]).mean())
    assert d["delta_lo"] > 0 and d["p_value"] < 0.05 and d["targets_better"] >= 2
    expect_gap = (acc["DSFDA"] - acc["source only"]) / (acc["oracle (target labels)"] - acc["source only"])
    assert d["gap_closed"] == pytest.approx(expect_gap)
    assert np.isnan(table.loc["source only", "delta"]) if "delta" in table else True


def test_per_target_table_has_intervals():
    run = _run({"source only": 0.5, "DSFDA": 0.7}, n=40, targets=(7, 8))
    t = study.per_target_table(run)
    assert list(t.index) == [7, 8] and t["frames"].tolist() == [40, 40]
    assert all("[" in v for v in t["DSFDA"])


def test_judge_table_rates():
    j = pd.DataFrame({"variant": ["dsfda"] * 4, "target": [1] * 4, "label": [0, 1, 0, 1],
                      "sim_own": [-0.2, -0.5, -0.7, -0.3], "sim_other": [-0.8, -0.9, -0.4, -0.9],
                      "source_agrees": [True, True, False, True], "faceapi": [0, 3, 0, 3]})
    j.attrs["thresholds"] = {"published": -0.6, "threshold": -0.35}
    j.attrs["real_sim_own"] = np.array([-0.1, -0.2, -0.4])
    t = study.judge_table(j)
    assert t.loc["dsfda", "identity_published"] == pytest.approx(0.75)
    assert t.loc["dsfda", "identity_measured"] == pytest.approx(0.5)
    assert t.loc["dsfda", "impostor_measured"] == pytest.approx(0.0)
    assert t.loc["dsfda", "expression_source"] == pytest.approx(0.75)
    assert t.loc["real expressive frames (reference)", "identity_measured"] == pytest.approx(2 / 3)


def test_run_targets_rejects_unknown_methods():
    with pytest.raises(ValueError, match="unknown methods"):
        study.run_targets({"settings": {}, "population": None, "classifier": None}, methods=("tent",))


def test_figures():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from facelab.adaptation.source_free.data import ControlCheck

    assert isinstance(study.plot_disentangling(), Figure)
    assert isinstance(study.plot_per_target(_run({"source only": 0.5, "DSFDA": 0.7})), Figure)
    chk = ControlCheck(keep=np.array([True, False, True]), non_neutral=np.array([False, True, False]),
                       no_face=np.zeros(3, bool), deviation=np.array([0.1, 0.5, 0.1]), face_score=np.ones(3))
    assert isinstance(study.plot_control_check(chk), Figure)


def test_committed_checkpoints_load():
    from facelab.adaptation.source_free import pretrain as PT

    s = PT.settings_for("quick")
    clf, meta = PT.source_classifier(s, allow_train=False)
    gens = PT.generators(s, allow_train=False)
    assert set(gens) == set(PT.GENERATOR_VARIANTS) and clf.n_classes == 2
    from facelab import checkpoints

    for name in ("dsfda_source", "dsfda_gen_source", "dsfda_gen", "dsfda_gen_nodual", "dsfda_gen_noperc",
                 "dsfda_gen_val"):
        assert checkpoints.checkpoint_path(name).stat().st_size < 3 * 2**20


def test_adaptation_setting_is_chosen_on_validation_targets_only():
    """The committed selection is up to date, was made on targets disjoint from the test targets and the source
    identities, picked the best validation mean, and is what the chapter's experiment uses."""
    from facelab import checkpoints
    from facelab.adaptation.source_free import pretrain as PT

    s = PT.settings_for("quick")
    sel = PT.select_adaptation(s, allow_train=False)
    val, test = PT.target_split(s, "validation"), PT.target_split(s, "test")
    val_ids = set(range(val["offset"], val["offset"] + val["n"]))
    assert sel["validation_targets"] == sorted(val_ids)
    assert not val_ids & set(range(test["offset"], test["offset"] + test["n"]))
    assert not val_ids & set(range(s["n_source"]))
    assert set(sel["scores"]) == set(PT.ADAPT_CANDIDATES)
    for name, per in sel["scores"].items():
        assert sel["mean_accuracy"][name] == pytest.approx(np.mean(list(per.values())))
        assert set(per) == {str(i) for i in val_ids}
    assert sel["mean_accuracy"][sel["chosen"]] == max(sel["mean_accuracy"].values())
    assert sel["chosen_setting"] == PT.ADAPT_CANDIDATES[sel["chosen"]]
    adapt = PT.adapt_settings(s, sel)
    assert {k: adapt[k] for k in sel["chosen_setting"]} == sel["chosen_setting"]
    assert checkpoints.checkpoint_path("dsfda_gen_val").stat().st_size < 3 * 2**20
    table = study.selection_table(sel)
    assert table["chosen"].sum() == 1 and table.loc[sel["chosen"], "chosen"]
    assert all("[" in v for v in table["pooled [95% CI]"])


def test_validation_split_rejects_overlap():
    from facelab.adaptation.source_free import pretrain as PT

    s = PT.settings_for("quick")
    s["validation"]["target_offset"] = s["target_offset"]
    with pytest.raises(ValueError, match="disjoint"):
        PT.target_split(s, "validation")
    with pytest.raises(ValueError, match="split must be"):
        PT.target_split(s, "train")


def test_committed_expression7_checkpoints_and_selection_load():
    from facelab import checkpoints
    from facelab.adaptation.source_free import pretrain as PT

    s = PT.settings_for("quick", "expression7")
    clf, _ = PT.source_classifier(s, allow_train=False)
    assert clf.n_classes == 7
    gens = PT.generators(s, variants=("dsfda",), allow_train=False)
    assert set(gens) == {"dsfda"}
    sel = PT.select_adaptation(s, allow_train=False)
    assert sel["mean_accuracy"][sel["chosen"]] == max(sel["mean_accuracy"].values())
    for name in ("dsfda_source_expression7", "dsfda_gen_source_expression7", "dsfda_gen_expression7",
                 "dsfda_gen_val_expression7"):
        assert checkpoints.checkpoint_path(name).stat().st_size < 3 * 2**20
