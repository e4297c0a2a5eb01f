"""DSFDA (facelab.adaptation.source_free): task, data, bad input, networks, losses, baselines, corpus loaders."""

import numpy as np
import pandas as pd
import pytest
import torch

from facelab.adaptation.source_free import corpora as C
from facelab.adaptation.source_free import data as D
from facelab.adaptation.source_free import dsfda as M
from facelab.adaptation.source_free.nets import ExpressionClassifier, Generator


@pytest.fixture(scope="module")
def world():
    from facelab.synth import FaceWorld

    return FaceWorld(seed=8, size=64)


@pytest.fixture(scope="module")
def target(world):
    style = D.make_style(np.random.default_rng(0))
    return D.render_target(world, 900, style, "pain", size=32, n_control=12, n_expressive=10, seed=3,
                           source_identities=range(5))


# ------------------------------------------------------------------------------------------ task
def test_pspi_formula():
    aus = {"AU04": [0.5, 0.0], "AU06": [0.2, 0.0], "AU07": [0.4, 0.0], "AU09": [0.1, 0.0], "AU10": [0.3, 0.0],
           "AU45": [1.0, 0.0]}
    np.testing.assert_allclose(D.pspi(aus), [0.5 + 0.4 + 0.3 + 1.0, 0.0])
    with pytest.raises(ValueError, match="AU45"):
        D.pspi({"AU04": [1.0]})


def test_draw_expressions_labels_follow_pspi_and_are_balanced():
    exprs, y = D.draw_expressions(200, "pain", np.random.default_rng(0))
    table = pd.DataFrame([{a: e.get(a, 0.0) for a in D.PSPI_AUS} for e in exprs])
    np.testing.assert_array_equal(y, (D.pspi(table) >= D.PAIN_THRESHOLD).astype(int))
    assert 0.4 < y.mean() < 0.6
    e7, y7 = D.draw_expressions(14, "expression7", np.random.default_rng(0))
    assert sorted(np.bincount(y7)) == [2] * 7 and e7[int(np.nonzero(y7 == 0)[0][0])] == {}
    with pytest.raises(ValueError, match="unknown task"):
        D.draw_expressions(3, "joy", np.random.default_rng(0))


def test_style_shows_gain_times_felt_plus_rest():
    s = D.SubjectStyle(gains={"AU04": 0.5}, rest={"AU07": 0.3})
    assert s.shown({"AU04": 0.8, "AU12": 1.0}) == pytest.approx({"AU04": 0.4, "AU07": 0.3, "AU12": 1.0})
    assert s.shown({"AU07": 0.9})["AU07"] == 1.0                       # clipped to [0, 1]


def test_render_target_shapes_and_splits(target):
    assert target.control.shape == (12, 1, 32, 32) and target.x.shape == (10, 1, 32, 32)
    assert target.control_val.sum() == 3 and target.oracle_train.sum() == 5
    assert len(target.eval_y) == 5
    assert target.control_landmarks.shape == (12, 68, 2)
    # landmarks in the crop frame lie inside the crop
    assert float(target.control_landmarks.min()) > -1 and float(target.control_landmarks.max()) < 33
    # the resting bias is in the shown AUs of every expressive frame
    for au, v in target.style.rest.items():
        assert (target.aus_shown[au] >= v - 1e-6).all()


def test_target_equal_to_source_identity_is_refused(world):
    with pytest.raises(D.TargetIsSourceError, match="source population"):
        D.render_target(world, 3, D.SubjectStyle(), "pain", size=32, source_identities=range(5))


# ------------------------------------------------------------------------------------------ bad control video
def test_control_check_flags_an_expression_in_the_video(world):
    events = [{"kind": "macro", "emotion": "angry", "onset": 0.4, "apex": 0.6, "offset": 0.9, "intensity": 1.0}]
    t = D.render_target(world, 901, D.SubjectStyle(), "pain", size=32, n_control=24, n_expressive=4, seed=1,
                        control_events=events)
    chk = D.check_control_video(t.control)
    assert chk.non_neutral.any() and chk.non_neutral[8:12].any()
    assert not chk.non_neutral[:4].any() and chk.keep.sum() == 24 - chk.non_neutral.sum()
    assert "not at rest" in chk.summary()


