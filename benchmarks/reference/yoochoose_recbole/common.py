"""Data loading, validation split and the HR@20 / MRR@20 protocol for the exported split.

Protocol (as ``fitrec benchmark sessions``): every test row, all catalogue items scored, top 20.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch

SPLIT_DIR = os.environ.get("SPLIT_DIR", "/tmp/ycsplit")


def load():
    train = pd.read_parquet(f"{SPLIT_DIR}/train.parquet")
    test = pd.read_parquet(f"{SPLIT_DIR}/test.parquet")
    items = pd.read_parquet(f"{SPLIT_DIR}/items.parquet").item_id.tolist()
    index = {item: k + 1 for k, item in enumerate(items)}  # 0 = padding
    return train, test, items, index


def split_valid(train, share=0.1):
    """The latest ``share`` of training sessions (by session start) for model selection."""
    start = train.groupby("session_id").ts.min().sort_values(kind="stable")
    late = set(start.index[-round(len(start) * share) :])
    is_late = train.session_id.isin(late)
    return train[~is_late], train[is_late]


def full_prefixes(test):
    """Every earlier step of each test row's session (history holds only the last 10)."""
    seen = {}
    rows = zip(test.session_id, test.step, test.item_id, test.history, strict=True)
    for session, step, item, history in rows:
        steps = seen.setdefault(session, {})
        steps[step] = item
        for j, x in enumerate(history):
            steps[step - len(history) + j] = x
    prefixes, gaps = [], 0
    for session, step in zip(test.session_id, test.step, strict=True):
        steps = seen[session]
        prefix = [steps[k] for k in range(step) if k in steps]
        gaps += len(prefix) != step
        prefixes.append(prefix)
    return prefixes, gaps


def encode(sequences, targets, index, max_len=None):
    coded = [[index[x] for x in s] for s in sequences]
    if max_len is not None:
        coded = [s[-max_len:] for s in coded]
    x = np.zeros((len(coded), max(len(s) for s in coded)), dtype=np.int64)
    for row, s in enumerate(coded):
        x[row, : len(s)] = s
    lengths = np.array([len(s) for s in coded], dtype=np.int64)
    y = np.array([index[t] for t in targets], dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(y)


def hits_and_reciprocal_ranks(scores, y, k=20):
    """Per row: 1 if the target is in the top k (padding column excluded), and 1/rank."""
    scores = scores.clone()
    scores[:, 0] = -float("inf")
    match = scores.topk(k, dim=1).indices.eq(y.view(-1, 1))
    hit = match.any(1)
    rank = match.float().argmax(1) + 1
    rr = torch.where(hit, 1.0 / rank.float(), torch.zeros_like(rank, dtype=torch.float))
    return hit.float().numpy(), rr.numpy()


def report(hits, rrs):
    return {
        "HR20": round(100 * float(np.mean(hits)), 2),
        "MRR20": round(100 * float(np.mean(rrs)), 2),
        "n": len(hits),
    }
