"""facelab.studies.privacy_masque (the MASQUE chapter's experiment), DiffAIM used for dodging, the cached makeup
classifier and the chapters' source display. Tiny random UNets and a stub face embedder; no checkpoint needed."""

import os

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facelab.models import FaceModel
from facelab.privacy.diffaim import DiffAIMConfig, diffaim_protect, identity_score
from facelab.privacy.masque import MasqueConfig, null_text_inversion
from facelab.studies.privacy_masque import (compare_dodging, dodging_data, dodging_results, dodging_tests,
                                            locality_at_equal_success, makeup_prompt, similarity_to_references, victim_thresholds)
from test_masque import _quick, _StubEmbedder


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return dodging_data(32, 3, n_references=1, n_gallery=2, n_threshold_identities=4)


def _stub(name="stub", seed=1):
    torch.manual_seed(seed)
    e = _StubEmbedder()
    torch.manual_seed(seed)
    for p in e.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return FaceModel(name, e.requires_grad_(False), "synth-64")


def test_dodging_data_splits_people_into_protect_reference_gallery(data):
    assert data["images"].shape == (3, 3, 32, 32) and data["landmarks"].shape == (3, 68, 2)
    assert data["references"].shape[0] == 3 and data["gallery"].shape[0] == 6
    ids = np.asarray(data["identities"])
    assert len(set(ids)) == 3
    assert (np.asarray(data["reference_identities"]) == ids).all()
    assert data["gallery_owner"].tolist() == [0, 0, 1, 1, 2, 2]
    assert not set(data["threshold_ids"]) & set(ids)                  # thresholds from other people
    assert not torch.equal(data["images"][0], data["gallery"][0])     # a different photo of the same person
    with pytest.raises(ValueError, match="n_gallery"):
        dodging_data(32, 2, n_gallery=0)


def test_makeup_prompt_names_the_word():
    model = _quick()
    assert makeup_prompt(model, "blue eyeshadow") == (f"{model.default_prompt} with blue eyeshadow", "eyeshadow")
    with pytest.raises(ValueError, match="empty makeup phrase"):
        makeup_prompt(model, "  ")


def test_identity_score_without_target_is_distance_to_source():
    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)

    class _Fixed:
        def embed(self, images, landmarks, augment=None):
            return images

    s = identity_score([_Fixed()], e.clone(), None, [e], None)
    assert torch.allclose(s[:, 0], torch.zeros(4), atol=1e-6)         # unchanged face: cos 1 -> score 0
    s = identity_score([_Fixed()], -e, None, [e], None)
    assert torch.allclose(s[:, 0], 2 * torch.ones(4), atol=1e-6)


def test_diffaim_dodging_moves_away_from_the_source(data):
    from test_diffusion import _small_quick_model

    model = _small_quick_model(image_size=32)
    sur = _stub()
    X, L = data["images"], data["landmarks"]
    cfg = DiffAIMConfig(num_steps=4, manipulated_steps=2, inner_steps=2, epsilon=0.1, perceptual_weight=0.0,
                        semantic_weight=0.0, structure_weight=0.0)
    r = diffaim_protect(model, X, None, [sur], landmarks=L, config=cfg)
    assert r.images.shape == X.shape and torch.isfinite(r.images).all()
    with torch.no_grad():
        after = torch.nn.functional.cosine_similarity(sur.embed(r.images, L), sur.embed(X, L))
    assert (after < 1 - 1e-4).all()          # DDPM inversion alone gives X back exactly (cosine 1)
    assert r.history[-1]["identity"] > r.history[0]["identity"]


