"""Cut a small YooChoose case and record session-rec's own VS-KNN, STAN, V-STAN and SR on it.

Run with a Python that has pandas, numpy (< 2.4: the reference calls ``np.in1d``) and pympler,
and a copy of session-rec's ``algorithms`` folder (see README.md)::

    python benchmarks/reference/session_rec/generate.py --session-rec /path/to/session-rec \\
        --clicks /work/shared/data/yoochoose_rsc15/yoochoose-clicks-100k_train_full.txt

Writes ``tests/fixtures/session_rec_case.tsv`` (the case) and
``tests/fixtures/session_rec_reference.json`` (top-20 items and scores per test step).
This script does not import fitrec: it is the reference side only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TRAIN_SESSIONS = 400
TEST_SESSIONS = 50
TOP = 20

CONFIGS = {
    "vsknn/default": ("algorithms.knn.vsknn", "VMContextKNN", {"k": 100}),
    "vsknn/other": (
        "algorithms.knn.vsknn",
        "VMContextKNN",
        {
            "k": 5,
            "sample_size": 12,
            "similarity": "cosine",
            "weighting": "quadratic",
            "weighting_score": "log",
            "idf_weighting": 2,
            "remind": False,
        },
    ),
    "stan/default": ("algorithms.knn.stan", "STAN", {"k": 100}),
    "stan/other": (
        "algorithms.knn.stan",
        "STAN",
        {"k": 5, "sample_size": 12, "lambda_spw": 2.5, "lambda_snh": 0.5, "lambda_inh": 4},
    ),
    "vstan/default": ("algorithms.knn.vstan", "VSKNN_STAN", {"k": 100}),
    "vstan/other": (
        "algorithms.knn.vstan",
        "VSKNN_STAN",
        {
            "k": 5,
            "sample_size": 12,
            "lambda_spw": 2.5,
            "lambda_snh": 0.5,
            "lambda_inh": 4,
            "lambda_ipw": 3,
            "lambda_idf": 1,
        },
    ),
    "sr/default": ("algorithms.baselines.sr", "SequentialRules", {}),
    "sr/other": (
        "algorithms.baselines.sr",
        "SequentialRules",
        {
            "steps": 3,
            "weighting": "quadratic",
            "pruning": 5,
            "last_in_session": 2,
            "session_weighting": "log",
        },
    ),
}


def cut_case(clicks: Path) -> pd.DataFrame:
    """The first sessions of the file; the latest-starting ones are the test sessions."""
    raw = pd.read_csv(clicks, sep="\t", dtype={"SessionId": str, "ItemId": str})
    first = raw["SessionId"].drop_duplicates().iloc[: TRAIN_SESSIONS + TEST_SESSIONS * 2]
    case = raw[raw["SessionId"].isin(set(first))].copy()
    starts = case.groupby("SessionId")["Time"].min().sort_values(kind="stable")
    test_ids = set(starts.index[-TEST_SESSIONS * 2 :])
    case["Split"] = np.where(case["SessionId"].isin(test_ids), "test", "train")
    train_items = set(case.loc[case["Split"] == "train", "ItemId"])
    # As session-rec does: test clicks on items unseen in training are dropped, then test
    # sessions of one click.
    case = case[(case["Split"] == "train") | case["ItemId"].isin(train_items)]
    sizes = case.groupby("SessionId")["ItemId"].transform("size")
    case = case[(case["Split"] == "train") | (sizes >= 2)]
    kept_test = case.loc[case["Split"] == "test", "SessionId"].drop_duplicates()
    case = case[(case["Split"] == "train") | case["SessionId"].isin(set(kept_test[:TEST_SESSIONS]))]
    return case.reset_index(drop=True)


def ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Sessions by id (as strings) and time, file order among ties: fitrec's encoding order."""
    frame = frame.assign(_row=np.arange(len(frame)))
    return frame.sort_values(["SessionId", "Time", "_row"], kind="stable").drop(columns="_row")


def checked(cls: type) -> type:
    """The reference class, flagging steps whose result depends on an arbitrary tie order."""

    class Checked(cls):  # type: ignore[misc, valid-type]
        ambiguous = False

        def most_recent_sessions(self, sessions, number):  # type: ignore[no-untyped-def]
            times = sorted((self.session_time[s] for s in sessions), reverse=True)
            if len(times) > number and times[number - 1] == times[number]:
                self.ambiguous = True
            return super().most_recent_sessions(sessions, number)

        def calc_similarity(self, *args):  # type: ignore[no-untyped-def]
            neighbours = super().calc_similarity(*args)
            sims = sorted((s for _, s in neighbours), reverse=True)
            if len(sims) > self.k and math.isclose(sims[self.k - 1], sims[self.k], rel_tol=1e-9):
                self.ambiguous = True
            return neighbours

    return Checked


def main() -> None:
    """Cut the case, run the reference, write the fixtures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--session-rec", type=Path, required=True)
    parser.add_argument("--clicks", type=Path, required=True)
    parser.add_argument("--commit", default="5dcd583cbd8d44703a5248b9a308945f24b91390")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    args = parser.parse_args()
    sys.path.insert(0, str(args.session_rec))
    import importlib

    case = cut_case(args.clicks)
    case.to_csv(args.out / "session_rec_case.tsv", sep="\t", index=False)
    train = ordered(case[case["Split"] == "train"]).drop(columns="Split")
    test = ordered(case[case["Split"] == "test"]).drop(columns="Split")
    items = np.array(sorted(train["ItemId"].unique()))
    queries = []
    for session, group in test.groupby("SessionId", sort=True):
        ids, times = group["ItemId"].tolist(), group["Time"].tolist()
        queries += [
            {"session": session, "history": ids[: i + 1], "time": times[i]}
            for i in range(len(ids) - 1)
        ]
    out: dict = {
        "session_rec_commit": args.commit,
        "case": "session_rec_case.tsv",
        "top": TOP,
        "queries": queries,
        "results": {},
    }
    for name, (module, cls_name, params) in CONFIGS.items():
        cls = checked(getattr(importlib.import_module(module), cls_name))
        model = cls(**params)
        model.fit(train.copy())
        steps = []
        for q in queries:
            model.ambiguous = False
            # The streaming interface: queries of a session come in order, one click more each.
            series = model.predict_next(q["session"], q["history"][-1], items, timestamp=q["time"])
            series = series[series.notna() & (series > 0)].sort_values(
                ascending=False, kind="stable"
            )
            top = series.iloc[:TOP]
            steps.append(
                {
                    "items": top.index.tolist(),
                    "scores": [float(f"{v:.15g}") for v in top.to_numpy()],
                    "ambiguous": bool(model.ambiguous),
                }
            )
        out["results"][name] = {"class": cls_name, "params": params, "steps": steps}
        print(name, sum(s["ambiguous"] for s in steps), "ambiguous of", len(steps))
    (args.out / "session_rec_reference.json").write_text(json.dumps(out, separators=(",", ":")))
    print(f"{len(queries)} queries, {train['SessionId'].nunique()} training sessions")


if __name__ == "__main__":
    main()
