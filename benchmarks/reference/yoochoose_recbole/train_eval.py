"""Train one of RecBole 1.2.1's session models with a plain loop on the exported split.

    python train_eval.py MODEL select|final [EPOCHS]

``select`` trains on the earliest 90% of training sessions and keeps the epoch with the best
HR@20 on the latest 10% (patience ``PAT``); ``final`` trains on every training row for EPOCHS
epochs. Either way the test rows are scored once at the end. Examples are the training rows
with a non-empty history (at most 10 items, as fitrec's model sees). Environment: ``SEED``,
``LR`` (0.001), ``L2`` (1e-5), ``SCHED`` (``step3``: x0.1 every 3 epochs as in the SR-GNN
paper; ``none``: constant), ``PAT`` (2), ``NT`` (torch threads, 1), ``OUT_DIR`` (here).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import encode, full_prefixes, hits_and_reciprocal_ranks, load, report, split_valid
from recbole.model.sequential_recommender import NARM, SRGNN, STAMP, GRU4Rec

MODEL, PHASE = sys.argv[1], sys.argv[2]
EPOCHS = int(sys.argv[3]) if len(sys.argv) > 3 else 12
SEED = int(os.environ.get("SEED", 2019))
LR, BATCH, L2 = float(os.environ.get("LR", 0.001)), 100, float(os.environ.get("L2", 1e-5))
SCHED = os.environ.get("SCHED", "step3")
PATIENCE = int(os.environ.get("PAT", 2))
OUT_DIR = Path(os.environ.get("OUT_DIR", Path(__file__).parent))
torch.set_num_threads(int(os.environ.get("NT", 1)))
torch.manual_seed(SEED)
np.random.seed(SEED)

train, test, items, index = load()


class Catalogue:
    """What RecBole's models ask of a dataset: the number of item ids (padding included)."""

    def num(self, field):
        return len(items) + 1


config = {
    "USER_ID_FIELD": "session_id",
    "ITEM_ID_FIELD": "item_id",
    "LIST_SUFFIX": "_list",
    "ITEM_LIST_LENGTH_FIELD": "item_length",
    "NEG_PREFIX": "neg_",
    "MAX_ITEM_LIST_LENGTH": 10,
    "device": torch.device("cpu"),
    "loss_type": "CE",
}
HYPER = {  # the papers' sizes
    "SRGNN": {"embedding_size": 100, "step": 1},
    "NARM": {"embedding_size": 50, "hidden_size": 100, "n_layers": 1, "dropout_probs": [0.25, 0.5]},
    "STAMP": {"embedding_size": 100},
    "GRU4Rec": {"embedding_size": 100, "hidden_size": 100, "num_layers": 1, "dropout_prob": 0.25},
}[MODEL]
config.update(HYPER)
model = {"SRGNN": SRGNN, "NARM": NARM, "STAMP": STAMP, "GRU4Rec": GRU4Rec}[MODEL](
    config, Catalogue()
)


def examples(rows):
    rows = rows[rows.history.map(len) > 0]
    return encode(list(rows.history), rows.item_id.tolist(), index)


def interaction(x, lengths, y=None):
    fields = {"item_id_list": x, "item_length": lengths}
    if y is not None:
        fields["item_id"] = y
    return fields  # RecBole's models only index the interaction by field name


@torch.no_grad()
def evaluate(x, lengths, y, batch=500):
    model.eval()
    hits, rrs = [], []
    for i in range(0, len(x), batch):
        lb = lengths[i : i + batch]
        scores = model.full_sort_predict(interaction(x[i : i + batch, : int(lb.max())], lb))
        h, r = hits_and_reciprocal_ranks(scores, y[i : i + batch])
        hits.append(h)
        rrs.append(r)
    return report(np.concatenate(hits), np.concatenate(rrs))


if PHASE == "select":
    fit_part, valid = split_valid(train)
    xt, lt, yt = examples(fit_part)
    xv, lv, yv = examples(valid)
else:
    (xt, lt, yt), xv = examples(train), None
x_test, l_test, y_test = encode(list(test.history), test.item_id.tolist(), index)
prefixes, gaps = full_prefixes(test)
x_full, l_full, y_full = encode(prefixes, test.item_id.tolist(), index)

optimiser = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=L2)
schedule = torch.optim.lr_scheduler.StepLR(
    optimiser, step_size=3 if SCHED == "step3" else 10**9, gamma=0.1
)
log = {
    "model": MODEL,
    "phase": PHASE,
    "n_train": len(xt),
    "n_valid": len(xv) if xv is not None else 0,
    "hp": HYPER,
    "lr": LR,
    "batch": BATCH,
    "l2": L2,
    "sched": SCHED,
    "seed": SEED,
    "epochs": [],
}
best, best_state, bad, start = None, None, 0, time.time()
for epoch in range(1, EPOCHS + 1):
    model.train()
    order, total, epoch_start = torch.randperm(len(xt)), 0.0, time.time()
    for i in range(0, len(xt), BATCH):
        idx = order[i : i + BATCH]
        lb = lt[idx]
        loss = model.calculate_loss(interaction(xt[idx][:, : int(lb.max())], lb, yt[idx]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        total += loss.item() * len(idx)
    schedule.step()
    entry = {
        "epoch": epoch,
        "loss": round(total / len(xt), 4),
        "sec": round(time.time() - epoch_start, 1),
    }
    if xv is not None:
        entry["valid"] = evaluate(xv, lv, yv)
        key = (entry["valid"]["HR20"], entry["valid"]["MRR20"])
        if best is None or key > best[0]:
            best, best_state, bad = (key, epoch), copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
    log["epochs"].append(entry)
    print(json.dumps(entry), flush=True)
    if xv is not None and bad >= PATIENCE:
        break
log["train_sec"] = round(time.time() - start, 1)
if best_state is not None:
    model.load_state_dict(best_state)
    log["best_epoch"] = best[1]
log["test_history"] = evaluate(x_test, l_test, y_test)
log["test_full_prefix"] = evaluate(x_full, l_full, y_full, batch=200)
log["full_prefix_rows_with_gaps"] = gaps
print(json.dumps({k: v for k, v in log.items() if k != "epochs"}), flush=True)
suffix = (f"_s{SEED}" if SEED != 2019 else "") + (f"_l2{L2:g}" if L2 != 1e-5 else "")
(OUT_DIR / f"result_{MODEL}_{PHASE}_{SCHED}{suffix}.json").write_text(json.dumps(log, indent=1))
