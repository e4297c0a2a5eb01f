"""Issue 15's affect targets on the descriptor bank (chapter 07): fusion vs the best single modality on
ambivalence/hesitancy, frame selection on expressions, emotional-mimicry mean Pearson, ASR word error rate.

Everything is synthetic (facelab.affect's corpus). The bank is the committed quick checkpoint
(``data/models/affect_descriptors_quick``) or, with ``--profile full``, a 1,500-clip bank computed on first use.
Seeds: ``--seeds`` splits / folds / initialisations; every choice is made on validation clips.
Run: ``.venv/bin/python benchmarks/bench_affect.py [--profile quick] [--seeds 5] [--n-boot 1000]``. Prints the
targets table and writes ``_build/benchmarks/affect.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import pandas as pd

from _results import write_result
from facelab.affect import bank as affect_bank
from facelab.studies import expressions_faces_voices_words as study


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick", choices=("quick", "full"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    t0, load_before = time.time(), os.getloadavg()
    bank = affect_bank.load_bank(args.profile)
    seeds = tuple(range(args.seeds))
    res = study.run_study(bank, seeds=seeds, n_boot=args.n_boot)
    cv = study.crossval_fusion(bank, seeds=seeds, n_boot=args.n_boot)
    mim = study.mimicry_study(bank, seeds=seeds, n_boot=args.n_boot)
    wer = study.asr_error(bank, n_boot=args.n_boot)
    targets = study.targets_table(res, cv, wer, mim)
    summary = study.ablation_summary(res)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 90)
    print(f"affect targets, {args.profile} bank ({bank.n_clips} clips), seeds {list(seeds)}, "
          f"{time.time() - t0:.0f} s, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print(targets.to_string(index=False))
    print(summary.to_string(index=False))
    print(cv.drop(columns=["delta", "delta_lo", "delta_hi"]).to_string(index=False))
    print(mim.groupby("descriptor")["estimate"].agg(["mean", "min", "max"]).round(3).to_string())
    result = dict(topic="affect-targets", profile=args.profile, n_clips=bank.n_clips, seeds=list(seeds),
                  n_boot=args.n_boot, targets=targets.to_dict("records"), ablation=summary.to_dict("records"),
                  crossval_fusion=cv.to_dict("records"), mimicry=mim.to_dict("records"),
                  wer=dict(estimate=float(wer[0]), lo=float(wer[1]), hi=float(wer[2])),
                  seconds=round(time.time() - t0, 1),
                  machine=dict(platform=platform.platform(), cpu_count=os.cpu_count(),
                               loadavg_before=load_before, loadavg_after=os.getloadavg()))
    write_result("affect", result)
    return result


if __name__ == "__main__":
    main()
