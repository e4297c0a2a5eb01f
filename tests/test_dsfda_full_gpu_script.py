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
