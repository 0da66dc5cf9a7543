"""Ingest throughput and memory at three scales, against a naive per-line ingest.

Each scale generates raw drops with the same daily volume (200,000 customers) and a growing
number of days, then ingests them in a fresh process whose peak RSS is read from the kernel
(``wait4``). Flat peak memory across scales shows that ingest streams day by day. The naive
path (``json.loads`` per line, checks in Python, pyarrow write) runs on the first day of the
smallest scale for comparison. Last line:

    ingest rows_per_s=<float> peak_rss_mb=<float> rows=<int> speedup=<float>

for the largest scale (rows = all raw rows ingested, about 7 million at the default scales,
nearly all of them events); ``speedup``: the smallest scale's rows/s over the naive path's.

    python benchmarks/ingest.py [--customers 200000] [--days 2,7,22] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time
from datetime import date
from pathlib import Path
from pipeline.config import Settings
from pipeline.data.curated import drops_up_to
from pipeline.data.ingest import ingest_drop

raw, var = Path(sys.argv[1]), Path(sys.argv[2])
settings = Settings(data_dir=var)
start = time.perf_counter()
totals = {"rows": 0, "events": 0, "curated": 0, "quarantined": 0, "duplicates": 0}
for day, folder in drops_up_to(raw, date.max):
    for table, c in ingest_drop(folder, day, settings).tables.items():
        totals["rows"] += c.raw
        totals["curated"] += c.curated
        totals["quarantined"] += c.quarantined
        totals["duplicates"] += c.exact_duplicates
        if table not in ("customers", "items"):
            totals["events"] += c.raw
totals["seconds"] = time.perf_counter() - start
print(json.dumps(totals))
"""

GENERATE = """
import sys
from pathlib import Path
from pipeline.data.generate import GeneratorConfig, write_drops
write_drops(GeneratorConfig(customers=int(sys.argv[2]), days=int(sys.argv[3]), seed=1,
                            dirty=0.001), Path(sys.argv[1]))
"""


def run_measured(code: str, *args: str) -> tuple[str, float]:
    """Run ``python -c code args`` and return (stdout, peak RSS in MB of that process)."""
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True
    )
    out = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {code[:40]}...")
    return out, usage.ru_maxrss / 1024


def naive_ingest(jsonl: Path, out: Path) -> tuple[int, float]:
    """The obvious hand-written path: parse and check each line in Python."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    allowed = {"view", "try_on", "add_to_cart", "remove_from_cart", "purchase"}
    start = time.perf_counter()
    good: dict[str, list] = {
        k: [] for k in ("event_id", "session_id", "customer_id", "event_type", "item_id", "ts")
    }
    bad, seen, rows = [], set(), 0
    from datetime import datetime

    with jsonl.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            rows += 1
            try:
                record = json.loads(line)
                ts = datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%SZ")
                ok = (
                    record["event_type"] in allowed
                    and record["item_id"]
                    and record["event_id"] not in seen
                )
            except (ValueError, KeyError, TypeError):
                ok, ts = False, None
            if ok:
                seen.add(record["event_id"])
                for key in good:
                    good[key].append(ts if key == "ts" else record.get(key))
            else:
                bad.append({"line": number, "raw": line})
    pq.write_table(pa.table(good), out / "naive.parquet")
    pq.write_table(pa.Table.from_pylist(bad or [{"line": 0, "raw": ""}]), out / "naive_bad.parquet")
    return rows, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--days", default="2,7,22", help="days per scale, comma-separated")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fitrec-bench-ingest-"))
    results = []
    speedup = float("nan")
    for days in (int(d) for d in args.days.split(",")):
        raw, var = workdir / f"raw-{days}", workdir / f"var-{days}"
        shutil.rmtree(raw, ignore_errors=True)
        shutil.rmtree(var, ignore_errors=True)
        t = time.perf_counter()
        run_measured(GENERATE, str(raw), str(args.customers), str(days))
        generated = time.perf_counter() - t
        out, rss = run_measured(CHILD, str(raw), str(var))
        totals = json.loads(out.strip().splitlines()[-1])
        totals.update(days=days, peak_rss_mb=rss, generate_s=generated)
        results.append(totals)
        seconds = totals["seconds"]
        print(
            f"scale days={days} rows={totals['rows']:,} events={totals['events']:,} "
            f"ingest_s={seconds:.1f} rows_per_s={totals['rows'] / seconds:,.0f} "
            f"events_per_s={totals['events'] / seconds:,.0f} peak_rss_mb={rss:.0f} "
            f"(generate {generated:.0f}s; quarantined={totals['quarantined']:,} "
            f"duplicates={totals['duplicates']:,})",
            flush=True,
        )
        if days == results[0]["days"]:
            first = sorted(raw.glob("????-??-??"))[0] / "session_events.jsonl"
            n, seconds = naive_ingest(first, workdir)
            print(
                f"naive per-line ingest on {n:,} events: rows_per_s={n / seconds:,.0f}", flush=True
            )
            speedup = totals["rows"] / totals["seconds"] / (n / seconds)
            print(f"speedup over naive: {speedup:.1f}x", flush=True)
        shutil.rmtree(raw, ignore_errors=True)
        shutil.rmtree(var, ignore_errors=True)
    rss = [r["peak_rss_mb"] for r in results]
    print(f"peak RSS across scales (MB): {', '.join(f'{v:.0f}' for v in rss)}")
    largest = results[-1]
    print(
        f"ingest rows_per_s={largest['rows'] / largest['seconds']:.1f} "
        f"peak_rss_mb={largest['peak_rss_mb']:.1f} rows={largest['rows']} speedup={speedup:.2f}"
    )


if __name__ == "__main__":
    main()
