"""Prints the comparison table from run.sh's result lines.

Each input line: FS N SIZE SYSTEM WORKLOAD OPS SECONDS CAPPED. Medians over rounds of
µs per operation; ratios to the floor (the bare syscalls) and fscache's speed-up over
each peer, all from the same run.
"""
import statistics
import sys
from collections import defaultdict

NAMES = {
    "W1": "set new", "W2": "get hit", "W3": "get miss", "W4": "overwrite",
    "W5": "churn (thr N/10)", "W6": "delete",
}
ORDER = ["floor", "fscache", "cacache", "cachelib0", "cachelib", "diskcache"]

runs = defaultdict(list)
capped = defaultdict(bool)
for line in open(sys.argv[1]):
    fs, n, size, system, w, ops, secs, cap = line.split()
    ops, secs = int(ops), float(secs)
    if ops == 0:
        continue
    key = (fs, int(n), int(size), w, system)
    runs[key].append(secs / ops * 1e6)
    capped[key] |= cap == "1"

med = {k: statistics.median(v) for k, v in runs.items()}
groups = sorted({k[:4] for k in med}, key=lambda g: (g[0], g[1], g[2], g[3]))
print(f"{'fs':6} {'N':>7} {'size':>6} {'workload':17} {'system':10} {'µs/op':>9} {'ops/s':>9} {'×floor':>7} {'fscache ×faster':>15}")
for g in groups:
    floor = med.get(g + ("floor",))
    ours = med.get(g + ("fscache",))
    for system in ORDER:
        k = g + (system,)
        if k not in med:
            continue
        us = med[k]
        mark = "*" if capped[k] else " "
        vs_floor = f"{us / floor:6.2f}×" if floor else "      -"
        faster = f"{us / ours:14.2f}×" if ours and system not in ("fscache", "floor") else " " * 15
        print(f"{g[0]:6} {g[1]:>7} {g[2]:>6} {NAMES[g[3]]:17} {system:10} {us:8.2f}{mark} {1e6 / us:9.0f} {vs_floor} {faster}")
    if g[3] == "W5" and ours and (g[:3] + ("W1", "fscache")) in med:
        print(f"{'':6} {'':>7} {'':>6} {'':17} fscache churn per insert = {ours / med[g[:3] + ('W1', 'fscache')]:.2f}× its own set of a new key")
    print()
print("* = capped: stopped after the time cap; µs/op is over the operations done.")
print("×floor: µs/op over the bare-syscall floor's. fscache ×faster: the peer's µs/op over fscache's.")