def test_compare_dodging_runs_every_method_and_tabulates(data):
    model = _quick()
    models = {"a": _stub("a", 1), "b": _stub("b", 2)}
    cfg = MasqueConfig(num_steps=3, null_inner_steps=1, adv_start=0.0, adv_step=0.5)
    inv = null_text_inversion(model, data["images"], model.default_prompt, num_steps=3, guidance_scale=3.0,
                              inner_steps=1, record_attention=True)
    res = compare_dodging(model, data, models, ["red lipstick", "blue eyeshadow"], config=cfg, inversion=inv,
                          black_box_victims=["a"], black_box_phrases=["red lipstick"], pgd_epsilons=(8 / 255,),
                          pgd_steps=2, diffaim_config=DiffAIMConfig(num_steps=3, manipulated_steps=1, inner_steps=1))
    keys = set(res.runs)
    for v in ("a", "b"):
        assert ("MASQUE", "red lipstick", "white-box", v) in keys
        assert ("makeup, no guidance", "blue eyeshadow", "no guidance", v) in keys
        assert ("global PGD 8/255", "-", "white-box", v) in keys and ("clean", "-", "no attack", v) in keys
    assert ("MASQUE", "red lipstick", "black-box", "a") in keys
    assert ("MASQUE", "blue eyeshadow", "black-box", "a") not in keys and ("DiffAIM (dodging)", "-", "black-box",
                                                                          "b") not in keys
    X = data["images"]
    for phrase, mask in res.masks.items():                 # MASQUE and masked PGD change nothing outside the region
        outside = (mask == 0).expand_as(X)
        for m in ("MASQUE", "masked PGD 8/255"):
            x = res.runs[(m, phrase, "white-box", "a")]
            assert float((x - X).abs().masked_select(outside).max()) == 0.0
    assert set(res.timing["method"]) >= {"MASQUE", "makeup, no guidance", "DiffAIM (dodging)", "global PGD 8/255"}
    assert (res.timing["s/face"] > 0).all()

    thr = victim_thresholds(models, data["threshold_images"], data["threshold_landmarks"], data["threshold_ids"],
                            fars=(0.1,))                           # 4 people x 3 photos: too few pairs for 1 %
    t = dodging_results(res, data, models, thr, fars=(0.1,))
    assert {"success", "summary", "locality", "quality"} <= set(t) and "adherence" not in t
    assert set(t["success"]["setting"]) == {"white-box", "black-box", "no guidance", "no attack"}
    assert t["success"]["FAR=0.1"].between(0, 1).all()
    assert (t["success"]["FAR=0.1 lo"] <= t["success"]["FAR=0.1"]).all()
    assert (t["success"]["FAR=0.1"] <= t["success"]["FAR=0.1 hi"]).all()
    assert list(t["summary"].columns) == ["FAR=0.1", "FAR=0.1 lo", "FAR=0.1 hi", "victims", "n"]
    assert (t["summary"]["FAR=0.1 lo"] <= t["summary"]["FAR=0.1"]).all()
    tests = dodging_tests(t["outcomes"], ["red lipstick"], ["a"], far=0.1, black_box_victims=["a"], pgd="PGD 8/255")
    assert {"MASQUE / red lipstick / white-box / a", "MASQUE / red lipstick / black-box / a"} == set(tests["A"])
    assert tests["p (McNemar)"].between(0, 1).all() and (tests["n"] == 6).all()   # 3 faces x 2 gallery photos
    loc = t["locality"]["share of change outside"]
    assert loc[("red lipstick", "MASQUE")] == 0.0 and loc[("red lipstick", "global PGD 8/255")] > 0.5
    sims = similarity_to_references([models["a"]], {"clean": X, "MASQUE": res.runs[("MASQUE", "red lipstick",
                                                                                    "white-box", "a")]}, data)
    assert sims.shape == (3, 2) and sims["clean"].between(-1, 1).all()
    assert list(t["colour"].index.get_level_values("method").unique()) == ["makeup, no guidance", "MASQUE"]
    assert t["colour"]["share closer"].between(0, 1).all() and t["colour"].loc[("red lipstick", "MASQUE"),
                                                                                  "target RGB"] == (0.72, 0.06, 0.1)
    assert t["attention"].loc["red lipstick", "map"] == "noise-difference"      # the stand-in has no tokenizer
    table, at = locality_at_equal_success(t, "red lipstick", far=0.1)
    assert {"MASQUE", "global PGD 8/255", "makeup, no guidance"} <= set(table.index)
    assert at["MASQUE change outside (/255)"] == 0.0 and at["PGD change outside at equal success (/255)"] > 0
    with pytest.raises(ValueError, match="not among"):
        compare_dodging(model, data, models, ["red lipstick"], config=cfg, inversion=inv, black_box_victims=["zz"])
    with pytest.raises(ValueError, match="not among the models"):
        compare_dodging(model, data, models, ["red lipstick"], config=cfg, inversion=inv, surrogates=["zz"])


