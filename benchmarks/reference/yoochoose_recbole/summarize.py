"""Mean and spread over seeds of each final run's test HR@20 / MRR@20."""

import json
import os
from pathlib import Path

import numpy as np

OUT_DIR = Path(os.environ.get("OUT_DIR", Path(__file__).parent))
for model, sched in (("SRGNN", "step3"), ("NARM", "none"), ("GRU4Rec", "none"), ("STAMP", "none")):
    runs = [
        json.loads(f.read_text())
        for f in sorted(OUT_DIR.glob(f"result_{model}_final_{sched}*.json"))
    ]
    if not runs:
        continue
    for key in ("test_history", "test_full_prefix"):
        hr = [r[key]["HR20"] for r in runs]
        mrr = [r[key]["MRR20"] for r in runs]
        print(
            f"{model:8s} {key:17s} HR@20 {np.mean(hr):.2f} +- {np.std(hr):.2f}  "
            f"MRR@20 {np.mean(mrr):.2f} +- {np.std(mrr):.2f}  "
            f"({len(runs)} seeds, {len(runs[0]['epochs'])} epochs)"
        )
