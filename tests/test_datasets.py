"""Real-dataset loaders (facelab.datasets) on fixtures written by the synthetic exporters in the same formats."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from facelab import datasets as ds

S = 48


class StubWorld:
    """The FaceWorld.sample contract: each identity has its own colour, each image a little noise."""

    def __init__(self):
        self.calls = []

    def sample(self, n_identities=1, per_identity=1, identity_offset=0, identities=None, generator=None, **kw):
        self.calls.append(kw)
        ids = (np.asarray(identities) if identities is not None
               else np.repeat(np.arange(identity_offset, identity_offset + n_identities), per_identity))
        g = torch.Generator().manual_seed(int(ids.sum()) + len(self.calls))
        colour = torch.stack([torch.tensor([(k * 0.37) % 1, (k * 0.61) % 1, (k * 0.13) % 1]) for k in ids])
        images = (0.15 + 0.7 * colour.view(-1, 3, 1, 1) + 0.03 * torch.randn(len(ids), 3, S, S, generator=g))

        class Batch:
            pass

        b = Batch()
        b.images = images.clamp(0, 1)
        b.labels = pd.DataFrame({"identity": ids, "emotion": "neutral", "yaw": 0.0})
        return b


class StubVideo:
    def __init__(self, t=24, onset=5, apex=9, offset=13, emotion="happy", aus=("AU12", "AU06L")):
        g = torch.Generator().manual_seed(t + onset)
        self.frames = torch.linspace(0.1, 0.9, t).view(t, 1, 1, 1) * torch.ones(t, 3, S, S)
        self.frames = (self.frames + 0.01 * torch.randn(t, 3, S, S, generator=g)).clamp(0, 1)
        self.fps = 30
        self.events = pd.DataFrame({"kind": ["micro", "macro"], "emotion": [emotion, "sad"],
                                    "onset": [onset, 15], "apex": [apex, 18], "offset": [offset, 22],
                                    "aus": [{a: 0.3 for a in aus}, {"AU15": 0.8}]})


def test_lfw_people_and_pairs_round_trip(tmp_path):
    counts = [3, 1, 4, 2] * 5
    root = ds.export_lfw(StubWorld(), tmp_path, n_identities=20, per_identity=counts, n_folds=10, seed=3)
    people = ds.load_lfw_people(root)
    assert len(people) == sum(counts) and people.table["identity"].nunique() == 20
    assert people.table.groupby("person").size().sort_index().tolist() == \
        pd.Series(counts, index=[ds._synthetic_name(k) for k in range(20)]).sort_index().tolist()
    img, ident = people[0]
    assert img.shape == (3, S, S) and 0 <= float(img.min()) and float(img.max()) <= 1
    assert ident == people.table.loc[0, "identity"]
    labels = pd.read_csv(root / "labels.csv")
    assert len(labels) == sum(counts) and "yaw" in labels.columns
    assert len(ds.load_lfw_people(root, min_faces_per_person=3)) == 5 * (3 + 4)
    assert ds.load_lfw_people(root, size=(32, 24), grey=True).images([0, 1]).shape == (2, 1, 32, 24)

    pairs = ds.load_lfw_pairs(root)
    n_pairs = len(pairs) // 20
    assert pairs["fold"].nunique() == 10 and (pairs.groupby("fold").size() == 2 * n_pairs).all()
    assert (pairs.groupby("fold")["same"].sum() == n_pairs).all()
    same = pairs[pairs["same"]]
    assert (same["person1"] == same["person2"]).all() and (same["number1"] != same["number2"]).all()
    diff = pairs[~pairs["same"]]
    assert (diff["person1"] != diff["person2"]).all()
    fold_people = [set(pairs.loc[pairs["fold"] == f, ["person1", "person2"]].to_numpy().ravel()) for f in range(10)]
    assert all(not (fold_people[a] & fold_people[b]) for a in range(10) for b in range(a + 1, 10))
    # an image read back matches what the world rendered (up to JPEG)
    first = people.table.iloc[0]
    world_img = StubWorld().sample(identities=[0] * 3).images
    assert abs(float(people[0][0].mean() - world_img.mean())) < 0.03 and first["person"] == ds._synthetic_name(0)


def test_lfw_pairs_file_errors(tmp_path):
    root = ds.export_lfw(StubWorld(), tmp_path, n_identities=4, per_identity=2, n_folds=2)
    text = (root / "pairs.txt").read_text().splitlines()
    (root / "pairs.txt").write_text("\n".join(text[:-1]) + "\n")
    with pytest.raises(ValueError, match="header promises"):
        ds.load_lfw_pairs(root)
    (root / "pairs.txt").write_text("\n".join([text[0], *text[1:][::-1]]) + "\n")
    with pytest.raises(ValueError, match="matched"):
        ds.load_lfw_pairs(root)
    with pytest.raises(ValueError, match="person-disjoint"):
        ds.export_lfw(StubWorld(), tmp_path / "x", n_identities=5, per_identity=2, n_folds=10)


@pytest.mark.parametrize("loader, source", [
    (ds.load_lfw_people, "vis-www.cs.umass.edu"), (ds.load_orl, "cam-orl"), (ds.load_ar, "ARdatabase"),
    (ds.load_casme2, "casme.psych.ac.cn"), (ds.load_samm, "mmu.ac.uk"),
])
def test_missing_dataset_names_its_source(tmp_path, loader, source):
    with pytest.raises(ds.DatasetNotFoundError, match=source) as err:
        loader(tmp_path / "nowhere")
    assert "does not download" in str(err.value)
    with pytest.raises(ds.DatasetNotFoundError, match=source):
        loader(tmp_path)                                                  # exists, but holds nothing of it


def test_orl_layout(tmp_path):
    root = ds.export_orl(StubWorld(), tmp_path, n_subjects=3, per_subject=4)
    assert (root / "s3" / "4.pgm").is_file()
    orl = ds.load_orl(root)
    assert len(orl) == 12 and orl.table["subject"].tolist() == [1] * 4 + [2] * 4 + [3] * 4
    img, ident = orl[5]
    assert img.shape == (1, 112, 92) and ident == 1                       # ORL: 92 x 112 grey


def test_ar_codes(tmp_path):
    world = StubWorld()
    root = ds.export_ar(world, tmp_path, n_men=1, n_women=2)
    ar = ds.load_ar(root)
    assert len(ar) == 3 * 26 and set(ar.table["person"]) == {"M-001", "W-001", "W-002"}
    t = ar.table.set_index(["person", "image_number"])
    assert tuple(t.loc[("W-002", 8), ["session", "expression", "illumination", "occlusion"]]) == \
        (1, "neutral", "ambient", "sunglasses")
    assert tuple(t.loc[("M-001", 25), ["session", "illumination", "occlusion"]]) == (2, "left", "scarf")
    assert t.loc[("M-001", 2), "expression"] == "smile" and t.loc[("M-001", 17), "expression"] == "scream"
    assert ar[0][0].shape == (3, 165, 120)
    assert any(c.get("occlusion") == "scarf" for c in world.calls)       # the world rendered the occluders
    assert any(c.get("light_azimuth") == -60.0 for c in world.calls)
    assert len(ds.AR_CONDITIONS) == 26 and ds.AR_CONDITIONS[14] == (2, "neutral", "ambient", "none")
    (root / "M-001-27.bmp").write_bytes((root / "M-001-01.bmp").read_bytes())
    with pytest.raises(ValueError, match="outside 1-26"):
        ds.load_ar(root)


def test_casme_round_trip(tmp_path):
    videos = [StubVideo(), StubVideo(t=30, onset=2, apex=6, offset=10, emotion="disgusted", aus=["AU09", "AU04"])]
    sheet = ds.export_casme(videos, tmp_path, subjects=[1, 5])
    assert sheet.name == "CASME2-coding.csv" and (tmp_path / "sub05" / "EP02_01" / "img30.jpg").is_file()
    casme = ds.load_casme2(tmp_path)
    ep = casme.episodes
    assert len(ep) == 2                                                   # micro events only
    assert ep["subject"].tolist() == ["sub01", "sub05"]
    assert ep[["onset", "apex", "offset"]].to_numpy().tolist() == [[6, 10, 14], [3, 7, 11]]
    assert ep.loc[0, "aus"] == ["AU12", "AU06L"] and ep.loc[0, "action_units"] == "12+L6"
    assert ep["emotion_raw"].tolist() == ["happiness", "disgust"] and ep["emotion"].tolist() == ["happy", "disgusted"]
    assert ep["n_frames"].tolist() == [24, 30]
    frames, numbers = casme.frames(0)
    assert frames.shape == (9, 3, S, S) and numbers.tolist() == list(range(6, 15))
    assert torch.allclose(frames.mean((1, 2, 3)), videos[0].frames[5:14].mean((1, 2, 3)), atol=0.02)
    clip, row = casme[1]
    assert clip.shape[0] == 9 and row["episode"] == "EP02_01"


def test_casme_sheet_quirks(tmp_path):
    ds.export_casme([StubVideo()], tmp_path)
    sheet = pd.read_csv(tmp_path / "CASME2-coding.csv", dtype=str)
    sheet.loc[0, "ApexFrame"] = "/"                                       # CASME II's mark for an uncoded apex
    sheet.to_csv(tmp_path / "CASME2-coding.csv", index=False)
    assert np.isnan(ds.load_casme2(tmp_path).episodes.loc[0, "apex"])
    sheet.loc[0, "OffsetFrame"] = "2"
    sheet.to_csv(tmp_path / "CASME2-coding.csv", index=False)
    with pytest.raises(ValueError, match="offset < onset"):
        ds.load_casme2(tmp_path)


def test_samm_round_trip_with_title_rows(tmp_path):
    sheet = ds.export_samm([StubVideo(), StubVideo(emotion="contempt", aus=["AU12R", "AU14R"])], tmp_path,
                           subjects=[6, 7])
    assert (tmp_path / "006" / "006_1_1" / "006_00024.jpg").is_file()
    # the real SAMM sheet has title rows above the header
    body = sheet.read_text()
    sheet.write_text("SAMM micro-movement FACS codes,,,\nversion,2,,\n,,,\n" + body)
    samm = ds.load_samm(tmp_path)
    ep = samm.episodes
    assert ep["subject"].tolist() == ["006", "007"] and ep["episode"].tolist() == ["006_1_1", "007_1_2"]
    assert ep.loc[1, "aus"] == ["AU12R", "AU14R"] and ep.loc[1, "emotion"] == "contempt"
    frames, numbers = samm.frames(1, start=1, stop=3)
    assert frames.shape == (3, 3, S, S) and numbers.tolist() == [1, 2, 3]


def test_action_unit_codes():
    assert ds.parse_action_units("4+L10") == ["AU04", "AU10L"]
    assert ds.parse_action_units("R12A+25") == ["AU12R", "AU25"]
    assert ds.parse_action_units("?") == [] and ds.parse_action_units(np.nan) == []


@pytest.mark.skipif(importlib.util.find_spec("openpyxl") is None, reason="openpyxl not installed (CSV is used)")
def test_xlsx_sheet(tmp_path):
    sheet = ds.export_casme([StubVideo()], tmp_path, sheet_format="xlsx")
    assert sheet.suffix == ".xlsx"
    assert ds.load_casme2(tmp_path).episodes.loc[0, "onset"] == 6


def test_xlsx_without_openpyxl_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("openpyxl") is not None:
        pytest.skip("openpyxl is installed")
    with pytest.raises(ImportError, match="openpyxl"):
        ds.export_casme([StubVideo()], tmp_path, sheet_format="xlsx")