def test_a_victim_outside_the_surrogates_is_black_box_for_free(data):
    model = _quick()
    models = {"a": _stub("a", 1), "b": _stub("b", 2)}
    cfg = MasqueConfig(num_steps=2, null_inner_steps=0, adv_start=0.0, adv_step=0.5)
    res = compare_dodging(model, data, models, ["red lipstick"], config=cfg, surrogates=["a"],
                          black_box_victims=["b"], pgd_epsilons=(4 / 255, 8 / 255), pgd_steps=1)
    assert ("MASQUE", "red lipstick", "white-box", "a") in res.runs and ("MASQUE", "red lipstick", "white-box",
                                                                         "b") not in res.runs
    assert res.runs[("MASQUE", "red lipstick", "black-box", "b")] is res.runs[("MASQUE", "red lipstick",
                                                                               "white-box", "a")]
    assert res.runs[("global PGD 4/255", "-", "black-box", "b")] is res.runs[("global PGD 4/255", "-",
                                                                               "white-box", "a")]
    assert (res.timing["held out"] == "-").all() and res.surrogates == ["a"]
    assert res.masque["red lipstick"].map_kind == "noise-difference"


def test_makeup_classifier_cache_round_trip(tmp_path):
    from facelab.privacy.makeup import MakeupClassifier, load_makeup_classifier, save_makeup_classifier

    with pytest.raises(FileNotFoundError, match="python -m facelab.privacy.makeup"):
        load_makeup_classifier(tmp_path / "missing.safetensors", train_if_missing=False)
    torch.manual_seed(0)
    net = MakeupClassifier().eval()
    path = tmp_path / "m.safetensors"
    digest = save_makeup_classifier(net, {"held-out accuracy": {"lipstick": 0.5}}, path)
    again, log = load_makeup_classifier(path, train_if_missing=False)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.allclose(net(x)[k], again(x)[k]) for k in net.classes)
    assert log["sha256"] == digest and len(digest) == 64 and not path.with_suffix(".tmp").exists()


def test_source_code_hides_the_docstring():
    from facelab.plotting import source_code

    src = source_code(makeup_prompt)
    assert src.startswith("def makeup_prompt(") and "docstring: help(makeup_prompt)" in src
    assert "edited word" not in src and "return f\"" in src
    assert "edited word" in source_code(makeup_prompt, docstring=True)


def test_makeup_ceiling_classifies_rendered_and_autoencoded_faces():
    from facelab.privacy.makeup import MakeupClassifier
    from facelab.studies.privacy_masque import makeup_ceiling

    torch.manual_seed(0)
    t = makeup_ceiling(_quick(), MakeupClassifier().eval(), ["red lipstick", "blue eyeshadow"], n_faces=4)
    assert list(t.index) == [("red lipstick", "rendered"), ("red lipstick", "through the autoencoder"),
                             ("blue eyeshadow", "rendered"), ("blue eyeshadow", "through the autoencoder")]
    assert t["adherence"].between(0, 1).all() and (t["n"] == 4).all()
    assert (t["adherence lo"] <= t["adherence"]).all() and (t["adherence"] <= t["adherence hi"]).all()
    with pytest.raises(ValueError, match="no makeup kind"):
        makeup_ceiling(_quick(), MakeupClassifier().eval(), ["a hat"], n_faces=2)


def _sweep_setup(data):
    """A two-step MASQUE run on 'red lipstick' (surrogate 'a', victims 'a' and 'b') for guidance_sweep."""
    model = _quick()
    models = {"a": _stub("a", 1), "b": _stub("b", 2)}
    cfg = MasqueConfig(num_steps=2, null_inner_steps=0, adv_start=0.5, adv_step=0.5)
    inv = null_text_inversion(model, data["images"], model.default_prompt, num_steps=2, guidance_scale=3.0,
                              inner_steps=0, record_attention=True)
    res = compare_dodging(model, data, models, ["red lipstick"], config=cfg, inversion=inv, surrogates=["a"],
                          black_box_victims=[], pgd_epsilons=(8 / 255,), pgd_steps=1)
    thr = victim_thresholds(models, data["threshold_images"], data["threshold_landmarks"], data["threshold_ids"],
                            fars=(0.1,))
    return model, models, inv, res, thr


def test_guidance_sweep_trades_success_for_colour(data):
    from facelab.studies.privacy_masque import guidance_sweep

    model, models, inv, res, thr = _sweep_setup(data)
    t = guidance_sweep(model, res, data, models, thr, "red lipstick", [0.25], inversion=inv, far=0.1)
    assert list(t.index) == [(0.0, False), (0.25, False), (0.5, False)]
    both = guidance_sweep(model, res, data, models, thr, "red lipstick", [0.5], inversion=inv, far=0.1,
                          keep_colour=[True, False])
    assert list(both.index) == [(0.0, False), (0.5, False), (0.5, True)]       # the chapter's run is not redone
    assert both.loc[(0.5, False), "success white box"] == t.loc[(0.5, False), "success white box"]
    assert {"success white box", "success black box", "colour: share closer"} <= set(t.columns)
    assert t["success white box"].between(0, 1).all() and (t["success white box lo"] <= t["success white box"]).all()