def test_control_check_errors():
    rng = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 16, 16, generator=rng)
    still = base.repeat(12, 1, 1, 1) + 0.001 * torch.rand(12, 1, 16, 16, generator=rng)
    with pytest.raises(D.ControlTooShortError, match="at least 8"):
        D.check_control_video(still[:5])
    moving = still.clone()
    moving[:5] = torch.rand(5, 1, 16, 16, generator=rng)                # 5 of 12 frames are something else
    with pytest.raises(D.NonNeutralControlError, match="not at rest"):
        D.check_control_video(moving, min_deviation=0.0, max_non_neutral=0.2)
    with pytest.raises(D.NoFaceError, match="shows a face"):
        D.check_control_video(torch.full_like(still, 0.5), face_template=base[0])     # blank frames
    blank = still.clone()
    blank[:6] = 0.5                                                     # frames without a face
    chk = D.check_control_video(blank, face_template=base[0], min_frames=4)
    assert chk.no_face[:6].all() and not chk.no_face[6:].any()
    with pytest.raises(D.ControlTooShortError, match="usable"):
        D.check_control_video(blank, face_template=base[0], min_frames=8)
    with pytest.raises(ValueError, match="tensor"):
        D.check_control_video(np.zeros((10, 1, 8, 8)))


def test_to_model_input_validates():
    with pytest.raises(ValueError):
        D.to_model_input(torch.rand(2, 4, 8, 8), 8)
    with pytest.raises(ValueError):
        D.to_model_input(torch.rand(0, 3, 8, 8), 8)
    assert D.to_model_input(torch.rand(2, 3, 16, 16), 8).shape == (2, 1, 8, 8)


