"""MMME-layout loader (frames + sheet + MNE recordings), SAMM-LV interval sheets, CASME II episodes -> intervals;
fixtures written here."""

import cv2
import mne
import numpy as np
import pandas as pd
import pytest

from facelab.micro.loaders import align_recordings, episodes_to_intervals, load_interval_sheet, load_mmme


def _raw(names, types, sfreq, seconds, seed=0):
    rng = np.random.default_rng(seed)
    info = mne.create_info(names, sfreq, types)
    return mne.io.RawArray(rng.normal(0, 1e-5, (len(names), int(sfreq * seconds))), info, verbose="error")


def _write_mmme(root, rows, recordings):
    for sub in {r["Subject"] for r in rows}:
        (root / sub / "physio").mkdir(parents=True, exist_ok=True)
    for r in rows:
        folder = root / r["Subject"] / r["Filename"]
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(0, 40):
            cv2.imwrite(str(folder / f"img{k:04d}.png"), np.full((16, 16, 3), k * 5, np.uint8))
    for sub, raws in recordings.items():
        for name, raw in raws.items():
            raw.save(root / sub / "physio" / name, overwrite=True, verbose="error")
    pd.DataFrame(rows).to_csv(root / "annotations.csv", index=False)


ROWS = [{"Subject": "sub01", "Trial": 1, "Filename": "trial01", "VideoStart": 2.0, "Onset": 5, "Apex": 8,
         "Offset": 12, "Type": "ME", "Emotion": "Happy"},
        {"Subject": "sub01", "Trial": 1, "Filename": "trial01", "VideoStart": 2.0, "Onset": 15, "Apex": 22,
         "Offset": 38, "Type": "MaE", "Emotion": "fearful"}]


def test_mmme_roundtrip_with_different_sampling_rates(tmp_path):
    # EEG at 500 Hz and peripheral at 250 Hz in separate files, lengths 10.0 s and 10.2 s
    eeg = _raw(["Fp1", "Fp2", "Cz"], "eeg", 500.0, 10.0)
    per = _raw(["ECG", "EDA"], ["ecg", "gsr"], 250.0, 10.2, seed=1)
    _write_mmme(tmp_path, ROWS, {"sub01": {"eeg_raw.fif": eeg, "periph_raw.fif": per}})
    ds = load_mmme(tmp_path, fps=30)
    assert len(ds) == 2 and ds.subjects == ["sub01"]
    assert ds.events["kind"].tolist() == ["micro", "macro"]
    assert ds.events["emotion"].tolist() == ["happy", "fearful"]
    raw = ds.raw("sub01", required=["Fp1", "ECG"])
    assert raw.info["sfreq"] == 500.0 and raw.ch_names == ["Fp1", "Fp2", "Cz", "ECG", "EDA"]
    assert raw.times[-1] == pytest.approx(10.0 - 1 / 500)
    ann = raw.annotations
    assert list(ann.description) == ["micro/happy", "macro/fearful"]
    np.testing.assert_allclose(ann.onset, [2.0 + 5 / 30, 2.0 + 15 / 30], atol=1e-3)  # MNE stores onsets at ~us
    frames = ds.frames(0)
    assert frames.shape == (8, 3, 16, 16) and frames.dtype == np.uint8
    with pytest.raises(ValueError, match="required channels"):
        ds.raw("sub01", required=["PPG"])


def test_mmme_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mmme(tmp_path / "nope")
    # annotation beyond the end of the recording
    rows = [dict(ROWS[0], VideoStart=9.9)]
    _write_mmme(tmp_path / "a", rows, {"sub01": {"x_raw.fif": _raw(["Cz"], "eeg", 100.0, 10.0)}})
    with pytest.raises(ValueError, match="outside"):
        load_mmme(tmp_path / "a").raw("sub01")
    # unknown type, offset before onset, apex outside the interval
    for bad, msg in ((dict(ROWS[0], Type="blink"), "Type"), (dict(ROWS[0], Offset=2), "offset < onset"),
                     (dict(ROWS[0], Apex=30), "apex outside")):
        root = tmp_path / f"b{msg[:3]}"
        _write_mmme(root, [bad], {"sub01": {"x_raw.fif": _raw(["Cz"], "eeg", 100.0, 10.0)}})
        with pytest.raises(ValueError, match=msg):
            load_mmme(root)
    # missing frame folder
    root = tmp_path / "c"
    _write_mmme(root, ROWS[:1], {"sub01": {"x_raw.fif": _raw(["Cz"], "eeg", 100.0, 10.0)}})
    pd.DataFrame([dict(ROWS[0], Filename="trial99")]).to_csv(root / "annotations.csv", index=False)
    with pytest.raises(FileNotFoundError, match="trial99"):
        load_mmme(root)
    # NaN samples in a recording are reported by channel
    nan = _raw(["Cz", "Pz"], "eeg", 100.0, 10.0)
    nan._data[1, 10:20] = np.nan
    root = tmp_path / "d"
    _write_mmme(root, ROWS[:1], {"sub01": {"x_raw.fif": nan}})
    with pytest.raises(ValueError, match="NaN.*Pz"):
        load_mmme(root).raw("sub01")


def test_align_recordings_rules():
    a = _raw(["Cz"], "eeg", 200.0, 10.0)
    b = _raw(["ECG"], "ecg", 100.0, 12.0)
    with pytest.raises(ValueError, match="differ by more"):
        align_recordings([a, b])
    with pytest.raises(ValueError, match="more than one recording"):
        align_recordings([a, a.copy()])
    merged = align_recordings([a, _raw(["ECG"], "ecg", 100.0, 10.5)])
    assert merged.info["sfreq"] == 200.0 and merged.n_times == a.n_times


def test_interval_sheet_and_episodes(tmp_path):
    sheet = tmp_path / "SAMM_LV.csv"
    sheet.write_text("SAMM long videos release\n\n"
                     "Subject,Filename,Inducement Code,Onset,Apex,Offset,Duration,Type,Action Units,Notes\n"
                     "6,006_1,1,100,110,150,51,Macro,4+7,\n"
                     "6,006_1,1,500,-1,560,61,Micro - 1/2,12,\n"
                     "7,007_2,2,30,40,55,26,Micro - 1/2,R14,\n")
    iv = load_interval_sheet(sheet)
    assert iv["kind"].tolist() == ["macro", "micro", "micro"]
    assert np.isnan(iv.loc[1, "apex"]) and iv.loc[0, "onset"] == 100
    bad = tmp_path / "bad.csv"
    bad.write_text("Subject,Filename,Onset,Apex,Offset\n1,v,10,12,8\n")
    with pytest.raises(ValueError, match="fps"):
        load_interval_sheet(bad)
    with pytest.raises(ValueError, match="offset < onset"):
        load_interval_sheet(bad, fps=30)
    ep = pd.DataFrame({"subject": ["sub01", "sub02"], "episode": ["EP01", "EP02"], "onset": [10, 100],
                       "apex": [20, 150], "offset": [60, 300]})
    iv2 = episodes_to_intervals(ep, fps=200)  # 51 frames = 0.255 s -> micro; 201 frames = 1.005 s -> macro
    assert iv2["kind"].tolist() == ["micro", "macro"] and iv2["video"].tolist() == ["sub01/EP01", "sub02/EP02"]