def test_guidance_sweep_reuses_the_outcomes_of_runs_already_scored(data, monkeypatch):
    """With dodging_results' outcomes, only the sweep's new runs are scored again, and the table is the same."""
    from facelab.studies import privacy_masque as pm

    model, models, inv, res, thr = _sweep_setup(data)
    fresh = pm.guidance_sweep(model, res, data, models, thr, "red lipstick", [0.25], inversion=inv, far=0.1)
    tables = pm.dodging_results(res, data, models, thr, fars=(0.1,))
    scored = []
    real = pm.runs_outcomes
    monkeypatch.setattr(pm, "runs_outcomes", lambda runs, *a, **k: scored.append(sorted(runs)) or real(runs, *a, **k))
    reused = pm.guidance_sweep(model, res, data, models, thr, "red lipstick", [0.25], inversion=inv, far=0.1,
                               outcomes=tables["outcomes"])
    pd.testing.assert_frame_equal(reused, fresh)
    # the unguided edit (both victims) and the chapter's run (white box on 'a') are reused; this set-up has no
    # black-box run, so the chapter's images are scored by 'b' here
    assert scored == [[(0.25, False, "a"), (0.25, False, "b"), (0.5, False, "b")]]
    # outcomes of other images (not the runs' own tensors) are not taken
    scored.clear()
    other = {k: v for k, v in tables["outcomes"].items()}
    res.runs = {k: v.clone() for k, v in res.runs.items()}
    pm.guidance_sweep(model, res, data, models, thr, "red lipstick", [0.25], inversion=inv, far=0.1, outcomes=other)
    assert len(scored[0]) == 6


def test_guidance_sweep_tests_adherence_against_the_chapters_run(data):
    """Adherence per run with its interval, and McNemar on the same faces against the chapter's run."""
    from facelab.studies.privacy_masque import guidance_sweep

    model, models, inv, res, thr = _sweep_setup(data)
    plain = res.plain["red lipstick"].images

    class Judge:          # reads red lipstick on the unguided edit only
        def predict(self, x):
            return {"lipstick": ["red" if x is plain else "pink"] * len(x)}

    t = guidance_sweep(model, res, data, models, thr, "red lipstick", [], inversion=inv, far=0.1, classifier=Judge())
    n = len(plain)
    assert t.loc[(0.0, False), "adherence"] == 1.0 and t.loc[(0.5, False), "adherence"] == 0.0
    assert t.loc[(0.5, False), "adherence vs chapter's run: p"] == 1.0          # the chapter's own row
    assert t.loc[(0.0, False), "adherence vs chapter's run: p"] == pytest.approx(2 * 0.5 ** n)   # exact, b = n, c = 0
    assert (t["adherence lo"] <= t["adherence"]).all() and (t["adherence"] <= t["adherence hi"]).all()


def test_chapter_config_is_the_one_setting_the_notebook_and_benchmarks_read():
    from pathlib import Path

    from facelab.studies.privacy_masque import chapter_config

    quick, full = chapter_config(quick=True), chapter_config(quick=False)
    assert isinstance(quick, MasqueConfig) and isinstance(full, MasqueConfig)
    assert (quick.num_steps, quick.null_inner_steps, quick.adv_start, quick.adv_step) == (8, 0, 0.5, 0.5)
    assert (quick.keep_colour, quick.blend_threshold, quick.guidance_scale) == ("chroma", 0.0, 7.5)
    assert (full.num_steps, full.null_inner_steps, full.adv_step, full.keep_colour) == (50, 10, 0.1, True)
    changed = chapter_config(quick=True, blend_threshold=0.2)
    assert changed.blend_threshold == 0.2 and changed.adv_step == quick.adv_step
    with pytest.raises(TypeError):
        chapter_config(quick=True, no_such_field=1)
    root = Path(__file__).resolve().parents[1]
    notebook = (root / "notebooks" / "06_privacy_masque.ipynb").read_text()
    assert "study.chapter_config(quick=P.quick)" in notebook and "MasqueConfig(" not in notebook
    assert "chapter_config(quick=True" in (root / "benchmarks" / "bench_masque_attention.py").read_text()
