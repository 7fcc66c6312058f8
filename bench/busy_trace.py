#!/usr/bin/env python3
"""A busy endpoint's 3 hours as a canonical trace (arrival_s,service_s), for what an SLO re-tune
costs at that size: Poisson arrivals whose rate swings 50-250 requests/s (150 + 100 sin), service
times lognormal around 0.6 s. About 1.85 million requests; seeded, so every run writes the same.

    python3 bench/busy_trace.py > busy.csv          # the whole 3 hours
    python3 bench/busy_trace.py --last 250000 > t.csv  # only its last requests, rebased to 0
"""
import argparse
import math
import random
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--hours", type=float, default=3.0)
ap.add_argument("--last", type=int, default=0, help="keep only the last N requests")
a = ap.parse_args()

rng = random.Random(7)
t, rows = 0.0, []
while True:
    t += rng.expovariate(150 + 100 * math.sin(t / 3600 * math.pi))
    if t >= a.hours * 3600:
        break
    rows.append((t, rng.lognormvariate(-0.5, 0.6)))
if a.last:
    rows = rows[-a.last:]
t0 = rows[0][0] if a.last else 0.0
out = sys.stdout
out.write("arrival_s,service_s\n")
for at, s in rows:
    out.write(f"{at - t0:.4f},{s:.4f}\n")
