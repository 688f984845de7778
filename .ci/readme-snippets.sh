#!/usr/bin/env bash
# Every ```rust block of README.md, pasted as a user would: into a new binary crate
# whose only dependency is fscache (no dev-dependencies such as tempfile), with no
# hidden rustdoc lines. Each must build and run. A block opened with
# ```rust,features=flask gets fscache with those cargo features, as its text says.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$root/README.md" "$work" <<'PY'
import pathlib, re, sys
readme, work = pathlib.Path(sys.argv[1]).read_text(), pathlib.Path(sys.argv[2])
blocks = re.findall(r"^```rust(?:,features=([\w,-]+))?\n(.*?)^```", readme, re.S | re.M)
assert blocks, "README.md has no rust blocks"
for i, (features, code) in enumerate(blocks):
    hidden = [l for l in code.splitlines() if l.strip() == "#" or l.lstrip().startswith("# ")]
    if hidden:
        sys.exit(f"README rust block {i + 1} has hidden rustdoc lines a reader would paste: {hidden}")
    (work / f"b{i}" / "src").mkdir(parents=True)
    (work / f"b{i}" / "src" / "main.rs").write_text(code)
    (work / f"b{i}" / "features").write_text(", ".join(f'"{f}"' for f in features.split(",") if f))
print(len(blocks))
PY
for crate in "$work"/b*; do
  cat >"$crate/Cargo.toml" <<TOML
[package]
name = "readme-$(basename "$crate")"
version = "0.0.0"
edition = "2024"
publish = false
[workspace]
[dependencies]
fscache = { path = "$root", features = [$(cat "$crate/features")] }
TOML
  (cd "$crate" && CARGO_TARGET_DIR="$root/target/readme-snippets" cargo run --quiet --release >/dev/null) \
    || { echo "README snippet $(basename "$crate") does not build or run as shown" >&2; cat "$crate/src/main.rs" >&2; exit 1; }
done
echo "README snippets: $(ls -d "$work"/b* | wc -l) blocks build and run as pasted"
