"""One Python system, one directory, all workloads: prints `RESULT workload ops seconds capped`.

usage: peers.py SYSTEM DIR N SIZE CAP_SECONDS
SYSTEM: cachelib (FileSystemCache, its default threshold 500), cachelib0 (threshold 0),
diskcache (diskcache.Cache). Same workloads and values as the Rust driver.
"""
import math
import os
import random
import sys
import time


def value(size):
    v = b'{"user_id":4242,"csrf":"3q2-7wFh0v9sT4kYbL1xZ8mN5pR6cJ0eD2gA","cart":[["apple",3],["pear",1],["plum",12]],"pad":"'
    v += b"x" * max(0, size - len(v) - 2)
    return v + b'"}'


def open_system(system, path, threshold=None):
    if system.startswith("cachelib"):
        from cachelib import FileSystemCache
        if threshold is None:
            threshold = 500 if system == "cachelib" else 0
        return FileSystemCache(path, threshold=threshold, default_timeout=0)
    if system in ("diskcache", "diskcache-lru"):
        import diskcache
        policy = "least-recently-used" if system == "diskcache-lru" else "least-recently-stored"
        if threshold is None:
            return diskcache.Cache(path, eviction_policy=policy)
        # diskcache bounds bytes, not entries: the same bound in bytes.
        return diskcache.Cache(path, size_limit=threshold * VALUE_LEN, cull_limit=10,
                               eviction_policy=policy)
    raise SystemExit(f"unknown system {system}")


def run(name, n, cap, op):
    """Runs op(i) for i < n, stopping after cap seconds; returns how many ran."""
    start = time.perf_counter()
    done = 0
    while done < n:
        op(done)
        done += 1
        if done % 64 == 0 and time.perf_counter() - start > cap:
            break
    secs = time.perf_counter() - start
    print(f"RESULT {name} {done} {secs:.6f} {int(done < n)}", flush=True)
    return done


def report(lat, wanted):
    """Prints `LAT count mean p50 p99 p99.9 max capped` (µs) for latencies in ns."""
    lat.sort()
    pct = lambda p: lat[min(len(lat), max(1, math.ceil(len(lat) * p))) - 1] / 1e3
    mean = sum(lat) / len(lat) / 1e3
    print(f"LAT {len(lat)} {mean:.2f} {pct(0.5):.2f} {pct(0.99):.2f} {pct(0.999):.2f} {lat[-1] / 1e3:.2f} {int(len(lat) < wanted)}", flush=True)


def churn(argv):
    """churn SYSTEM DIR THRESHOLD INSERTS SIZE CAP: fills a cache bounded at THRESHOLD
    entries (not measured), then times each insert of a new key; prints
    `LAT inserts mean p50 p99 p99.9 max capped` in microseconds."""
    global VALUE_LEN
    system, path, threshold, inserts, size, cap = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4]), float(argv[5])
    val = value(size)
    VALUE_LEN = len(val)
    c = open_system(system, path, threshold=threshold)
    for i in range(threshold):
        c.set(f"fill:{i:08}", val)
    lat = []
    start = time.perf_counter()
    for i in range(inserts):
        t = time.perf_counter_ns()
        c.set(f"session:{i:08}", val)
        lat.append(time.perf_counter_ns() - t)
        if i % 64 == 0 and time.perf_counter() - start > cap:
            break
    report(lat, inserts)
    if hasattr(c, "close"):
        c.close()


def lru_get(argv):
    """lruget SYSTEM DIR N SIZE CAP: N entries, each read once in a shuffled order
    (the Rust driver's order), every read timed; prints LAT as churn does."""
    global VALUE_LEN
    system, path, n, size, cap = argv[0], argv[1], int(argv[2]), int(argv[3]), float(argv[4])
    val = value(size)
    VALUE_LEN = len(val)
    # Unbounded (diskcache's default 1 GB size_limit): a bound in bytes this close to
    # the data would count SQLite's own pages and cull entries of small runs.
    c = open_system(system, path)
    for i in range(n):
        c.set(f"session:{i:08}", val)
    order = list(range(n))
    x = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    for i in range(n - 1, 0, -1):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        j = x % (i + 1)
        order[i], order[j] = order[j], order[i]
    lat = []
    start = time.perf_counter()
    for done, i in enumerate(order):
        t = time.perf_counter_ns()
        assert c.get(f"session:{i:08}") is not None
        lat.append(time.perf_counter_ns() - t)
        if done % 64 == 0 and time.perf_counter() - start > cap:
            break
    report(lat, n)
    c.close()


def main():
    global VALUE_LEN
    if sys.argv[1] == "churn":
        return churn(sys.argv[2:])
    if sys.argv[1] == "lruget":
        return lru_get(sys.argv[2:])
    system, path, n, size, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    val = value(size)
    VALUE_LEN = len(val)
    keys = [f"session:{i:08}" for i in range(n)]
    order = list(range(n))
    random.Random(42).shuffle(order)
    c = open_system(system, os.path.join(path, "main"))
    # If W1 was capped, the later workloads use the keys it wrote.
    written = run("W1", n, cap, lambda i: c.set(keys[i], val))
    run("W2", n, cap, lambda i: c.get(keys[order[i] % written]))
    run("W3", n, cap, lambda i: c.get(f"absent:{i:08}"))
    run("W4", written, cap, lambda i: c.set(keys[i], val))
    run("W6", written, cap, lambda i: c.delete(keys[i]))
    if hasattr(c, "close"):
        c.close()
    c = open_system(system, os.path.join(path, "churn"), threshold=max(1, n // 10))
    run("W5", n, cap, lambda i: c.set(keys[i], val))
    if hasattr(c, "close"):
        c.close()


if __name__ == "__main__":
    main()
