"""scripts/ldm_attention_gpu.py: the token states prepared on the CPU stand in for the real MiniLM encoder."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ldm_attention_gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("ldm_attention_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ldm_attention_gpu"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_prepared_token_states_match_the_real_encoder_and_train_refuses_a_mismatch(tmp_path):
    pytest.importorskip("sentence_transformers")
    from facelab.diffusion.model import TOKEN_LENGTH, MiniLMTokenEncoder

    mod = _module()
    info = mod.prepare(tmp_path / "text.safetensors", n_identities=8, per_identity=2)
    assert info["prompts"] >= 2 and info["max_abs_rounding"] < 5e-3
    enc = mod.CachedTokenEncoder(tmp_path / "text.safetensors")
    real = MiniLMTokenEncoder()
    prompts = enc.meta["prompts"]
    a, b = enc(prompts), real(prompts)
    assert a.shape == b.shape == (len(prompts), TOKEN_LENGTH, 384)
    assert (a - b).abs().max() < 5e-3                 # float16 rounding only
    assert torch.equal(a == 0, b.abs() < 1e-20)       # padding stays exact zeros
    for p in prompts[:5] + ["lipstick", "red lipstick", "eyeshadow"]:
        assert enc.tokenizer.tokenize(p) == real.tokenizer.tokenize(p)
    with pytest.raises(KeyError, match="prepared token file"):
        enc(["a face of a person with plaid lipstick"])
    with pytest.raises(KeyError, match="was not tokenized"):
        enc.tokenizer.tokenize("plaid")
    with pytest.raises(ValueError, match="differs from the prepared file"):
        mod.train(tmp_path / "text.safetensors", tmp_path / "out", n_identities=9, per_identity=2, minutes=0.01)


def test_attention_training_record_reads_every_run(tmp_path):
    import json

    from facelab.studies import privacy_diffaim as study

    rec = study.attention_training_record()
    # the first row is the base UNet (trained without the attention loss; the records called it "committed" until
    # 2026-12-05); the book's UNet since then is G, the distilled run with attention loss 0.15
    assert rec.index[0] == "base" and len(rec) >= 2 and "committed" not in " ".join(rec.index)
    assert "face_ldm_quick_base" in rec.loc["base", "training"]
    g_row = rec.loc["CPU distill eps x20, +52 min, loss 0.15"]
    assert g_row["attention loss"] == 0.15 and "the book's UNet (data/models/face_ldm_quick)" in g_row["training"]
    cols = ["lipstick mass", "eyeshadow mass", "red lipstick: MASQUE", "blue eyeshadow: MASQUE",
            "red lipstick: generated", "blue eyeshadow: generated"]
    assert ((rec[cols] >= 0) & (rec[cols] <= 1)).all().all()
    assert rec.loc["base", "lipstick mass"] < 0.5 and rec.loc["base", "attention loss"] == 0
    assert (rec["DDIM PSNR (dB)"] > 20).all()
    # the distilled fine-tunes say their teacher term; the runs without one leave the column empty
    assert rec.loc["base", "distillation"] == ""
    distilled = rec[rec["distillation"] != ""]
    assert len(distilled) >= 1 and distilled["distillation"].str.match(r"^(eps|guided) x \d").all()
    with pytest.raises(FileNotFoundError, match="runs.json"):
        study.attention_training_record(tmp_path)
    (tmp_path / "runs.json").write_text(json.dumps([{"name": "x", "description": "", "bench": "missing.json"}]))
    with pytest.raises(FileNotFoundError):
        study.attention_training_record(tmp_path)


def test_attention_record_says_how_each_edit_was_blended_and_where_the_red_went(tmp_path):
    from facelab.studies import privacy_diffaim as study

    rec = study.attention_training_record()
    assert rec.loc["base", "local blend"] == "word map > 0.2"
    assert set(rec["local blend"]) >= {"word map > 0.2", "region mask", "word map > 0.2, dilated 1"}
    assert study._blend_label({"blend_threshold": 0.3, "blend_dilation": 2}) == "word map > 0.3, dilated 2"
    assert study._blend_label({"blend_threshold": 0.2}) == "word map > 0.2"        # rows from before the knob
    # which of chapter 06's MASQUE configurations each row's edits used, and how many faces its gate was measured on
    assert rec.loc["base", "MASQUE setting"] == "until 2026-12-05" and rec.loc["base", "gate faces"] == 24
    now = rec[rec["MASQUE setting"] == "since 2026-12-05"]
    assert len(now) >= 2 and (now["gate faces"] == 64).all() and (now["local blend"] == "region mask").all()
    ec = study.edit_colour_record()
    assert list(ec.index.names) == ["UNet", "edit"] and "base" in ec.index.get_level_values(0)
    assert ((ec["adherence"] >= 0) & (ec["adherence"] <= 1)).all()
    assert ((ec["blend keeps (share of region)"] > 0) & (ec["blend keeps (share of region)"] <= 1)).all()
    # MASQUE's guided edit with the colour anchor: its red is the anchor's (held), and it reports the anchor
    g = ec.xs("region mask, MASQUE, colour anchor on", level="edit")
    assert g["anchor red"].notna().all() and ((g["edit red"] - g["anchor red"]).abs() < 0.05).all()
    # with the region mask only, the blend keeps the whole region
    only = ec.xs("region mask only (blend threshold 0)", level="edit")
    assert (only["blend keeps (share of region)"] == 1).all()
    with pytest.raises(FileNotFoundError, match="edit_colour.json"):
        study.edit_colour_record(tmp_path)


def test_guidance_record_pairs_each_guided_run_with_its_unguided_edit(tmp_path):
    from facelab.studies import privacy_diffaim as study

    g = study.guidance_record()
    assert list(g.index.names) == ["UNet", "prompt", "run"]
    assert {"base"} < set(g.index.get_level_values("UNet"))
    assert set(g.index.get_level_values("prompt")) == {"red lipstick", "blue eyeshadow"}
    for col in ("adherence", "success white box", "success black box"):
        assert ((g[col] >= g[f"{col} lo"] - 1e-9) & (g[col] <= g[f"{col} hi"] + 1e-9)).all()
    # every unguided edit is its own reference (McNemar p = 1), and each step count has one
    unguided = g[g.index.get_level_values("run").str.startswith("unguided edit")]
    assert (unguided["adherence vs unguided: p"] == 1).all()
    assert (unguided["success white box vs unguided: p"] == 1).all()
    assert set(unguided["DDIM steps"]) == set(g["DDIM steps"])
    # the two diagnostics at the step-1 setting are there for every UNet and prompt
    for unet, prompt in {(u, p) for u, p, _ in g.index}:
        runs = set(g.xs((unet, prompt)).index)
        assert any(r.endswith("chroma held per pixel") for r in runs)
        assert any(r.endswith("anchored to the unguided colour") for r in runs)
    assert ((g["colour spread"] > 0) & (g["high-frequency energy"] > 0)).all()
    assert (g["readings"].str.len() > 0).all()
    # the other UNets are compared with the base one face by face; the base one is not compared with itself
    assert g.loc["base", "adherence vs base: p"].isna().all()
    others = g[g.index.get_level_values("UNet") != "base"]
    assert len(others) and others["adherence vs base: p"].between(0, 1).all()
    # one MASQUE run per UNet and prompt is the step-1 setting; the variants are read off the run names
    assert (g.groupby(level=["UNet", "prompt"])["step-1 setting"].sum() == 1).all()
    assert set(g["variant"]) == {"unguided", "", "anchored to the unguided colour", "chroma held per pixel"}
    summary = study.guidance_summary(g)
    assert len(summary) == 4 and (summary["more often"] + summary["less often"] <= summary["settings"]).all()
    c = summary.loc[("base", "red lipstick")]
    row = g.loc[("base", "red lipstick", "MASQUE, 8 steps, 0.5 x 1")]
    assert c["MASQUE"] == row["adherence"] and c["p"] == row["adherence vs unguided: p"]
    at = study.guidance_runs_at_target(g, 0.8)
    for unet, r in at.items():
        for run in r["at target"]:
            assert (g.xs(unet).xs(run, level="run")["adherence"] >= 0.8).all()
    assert study.guidance_runs_at_target(g, 1.01)["base"]["at target"] == []
    with pytest.raises(FileNotFoundError, match="guidance.json"):
        study.guidance_record(tmp_path)


def test_the_records_localised_unet_is_the_one_its_benchmarks_measured():
    import json

    from facelab import checkpoints
    from facelab.studies import privacy_diffaim as study

    meta = checkpoints.verify(study.ATTENTION_RECORD / "unet_G" / "face_ldm_quick.safetensors")
    assert meta["settings"]["attention_loss"] == 0.15 and meta["settings"]["distill_weight"] == 20
    for name in ("guidance.json", "bench_distG.json", "bench_distG_blend0.json"):
        runs = json.loads((study.ATTENTION_RECORD / name).read_text())
        runs = runs if isinstance(runs, list) else [runs]
        assert meta["sha256"] in {r["sha256"] for r in runs}, name


def test_train_takes_an_architecture_and_refuses_a_wrong_one(tmp_path, monkeypatch, capsys):
    mod = _module()
    seen = {}
    monkeypatch.setattr(mod, "train", lambda text, out_dir, **kw: seen.update(kw) or {"steps": 0})
    args = ["train", "--text", "t.safetensors", "--out-dir", str(tmp_path / "o"), "--n-identities", "8",
            "--minutes", "0.1"]
    mod.main(args + ["--architecture", '{"attention_head_dim": [8, 8, 8]}'])
    assert seen["architecture"] == {"attention_head_dim": [8, 8, 8]}
    seen.clear()
    mod.main(args)
    assert "architecture" not in seen                       # the default UNet: no argument passed
    with pytest.raises(SystemExit):
        mod.main(args + ["--architecture", '{"sample_size": 8}'])
    assert "may change" in capsys.readouterr().err


def test_adoption_rule_judges_the_record_rows_by_the_bounds_fixed_before_measuring():
    import pandas as pd

    from facelab.studies import privacy_diffaim as study

    rec = study.attention_training_record()
    rule = study.adoption_rule(rec)
    assert rule.dtype == bool and list(rule.index) == list(rec.index)
    assert not rule.loc["base"]                              # no interval kept for the older rows: cannot meet it
    assert not rule.any()                                    # no UNet on record meets it (the eyeshadow interval)
    good = pd.DataFrame([{**{c: b + 0.05 for c, b in study.ADOPTION_RULE.items()}}], index=["x"])
    assert study.adoption_rule(good).tolist() == [True]
    for col, bound in study.ADOPTION_RULE.items():          # each bound decides on its own
        at = good.copy()
        at[col] = bound
        assert study.adoption_rule(at).tolist() == [col != "eyeshadow mass lo"]   # the interval must lie above 0.5
    with pytest.raises(ValueError, match="lacks the rule's columns"):
        study.adoption_rule(rec.drop(columns=["lipstick mass"]))
