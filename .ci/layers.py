#!/usr/bin/env python3
"""Checks that data flows one way through src/: no module imports from a layer
above it, and no two modules import each other (directly or in a cycle).

Layers, top down (a module may use any layer below its own, and its own layer's
modules in the order given by LAYERS, later ones below earlier ones):

    session -> store -> cache, options -> codec, finite -> engine -> disk -> leaves

References counted: `use crate::...`, `crate::x::...` paths in code, and `super::`
in disk/ and engine/ files. Comments, doc comments and `#[cfg(test)] mod tests`
blocks are skipped (tests may drive a module through the public facade).
Exit status 1 and a list of offending references on failure.
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Rank: lower is lower. A module may reference modules of strictly lower rank, or
# of equal rank only if listed in SAME_LAYER_ORDER below it.
LAYERS = [
    # leaves, usable by everyone
    (0, ["error", "clock", "hooks", "merge"]),
    # disk format and OS calls, bottom up
    (1, ["disk::fork", "disk::entry", "disk::sys", "disk::layout", "disk::counter", "disk::lock", "disk"]),
    # engine, bottom up
    (2, ["engine::entries", "engine::scan", "engine::sweep", "engine::adopt", "engine"]),
    # value codecs
    (3, ["finite", "codec", "flask::value", "flask::pickle", "flask::msgpack", "flask::signer",
         "flask::cookie", "flask"]),
    # facade
    (4, ["options", "inspect", "cache::typed", "cache::bytes", "cache::tools", "cache"]),
    # the Store trait and its backends; the URL opener knows every backend
    (5, ["store::calls", "store::pool", "store::builder", "store::tls", "store::file", "store::cachelib", "store::redis", "store::postgres", "store::sqlite",
         "store::memcached", "store::url", "store"]),
    (6, ["session::id", "session::config", "session", "session::users"]),
    (7, ["adapters::users", "adapters::tower", "adapters::actix", "adapters::axum", "adapters"]),
    (8, ["lib"]),
]

ORDER = {}
for rank, mods in LAYERS:
    for i, m in enumerate(mods):
        ORDER[m] = (rank, i)

# What the crate root re-exports (`crate::FileSystemCache` -> cache), read from lib.rs.
def root_exports():
    text = (SRC / "lib.rs").read_text()
    exports = {}
    for m in re.finditer(r"pub use ([a-z_:]+)::\{([^}]*)\};|pub use ([a-z_:]+)::(\w+);", text):
        if m.group(1):
            mod, names = m.group(1), m.group(2)
            for n in re.split(r"[,\s]+", names):
                if n:
                    exports[n] = mod
        else:
            exports[m.group(4)] = m.group(3)
    return exports


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts) if parts else "lib"


def strip(text: str) -> str:
    # Drop the test module (from `#[cfg(test)]\nmod tests` to the end of the file:
    # by convention it is last) and comments.
    m = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", text, re.M)
    if m:
        text = text[: m.start()]
    text = re.sub(r"//[^\n]*", "", text)
    return text


def resolve(target: str, known: set) -> str | None:
    parts = target.split("::")
    for n in range(len(parts), 0, -1):
        cand = "::".join(parts[:n])
        if cand in known:
            return cand
    return None


def main() -> int:
    exports = root_exports()
    files = sorted(SRC.rglob("*.rs"))
    known = {module_of(f) for f in files}
    bad = []
    edges = {}
    for f in files:
        me = module_of(f)
        if me == "lib":
            continue
        text = strip(f.read_text())
        refs = set()
        # `use crate::a::b::{...}` and `crate::a::b` paths
        for m in re.finditer(r"crate::([A-Za-z_][\w:]*)", text):
            path = m.group(1).rstrip(":")
            first = path.split("::")[0]
            if first in exports and first[0].isupper() or first in exports and first not in known:
                refs.add(resolve(exports[first], known) or exports[first])
                continue
            r = resolve(path, known)
            if r:
                refs.add(r)
        # `super::x` inside a directory module
        parent = me.rsplit("::", 1)[0] if "::" in me else None
        if parent:
            for m in re.finditer(r"\bsuper::(\w+)", text):
                cand = f"{parent}::{m.group(1)}"
                refs.add(cand if cand in known else parent)
            if re.search(r"\buse super::\{", text):
                for m in re.finditer(r"use super::\{([^}]*)\}", text):
                    for n in re.split(r"[,\s]+", m.group(1)):
                        n = n.split("::")[0]
                        if n:
                            cand = f"{parent}::{n}"
                            refs.add(cand if cand in known else parent)
        refs.discard(me)
        edges[me] = refs
        for r in refs:
            if me.startswith(r + "::"):
                # A child may use its own directory module's items (engine::sweep ->
                # engine: the Engine struct), the one upward reference allowed.
                continue
            if r not in ORDER or me not in ORDER:
                bad.append(f"{me} -> {r}: module not in the layer table (.ci/layers.py)")
                continue
            if ORDER[r] >= ORDER[me]:
                bad.append(f"{me} -> {r}: imports from a layer above (or beside) it")
    if bad:
        print("layer check failed:")
        for b in sorted(set(bad)):
            print("  " + b)
        return 1
    print(f"layers ok: {len(edges)} modules, one-way")
    return 0


if __name__ == "__main__":
    sys.exit(main())
