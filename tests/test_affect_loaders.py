"""facelab.affect.loaders on tiny fixtures written in the Aff-Wild2 (ABAW), BAH and Hume-Vidmimic2 formats."""

import numpy as np
import pandas as pd
import pytest

from facelab.affect import loaders as L
from facelab.datasets import DatasetNotFoundError


def _affwild2(root):
    (root / "EXPR_Recognition_Set" / "Train_Set").mkdir(parents=True)
    (root / "VA_Estimation_Challenge" / "Train_Set").mkdir(parents=True)
    (root / "AU_Detection_Challenge" / "Train_Set").mkdir(parents=True)
    (root / "EXPR_Recognition_Set" / "Train_Set" / "12-24-1920x1080.txt").write_text(
        "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n0\n4\n4\n-1\n7\n")
    (root / "VA_Estimation_Challenge" / "Train_Set" / "12-24-1920x1080.txt").write_text(
        "valence,arousal\n0.1,0.2\n0.5,0.4\n-5,-5\n-0.3,0.0\n0.0,0.9\n")
    (root / "AU_Detection_Challenge" / "Train_Set" / "12-24-1920x1080.txt").write_text(
        "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26\n" + "0,0,0,1,0,0,1,0,0,0,1,0\n" * 4
        + "-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1\n")
    frames = root / "cropped_aligned" / "12-24-1920x1080"
    frames.mkdir(parents=True)
    for i in (1, 2):
        (frames / f"{i:05d}.jpg").write_bytes(b"jpg")


def test_affwild2(tmp_path):
    _affwild2(tmp_path)
    t = L.load_affwild2(tmp_path, "12-24-1920x1080")
    assert len(t) == 5
    assert [None if pd.isna(e) else e for e in t["expression"]] == ["neutral", "happiness", "happiness", None,
                                                                    "other"]
    assert list(t["expression_index"]) == [0, 4, 4, -1, 7]
    assert t["valence"].iloc[1] == 0.5 and np.isnan(t["valence"].iloc[2]) and np.isnan(t["arousal"].iloc[2])
    assert list(t["AU12"]) == [1, 1, 1, 1, -1] and "AU06" in t and "AU24" in t
    assert t["path"].iloc[0].endswith("00001.jpg") and pd.isna(t["path"].iloc[4])
    only = L.load_affwild2(tmp_path, "12-24-1920x1080", tasks=("va",))
    assert "expression" not in only and "valence" in only


def test_affwild2_lengths_and_bad_files(tmp_path):
    _affwild2(tmp_path)
    with pytest.raises(ValueError, match="labels and video differ in length: 5 label rows for 7 frames"):
        L.load_affwild2(tmp_path, "12-24-1920x1080", n_frames=7)
    padded = L.load_affwild2(tmp_path, "12-24-1920x1080", n_frames=7, policy="truncate")
    assert len(padded) == 7 and list(padded["expression_index"].iloc[5:]) == [-1, -1]
    assert pd.isna(padded["expression"].iloc[6]) and np.isnan(padded["valence"].iloc[6])
    assert len(L.load_affwild2(tmp_path, "12-24-1920x1080", n_frames=3, policy="truncate")) == 3
    bad = tmp_path / "bad.txt"
    bad.write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n0\n9\n")
    with pytest.raises(ValueError, match="outside -1..7"):
        L.read_abaw_annotation(bad)
    bad.write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\nhappy\n")
    with pytest.raises(ValueError, match="expected one class index"):
        L.read_abaw_annotation(bad)
    bad.write_text("joy,fun\n1,2\n")
    with pytest.raises(ValueError, match="unknown annotation header"):
        L.read_abaw_annotation(bad)
    bad.write_text("valence,arousal\n0.1\n")
    with pytest.raises(ValueError, match="has 1 fields"):
        L.read_abaw_annotation(bad)
    bad.write_text("")
    with pytest.raises(ValueError, match="empty annotation file"):
        L.read_abaw_annotation(bad)
    with pytest.raises(DatasetNotFoundError, match="does not download"):
        L.load_affwild2(tmp_path / "nowhere", "x")
    with pytest.raises(DatasetNotFoundError, match="no annotation file"):
        L.load_affwild2(tmp_path, "missing-video")


def test_bah(tmp_path):
    pd.DataFrame({"video_name": ["v1", "v2", "v3"], "label": [1, 0, 1]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"video_id": ["v1", "v1", "v3"], "start_s": [0.5, 3.0, 1.0],
                  "end_s": [1.5, 4.0, 2.0]}).to_csv(tmp_path / "segments.csv", index=False)
    (tmp_path / "transcripts").mkdir()
    (tmp_path / "transcripts" / "v1.txt").write_text("i guess it is fine\n")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v2.mp4").write_bytes(b"")
    t = L.load_bah(tmp_path)
    assert list(t["video_id"]) == ["v1", "v2", "v3"] and list(t["ah"]) == [1, 0, 1]
    assert t["segments"].iloc[0] == [(0.5, 1.5), (3.0, 4.0)] and t["segments"].iloc[1] == []
    assert t["transcript"].iloc[0] == "i guess it is fine" and pd.isna(t["transcript"].iloc[1])
    assert t["video"].iloc[1].endswith("v2.mp4") and pd.isna(t["video"].iloc[0])
    pd.DataFrame({"video_name": ["v1"], "label": ["maybe"]}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ValueError, match="must hold 0 or 1"):
        L.load_bah(tmp_path)
    pd.DataFrame({"clip": ["v1"], "label": [1]}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ValueError, match="no video id column"):
        L.load_bah(tmp_path)
    with pytest.raises(DatasetNotFoundError):
        L.load_bah(None)


def test_vidmimic(tmp_path):
    cols = list(L.VIDMIMIC_COLUMNS)
    t = pd.DataFrame([["00001", 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], ["00002", 0, 0, 1, 0, 0, 0]],
                     columns=["Filename"] + cols)
    t.to_csv(tmp_path / "train_split.csv", index=False)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "00002.mp4").write_bytes(b"")
    out = L.load_vidmimic(tmp_path)
    from facelab.metrics.abaw import MIMICRY_DIMENSIONS

    assert list(out.columns) == ["Filename", *MIMICRY_DIMENSIONS, "video"]
    assert out["empathic_pain"].iloc[0] == 0.4 and out["determination"].iloc[1] == 1.0
    assert pd.isna(out["video"].iloc[0]) and out["video"].iloc[1].endswith("00002.mp4")
    t.loc[0, "Joy"] = 1.5
    t.to_csv(tmp_path / "valid_split.csv", index=False)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        L.load_vidmimic(tmp_path, "valid")
    t.drop(columns=["Joy"]).to_csv(tmp_path / "valid_split.csv", index=False)
    with pytest.raises(ValueError, match="missing intensity columns"):
        L.load_vidmimic(tmp_path, "valid")
    with pytest.raises(DatasetNotFoundError, match="test_split.csv"):
        L.load_vidmimic(tmp_path, "test")
    with pytest.raises(ValueError, match="split must be"):
        L.load_vidmimic(tmp_path, "dev")
