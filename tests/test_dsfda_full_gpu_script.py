"""scripts/dsfda_full_gpu.py: the GPU runner's CPU dry run (tiny population and schedules) and the judge on its file."""

import importlib.util
import json
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "dsfda_full_gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("dsfda_full_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_run_writes_results_and_the_judge_reads_them(tmp_path):
    mod = _module()
    assert mod.main(["run", "--device", "cpu", "--tiny", "--out", str(tmp_path), "--minutes", "3",
                     "--threads", "1"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["stages"]["generator source stage"]["steps_run"] == 3
    assert res["stages"]["core methods"]["targets_run"] == [1000, 1001]
    assert set(res["pooled_accuracy"]) >= set(mod.CORE)
    assert all(not res["stages"][f"ablation {v}"].get("skipped") for v in mod.ABLATIONS)
    for f in ("summary.csv", "per_target.csv", "predictions.csv", "judge_input.npz", "source_classifier.pt"):
        assert (tmp_path / f).is_file()
    z = np.load(tmp_path / "judge_input.npz")
    assert z["gen_x"].dtype == np.uint8 and len(z["gen_x"]) == len(z["gen_y"]) == 2 * 6 * 4
    assert (z["ctrl_index"][:2] == [0, 1]).all()
    out = mod.judge(tmp_path / "judge_input.npz")
    assert out["n_generated"] == 48 and 0 <= out["identity_published"] <= 1
    assert out["thresholds"]["published"] == -0.6 and np.isfinite(out["thresholds"]["threshold"])


def test_full_profile_record_reads_the_stored_gpu_run(tmp_path):
    import pandas as pd
    import pytest

    from facelab.studies import neutral_video_adaptation as NV

    r = NV.full_profile_record()
    sched = r["schedule"]
    assert sched.loc["generator source stage", "planned"] == 7500
    assert 0 < sched.loc["generator source stage", "share run"] < 1 and sched.loc["generator source stage", "stopped early"]
    assert list(r["summary"].index) == ["source only", "BN statistics", "SHOT-IM", "DSFDA", "oracle (target labels)"]
    assert ((r["summary"]["accuracy"] >= 0) & (r["summary"]["accuracy"] <= 1)).all()
    assert isinstance(r["judges"], pd.DataFrame) and r["judges"].loc["dsfda", "n"] > 0
    assert r["skipped"] == ["ablation no dual consistency", "ablation no perceptual"]
    with pytest.raises(FileNotFoundError, match="results.json"):
        NV.full_profile_record(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"stages": {}}))
    with pytest.raises(ValueError, match="summary"):
        NV.full_profile_record(tmp_path)
