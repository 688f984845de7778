"""Random session dicts for tests/flask_interop.rs, and a check of fscache's
encodings of them by CPython's pickle and msgspec.

  values.py generate N   N lines of JSON: a random session dict pickled (protocol 5,
                         as cachelib) and msgpacked (msgspec, as Flask-Session), with
                         the tagged JSON fscache must read from each
  values.py check        reads such lines (fscache's pickle and msgpack of "tagged")
                         on stdin; exits 1 unless Python reads every one back equal
"""
import base64
import datetime
import json
import pickle
import random
import sys

import msgspec

TAGS = {" t", " b", " d", " u", " m", " di"}


def rfc3339(d):
    s = "%04d-%02d-%02dT%02d:%02d:%02d" % (d.year, d.month, d.day, d.hour, d.minute, d.second)
    if d.microsecond:
        s += ".%06d" % d.microsecond
    return s + ("Z" if d.tzinfo is not None else "")


def tagged(v):
    """fscache's tagged JSON of a Python value (Flask's tags; datetimes in RFC 3339)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, bytes):
        return {" b": base64.b64encode(v).decode()}
    if isinstance(v, tuple):
        return {" t": [tagged(x) for x in v]}
    if isinstance(v, list):
        return [tagged(x) for x in v]
    if isinstance(v, datetime.datetime):
        return {" d": rfc3339(v)}
    if isinstance(v, dict):
        out = {k: tagged(x) for k, x in v.items()}
        if len(out) == 1 and next(iter(out)) in TAGS:
            k = next(iter(out))
            return {" di": {k + "__": out[k]}}
        return out
    raise TypeError(type(v))


def as_msgpack(v):
    """What a value becomes through msgspec: tuples are arrays, naive datetimes strings."""
    if isinstance(v, (tuple, list)):
        return [as_msgpack(x) for x in v]
    if isinstance(v, dict):
        return {k: as_msgpack(x) for k, x in v.items()}
    if isinstance(v, datetime.datetime) and v.tzinfo is None:
        return v.isoformat()
    return v


def rand_value(r, depth):
    kinds = ["str", "int", "float", "bool", "none", "bytes", "dt"]
    if depth < 4:
        kinds += ["list", "tuple", "dict"] * 2
    k = r.choice(kinds)
    if k == "str":
        return r.choice(["", "ann", "ünïcødé ✓", "x" * r.randint(250, 300), " t", "a\x00b"])
    if k == "int":
        return r.choice([0, 1, 255, 256, 65535, 65536, -1, -129, 2**31, -2**31 - 1, 2**63 - 1, -2**63, 2**64 - 1, r.randint(-2**40, 2**40)])
    if k == "float":
        return r.choice([0.0, -0.0, 1.5, 1e300, -2.5e-300, r.random()])
    if k == "bool":
        return r.random() < 0.5
    if k == "none":
        return None
    if k == "bytes":
        return bytes(r.randrange(256) for _ in range(r.choice([0, 3, 300])))
    if k == "dt":
        d = datetime.datetime(r.randint(1, 9999), r.randint(1, 12), r.randint(1, 28), r.randint(0, 23), r.randint(0, 59), r.randint(0, 59), r.choice([0, r.randint(0, 999999)]))
        return d.replace(tzinfo=datetime.timezone.utc) if r.random() < 0.5 else d
    n = r.randint(0, 5)
    if k == "list":
        return [rand_value(r, depth + 1) for _ in range(n)]
    if k == "tuple":
        return tuple(rand_value(r, depth + 1) for _ in range(n))
    keys = ["user", "cart", " t", " b", "_permanent", "k%d" % r.randint(0, 9), "ü"]
    return {r.choice(keys): rand_value(r, depth + 1) for _ in range(n)}


def generate(n):
    r = random.Random(20261204)
    for _ in range(n):
        d = {"_permanent": True, "user": "ann"}
        for i in range(r.randint(0, 6)):
            d["k%d" % i] = rand_value(r, 1)
        if r.random() < 0.3:
            shared = [1, "shared"]
            d["a"] = shared
            d["b"] = shared  # a memo reference in the pickle
        p = pickle.dumps(d, protocol=5)
        m = msgspec.msgpack.encode(d)
        print(json.dumps({
            "pickle": p.hex(),
            "msgpack": m.hex(),
            "tagged": tagged(d),
            "tagged_msgpack": tagged(msgspec.msgpack.decode(m)),
        }))


def check():
    n = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        value = pickle.loads(bytes.fromhex(case["pickle"]))
        if tagged(value) != case["tagged"]:
            sys.exit(f"pickle.loads of fscache's pickle differs:\n{tagged(value)!r}\n{case['tagged']!r}")
        packed = msgspec.msgpack.decode(bytes.fromhex(case["msgpack"]))
        if tagged(packed) != tagged(as_msgpack(value)):
            sys.exit(f"msgspec of fscache's msgpack differs:\n{packed!r}\n{as_msgpack(value)!r}")
        n += 1
    print(f"{n} values equal")


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(int(sys.argv[2]))
    else:
        check()
