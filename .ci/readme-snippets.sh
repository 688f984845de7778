#!/usr/bin/env bash
# Every ```rust block of README.md, pasted as a user would: into a new binary crate
# whose only dependency is fscache (no dev-dependencies such as tempfile), with no
# hidden rustdoc lines. Each must build and run. A block opened with
# ```rust,features=flask gets fscache with those cargo features, as its text says.
# A block whose tag ends in ,server (```rust,features=axum,server) is an axum app:
# it gets axum 0.8 and tokio (full) as its text says, is started, must answer on
# 127.0.0.1:3000, and is driven with curl through a visit, a login and a logout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$root/README.md" "$work" <<'PY'
import pathlib, re, sys
readme, work = pathlib.Path(sys.argv[1]).read_text(), pathlib.Path(sys.argv[2])
blocks = re.findall(r"^```rust(?:,features=([\w-]+(?:,[\w-]+)*?))?(,server)?\n(.*?)^```", readme, re.S | re.M)
assert blocks, "README.md has no rust blocks"
for i, (features, server, code) in enumerate(blocks):
    hidden = [l for l in code.splitlines() if l.strip() == "#" or l.lstrip().startswith("# ")]
    if hidden:
        sys.exit(f"README rust block {i + 1} has hidden rustdoc lines a reader would paste: {hidden}")
    (work / f"b{i}" / "src").mkdir(parents=True)
    (work / f"b{i}" / "src" / "main.rs").write_text(code)
    (work / f"b{i}" / "features").write_text(", ".join(f'"{f}"' for f in features.split(",") if f))
    if server:
        (work / f"b{i}" / "server").write_text("")
print(len(blocks))
PY
# Runs the axum app of a ,server block and drives it over HTTP with a cookie jar.
check_server() {
  local crate=$1 bin base=http://127.0.0.1:3000 jar body pid
  bin="$root/target/readme-snippets/release/readme-$(basename "$crate")"
  jar="$crate/cookies"
  (cd "$crate" && exec "$bin") &
  pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "$base/" && break; sleep 0.1; done
  expect() { # METHOD PATH TEXT
    body=$(curl -s -b "$jar" -c "$jar" -X "$1" "$base$2")
    grep -qF "$3" <<<"$body" || { kill "$pid"; echo "README server snippet: $1 $2 answered '$body', expected '$3'" >&2; exit 1; }
  }
  expect GET / "visit 1 as nobody"
  expect GET / "visit 2 as nobody"
  expect POST /login "logged in"
  expect GET / "visit 3 as ann"
  expect POST /logout "logged out"
  expect GET / "visit 1 as nobody"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

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
  if [ -e "$crate/server" ]; then
    printf 'axum = "0.8"\ntokio = { version = "1", features = ["full"] }\n' >>"$crate/Cargo.toml"
    (cd "$crate" && CARGO_TARGET_DIR="$root/target/readme-snippets" cargo build --quiet --release) \
      || { echo "README snippet $(basename "$crate") does not build as shown" >&2; cat "$crate/src/main.rs" >&2; exit 1; }
    check_server "$crate"
    continue
  fi
  (cd "$crate" && CARGO_TARGET_DIR="$root/target/readme-snippets" cargo run --quiet --release >/dev/null) \
    || { echo "README snippet $(basename "$crate") does not build or run as shown" >&2; cat "$crate/src/main.rs" >&2; exit 1; }
done
echo "README snippets: $(ls -d "$work"/b* | wc -l) blocks build and run as pasted"
