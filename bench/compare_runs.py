#!/usr/bin/env python3
"""Two results folders of the same plan (e.g. `normlab run PLAN --stack off` and `--stack auto`)
compared cell by cell: the CSV rows in every column but the timings, and each cell folder's
metrics.csv (timings aside), norms.csv, outcomes.csv and model.safetensors byte for byte.

    python3 bench/compare_runs.py RESULTS_A RESULTS_B [PLAN]   (PLAN: demo)

Prints ALL EQUAL or the differences (exit status 1)."""
import csv, sys, os, hashlib
a, b = sys.argv[1], sys.argv[2]
PLAN = sys.argv[3] if len(sys.argv) > 3 else "demo"
TIME = {"train_seconds", "eval_seconds", "finished_at", "seconds", "images_per_s", "reg_seconds"}
def rows(p):
    with open(p) as f:
        r = list(csv.DictReader(f))
    return r
ra = {r["cell_id"]: r for r in rows(os.path.join(a, PLAN + ".csv"))}
rb = {r["cell_id"]: r for r in rows(os.path.join(b, PLAN + ".csv"))}
assert ra.keys() == rb.keys(), (ra.keys(), rb.keys())
bad = 0
for cid in sorted(ra):
    x, y = ra[cid], rb[cid]
    diff = [k for k in x if k not in TIME and x[k] != y[k]]
    print(cid, x["regularizer"], x["strength"], "clean", x["clean_acc"], "row:", "equal" if not diff else f"DIFFER {diff}")
    bad += bool(diff)
    for f in ["metrics.csv", "norms.csv", "outcomes.csv", "model.safetensors"]:
        pa, pb = (os.path.join(d, PLAN, "cells", cid, f) for d in (a, b))
        if not os.path.exists(pa) or not os.path.exists(pb):
            print("   ", f, "missing", os.path.exists(pa), os.path.exists(pb)); bad += 1; continue
        if f == "metrics.csv":
            ma, mb = rows(pa), rows(pb)
            d = [(i, k) for i, (u, v) in enumerate(zip(ma, mb)) for k in u if k not in TIME and u[k] != v[k]]
            ok = not d and len(ma) == len(mb)
        else:
            ok = hashlib.sha256(open(pa, "rb").read()).digest() == hashlib.sha256(open(pb, "rb").read()).digest()
        print("   ", f, "equal" if ok else "DIFFER"); bad += (not ok)
print("ALL EQUAL" if bad == 0 else f"{bad} differences")
sys.exit(0 if bad == 0 else 1)
