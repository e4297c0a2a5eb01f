"""The stored record of benchmarks/bench_synth_identity_limits.py and its reader
(facelab.studies.synthetic_faces.identity_limits_record)."""

import json

import numpy as np
import pandas as pd
import pytest

from facelab.studies import synthetic_faces as study


def test_identity_limits_record_reads_the_committed_run():
    r = study.identity_limits_record()
    assert set(r) == {"real", "shapes", "pool", "caricature", "meta"}
    for key in ("real", "shapes", "pool", "caricature"):
        df = r[key]
        assert isinstance(df, pd.DataFrame) and len(df)
        assert ((df["far_lo"] <= df["far"] + 1e-12) & (df["far"] <= df["far_hi"] + 1e-12)).all(), key
        assert df["impostor_mean_distance"].between(0.3, 1.5).all(), key
    real = r["real"].iloc[0]
    assert real["identities"] > 20 and real["far"] < 0.05 and real["impostor_mean_distance"] > 0.8
    shapes = r["shapes"]
    assert set(shapes["texture"]) == {"face region", "photo frame"}
    assert len(shapes) == 16 and not shapes.duplicated(["texture", "faces", "shape"]).any()
    own = shapes.set_index(["texture", "faces", "shape"])["impostor_mean_distance"]
    for kind in ("face region", "photo frame"):
        # a real face's texture on its own shape is further from the others than on the mean shape, and real
        # faces are further apart than photofit composites of them
        assert own[(kind, "22 real faces", "own shape")] > own[(kind, "22 real faces", "mean shape")]
        assert own[(kind, "22 real faces", "mean shape")] > own[(kind, "60 photofit composites", "mean shape")]
    pool = r["pool"]
    assert sorted(pool["seed"].unique()) == [101, 202]
    assert len(pool) == 14 and (pool["identities"] == 100).all()
    full = pool[(pool["detail_faces"] == 22) & (pool["lfw_faces"] == 71)]
    assert len(full) == 2 and (full["far"] > 0.05).all()     # the target is missed on both seeds
    car = r["caricature"]
    chip = car[car["edit"] == "chip caricature"].set_index("factor")
    assert list(chip.index) == [1.0, 1.3, 1.6, 2.0]
    assert car.loc[car["edit"] == "greyscale", "factor"].isna().all()
    meta = r["meta"]
    assert "bench_synth_identity_limits.py" in meta["command"] and meta["machine"]["torch_threads"] == 2
    assert meta["seconds"]["total"] > 0 and meta["date"].startswith("20")


def test_identity_limits_record_accepts_a_file_path(tmp_path):
    record = study.IDENTITY_LIMITS_RECORD / "results.json"
    r = study.identity_limits_record(record)
    np.testing.assert_allclose(r["real"]["far"], study.identity_limits_record()["real"]["far"])


def _minimal() -> dict:
    rate = {"far": 0.1, "far_lo": 0.05, "far_hi": 0.2, "impostor_mean_distance": 0.7}
    return {"real": [{"faces": "real", "images": 3, "impostor_pairs": 3, **rate}],
            "shapes": [{"texture": "face region", "faces": "22 real faces", "shape": "mean shape", "images": 22,
                        "impostor_pairs": 231, **rate}],
            "pool": [{"seed": 1, "detail_faces": 22, "lfw_faces": 71, "identities": 100, "frr": 0.0, "frr_lo": 0.0,
                      "frr_hi": 0.0, **rate}],
            "caricature": [{"edit": "greyscale", "factor": None, "genuine_mean_distance": 0.2, "frr": 0.0,
                            **rate}]}


def test_identity_limits_record_errors_name_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.json.*bench_synth_identity_limits.py"):
        study.identity_limits_record(tmp_path)
    f = tmp_path / "results.json"
    f.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*bench_synth_identity_limits"):
        study.identity_limits_record(tmp_path)
    f.write_text("[]")
    with pytest.raises(ValueError, match="JSON object"):
        study.identity_limits_record(tmp_path)
    rec = _minimal()
    del rec["pool"]
    f.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"'pool' is missing.*bench_synth_identity_limits"):
        study.identity_limits_record(tmp_path)
    rec = _minimal()
    del rec["shapes"][0]["far_hi"]
    f.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"'shapes' rows lack \['far_hi'\]"):
        study.identity_limits_record(f)
    rec = _minimal()
    rec["caricature"][0]["far"] = 1.5
    f.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="outside"):
        study.identity_limits_record(f)


def test_identity_limits_record_minimal_tables(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({**_minimal(), "date": "2026-01-01T00:00:00Z"}))
    r = study.identity_limits_record(tmp_path)
    assert r["pool"].loc[0, "detail_faces"] == 22 and np.isnan(r["caricature"].loc[0, "factor"])
    assert r["meta"]["date"] == "2026-01-01T00:00:00Z" and r["meta"]["command"] is None