# ------------------------------------------------------------------------------------------ networks and losses
def test_generator_shapes_and_noise():
    G = Generator(1, c=4, hidden=16, nz=4, n_res=1, n_down=3)
    x = torch.rand(3, 1, 32, 32)
    out = G(x, x.flip(0), generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 1, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1
    G3 = Generator(3, c=4, hidden=16, nz=0, n_down=2)
    assert G3(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)


def test_loss_weights_are_the_papers():
    assert M.LOSS_WEIGHTS == {"identity": 0.2, "expression": 0.8, "perceptual": 1.0, "dual_face": 5.0,
                              "dual_expr": 5.0}


def _tiny_data(n=24, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, size, size, generator=g) * 0.2
    x[y == 1, :, 4:8, :] += 0.7                                          # a learnable "expression"
    return x.clamp(0, 1), y


def test_train_generator_and_generate_with_ablation():
    x, y = _tiny_data()
    clf, _ = M.train_classifier(x, y, 2, epochs=2, c=4)
    arch = dict(c=4, hidden=16, nz=2, n_res=1, n_down=2)
    faces, ids = x[:8], torch.arange(8) % 2
    G, Dn, log = M.train_generator(faces, ids, 2, x, y, clf, steps=4, batch=4, arch=arch, log_every=2)
    assert log["step"] == [2, 4] and all(np.isfinite(log["dual"]))
    assert Dn.fc.out_features == 3                                      # two identities + fake
    _, _, log0 = M.train_generator(faces, ids, 2, x, y, clf, steps=2, batch=4, arch=arch, log_every=2,
                                   weights={"dual_face": 0.0, "dual_expr": 0.0})
    assert log0["dual"] == [0.0]
    with pytest.raises(ValueError, match="unknown loss weights"):
        M.train_generator(faces, ids, 2, x, y, clf, steps=1, arch=arch, weights={"cycle": 1.0})
    xg, yg, fi = M.generate(G, faces[:3], x, y, per_face=4)
    assert xg.shape == (12, 1, 16, 16) and fi.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert sorted(np.bincount(yg.numpy())) == [6, 6]                      # balanced over the source classes


def test_adapt_dsfda_early_stopping_and_split_errors():
    x, y = _tiny_data()
    clf, _ = M.train_classifier(x, y, 2, epochs=1, c=4)
    G = Generator(1, c=4, hidden=16, nz=2, n_down=2)
    val = np.zeros(8, bool)
    val[6:] = True
    res = M.adapt_dsfda(clf, G, x[:8], val, x, y, per_face=2, epochs=4, patience=1)
    assert res.generated.shape == (12, 1, 16, 16) and 1 <= res.log["epochs_run"] <= 4
    res0 = M.adapt_dsfda(clf, G, x[:8], val, x, y, per_face=2, epochs=1, neutral_label=None)
    assert res0.generated.shape == (12, 1, 16, 16)
    assert res.log["best_epoch"] == int(np.argmin(res.log["val_ce"])) + 1
    with pytest.raises(ValueError, match="both non-empty"):
        M.adapt_dsfda(clf, G, x[:8], np.zeros(8, bool), x, y)
    with pytest.raises(ValueError, match="one bool per control frame"):
        M.adapt_dsfda(clf, G, x[:8], np.ones(3, bool), x, y)


def test_bn_adapt_and_shot_im():
    x, y = _tiny_data()
    clf, _ = M.train_classifier(x, y, 2, epochs=1, c=4)
    target = x[y == 0][:8] + 0.3
    bn = M.bn_adapt(clf, target)
    m0 = bn.features[0][1].running_mean
    with torch.no_grad():
        expect = bn.features[0][0](target).mean((0, 2, 3))
    torch.testing.assert_close(m0, expect, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.head.weight, clf.head.weight)
    shot = M.shot_im(clf, target, epochs=2)
    torch.testing.assert_close(shot.head.weight, clf.head.weight)          # SHOT freezes the head
    assert not torch.equal(shot.features[0][0].weight, clf.features[0][0].weight)
    with pytest.raises(ValueError, match="non-empty"):
        M.bn_adapt(clf, torch.zeros(0, 1, 16, 16))


def test_classifier_forward():
    m = ExpressionClassifier(7, 3, c=4)
    f, logits = m(torch.rand(2, 3, 32, 32))
    assert f.shape == (2, 16) and logits.shape == (2, 7)


# ------------------------------------------------------------------------------------------ corpus loaders
def _biovid_fixture(root):
    import cv2

    rows = []
    for subj in ("071309_w_21", "072414_m_23"):
        (root / "video" / subj).mkdir(parents=True)
        for k, cls in enumerate(("BL1", "PA1", "PA4")):
            name = f"{subj}-{cls}-{k:03d}"
            rows.append({"subject_id": "1", "subject_name": subj, "class_id": str(k), "class_name": cls,
                         "sample_id": str(k), "sample_name": name})
            w = cv2.VideoWriter(str(root / "video" / subj / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                                (32, 24))
            for t in range(6):
                w.write(np.full((24, 32, 3), 40 * t, np.uint8))
            w.release()
    pd.DataFrame(rows).to_csv(root / "samples.csv", sep="\t", index=False)


def test_biovid_loader(tmp_path):
    _biovid_fixture(tmp_path)
    df = C.load_biovid(tmp_path)
    assert list(df["class_name"]) == ["BL1", "PA4", "BL1", "PA4"] and list(df["label"]) == [0, 1, 0, 1]
    frames = C.biovid_frames(df["path"][0], every=2)
    assert frames.shape == (3, 24, 32, 3) and frames.dtype == np.uint8
    assert len(C.load_biovid(tmp_path, classes=C.BIOVID_CLASSES)) == 6
    with pytest.raises(ValueError, match="unknown BioVid classes"):
        C.load_biovid(tmp_path, classes=("PA9",))
    next(iter((tmp_path / "video").glob("*/*PA4*.mp4"))).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        C.load_biovid(tmp_path)
    (tmp_path / "samples.csv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        C.load_biovid(tmp_path, check_files=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.load_biovid(tmp_path / "nowhere")


def test_unbc_loader(tmp_path):
    from PIL import Image

    for seq, values in (("ll042t1aaaff", (0.0, 3.0)), ("ll042t2aaaff", (0.0,))):
        img_dir = tmp_path / "Images" / "042-ll042" / seq
        lab_dir = tmp_path / "Frame_Labels" / "PSPI" / "042-ll042" / seq
        img_dir.mkdir(parents=True)
        lab_dir.mkdir(parents=True)
        for k, v in enumerate(values):
            stem = f"{seq}{k + 1:03d}"
            Image.fromarray(np.full((20, 16), 100, np.uint8)).save(img_dir / f"{stem}.png")
            (lab_dir / f"{stem}_facs.txt").write_text(f"   {v:.7e}\n")
    df = C.load_unbc(tmp_path)
    assert list(df["pspi"]) == [0.0, 3.0, 0.0] and list(df["label"]) == [0, 1, 0]
    assert C.unbc_image(df["path"][0]).shape == (20, 16, 3)
    bad = tmp_path / "Frame_Labels" / "PSPI" / "042-ll042" / "ll042t2aaaff" / "ll042t2aaaff001_facs.txt"
    bad.write_text("pain")
    with pytest.raises(ValueError, match="one PSPI value"):
        C.load_unbc(tmp_path)
    bad.unlink()
    with pytest.raises(FileNotFoundError, match="no PSPI label"):
        C.load_unbc(tmp_path)
    with pytest.raises(FileNotFoundError, match="no UNBC-McMaster folder|not exist|FACELAB"):
        C.load_unbc(tmp_path / "nope")


def test_corpus_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FACELAB_UNBC", str(tmp_path))
    assert C.corpus_root("unbc") == tmp_path
    monkeypatch.delenv("FACELAB_BIOVID", raising=False)
    assert C.corpus_root("biovid") is None
    with pytest.raises(ValueError, match="unknown corpus"):
        C.corpus_root("affectnet")


def test_finetune_head_only_keeps_features():
    x, y = _tiny_data()
    clf, _ = M.train_classifier(x, y, 2, epochs=1, c=4)
    m, _ = M.finetune(clf, x, 1 - y, epochs=2, train="head", lr=1e-2)
    torch.testing.assert_close(m.features[0][0].weight, clf.features[0][0].weight)
    torch.testing.assert_close(m.features[0][1].running_mean, clf.features[0][1].running_mean)
    assert not torch.equal(m.head.weight, clf.head.weight)
    with pytest.raises(ValueError, match="'all' or 'head'"):
        M.finetune(clf, x, y, train="bn")


def test_shared_loop_early_stops_after_patience_and_keeps_the_best_state():
    """train_classifier, finetune and shot_im share one epoch loop (dsfda._fit): with a zero learning rate the
    validation loss never improves after epoch 1, so training stops after 1 + patience epochs; the kept state is
    the (unchanged) model."""
    x, y = _tiny_data()
    clf, log = M.train_classifier(x, y, 2, epochs=3, c=4)
    assert len(log["loss"]) == 3 and all(np.isfinite(log["loss"]))
    m, flog = M.finetune(clf, x, y, epochs=10, lr=0.0, val=(x[:8], y[:8]), patience=2, train="head")
    assert flog["epochs_run"] == 3 and flog["best_epoch"] == 1 and len(flog["val_ce"]) == 3
    for k, v in clf.state_dict().items():
        torch.testing.assert_close(m.state_dict()[k], v)
    m, flog = M.finetune(clf, x, y, epochs=2, lr=0.0)                     # no validation: every epoch runs
    assert flog == {"val_ce": [], "epochs_run": 2, "best_epoch": 2, "stopped_early": False}


def _pipeline(**kw):
    x, y = _tiny_data()
    clf, _ = M.train_classifier(x, y, 2, epochs=2, c=4, **kw)
    arch = dict(c=4, hidden=16, nz=2, n_res=1, n_down=2)
    G, _, log = M.train_generator(x[:8], torch.arange(8) % 2, 2, x, y, clf, steps=4, batch=4, arch=arch,
                                  log_every=2, pairs=(torch.arange(24).roll(1), x.flip(0)), **kw)
    val = np.zeros(8, bool)
    val[6:] = True
    res = M.adapt_dsfda(clf, G, x[:8], val, x, y, per_face=2, epochs=3, patience=1, **kw)
    shot = M.shot_im(clf, x[:8], epochs=2, **kw)
    bn = M.bn_adapt(clf, x[:8] + 0.1, **kw)
    ft, _ = M.finetune(clf, x, y, epochs=2, **kw)
    tensors = [p for m in (clf, G, res.model, shot, bn, ft) for p in m.state_dict().values()]
    return tensors + [res.generated, res.labels, M.predict(res.model, x, **kw)], log


def test_explicit_cpu_device_gives_the_same_results_as_the_default():
    a, log_a = _pipeline()
    b, log_b = _pipeline(device="cpu")
    assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))
    assert {k: v for k, v in log_a.items() if k != "seconds"} == {k: v for k, v in log_b.items() if k != "seconds"}
    assert log_a["steps_run"] == 4 and not log_a["stopped_early"]
    assert all(t.device.type == "cpu" for t in a)


def test_max_seconds_stops_the_generator_and_the_classifier_early():
    x, y = _tiny_data()
    clf, log_c = M.train_classifier(x, y, 2, epochs=50, c=4, max_seconds=0.0)
    assert log_c["stopped_early"] and log_c["epochs_run"] == 1 and len(log_c["loss"]) == 1
    arch = dict(c=4, hidden=16, nz=2, n_res=1, n_down=2)
    _, _, log = M.train_generator(x[:8], torch.arange(8) % 2, 2, x, y, clf, steps=500, batch=4, arch=arch,
                                  log_every=1, max_seconds=0.0)
    assert log["stopped_early"] and log["steps_run"] == 1 and log["step"] == [1]
    _, _, full = M.train_generator(x[:8], torch.arange(8) % 2, 2, x, y, clf, steps=3, batch=4, arch=arch,
                                   log_every=1, max_seconds=1e6)
    assert not full["stopped_early"] and full["steps_run"] == 3
