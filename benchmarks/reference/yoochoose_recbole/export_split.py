"""Write fitrec's YooChoose 100k time split as Parquet for the reference models.

Run with fitrec's own environment (the split is exactly what ``fitrec benchmark sessions``
trains and tests on):

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/reference/yoochoose_recbole/export_split.py \
        ../shared/data/yoochoose_rsc15/yoochoose-clicks-100k_train_full.txt /tmp/ycsplit
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import polars as pl

from pipeline.evaluation import public as benchmark
from pipeline.model.config import PAD, ModelConfig


def main(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        data = benchmark.prepare(
            benchmark.load("yoochoose", source),
            benchmark.SPECS["yoochoose"],
            Path(work),
            ModelConfig(),
        ).data
    without_padding = pl.col("history").list.eval(pl.element().filter(pl.element() != PAD))
    for name, frame in (("train", data.train), ("test", data.test)):
        frame.select("session_id", "step", "item_id", "ts", without_padding).write_parquet(
            out / f"{name}.parquet"
        )
    data.items.select("item_id").write_parquet(out / "items.parquet")
    print(f"train {data.train.height} test {data.test.height} items {data.items.height} -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
