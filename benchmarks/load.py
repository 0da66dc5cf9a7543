"""Load generators for the HTTP benchmarks: wrk (C, light on shared cores) with a Lua script
of page views, or locust (headless) when wrk is not installed; each returns requests,
failures, requests/s and the p50 and p99 latency in ms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WRK_SCRIPT = """
math.randomseed(7)
local items = {{{items}}}
local customers = {{{customers}}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local a = items[math.random(#items)]
  local b = items[math.random(#items)]
  local c = customers[math.random(#customers)]
  local body = '{{"customer_id":"' .. c .. '","session_items":["' .. a
    .. '","' .. b .. '"],"k":10}}'
  return wrk.format(nil, "/recommendations", nil, body)
end
"""

LOCUSTFILE = """
import random
from locust import FastHttpUser, task, constant
ITEMS = {items!r}
CUSTOMERS = {customers!r}
class Shopper(FastHttpUser):
    wait_time = constant(0)
    @task
    def page_view(self):
        self.client.post("/recommendations", json={{
            "customer_id": random.choice(CUSTOMERS),
            "session_items": random.sample(ITEMS, 2), "k": 10}})
"""


def _ms(text: str) -> float:
    """wrk's latency figures ("870.00us", "3.21ms", "1.02s") in milliseconds."""
    for unit, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fields: dict[str, float] = {"failures": 0.0}
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith(("50%", "99%")) and len(parts) == 2:
            fields[f"p{parts[0][:-1]}_ms"] = _ms(parts[1])
        elif line.startswith("Requests/sec:"):
            fields["rps"] = float(parts[1])
        elif "requests in" in line:
            fields["requests"] = float(parts[0])
        elif line.strip().startswith(("Non-2xx", "Socket errors")):
            fields["failures"] += sum(float(p.strip(",")) for p in parts if p.strip(",").isdigit())
    return fields


def run_locust(url: str, locustfile: Path, seconds: int, users: int) -> dict[str, float]:
    prefix = locustfile.parent / "stats"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(locustfile),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            url,
            "--csv",
            str(prefix),
            "--only-summary",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stats = (prefix.parent / "stats_stats.csv").read_text().splitlines()
    total = dict(zip(stats[0].split(","), stats[-1].split(","), strict=False))
    return {
        "requests": float(total["Request Count"]),
        "failures": float(total["Failure Count"]),
        "rps": float(total["Requests/s"]),
        "p50_ms": float(total["50%"]),
        "p99_ms": float(total["99%"]),
    }
