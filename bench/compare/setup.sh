# Sourced by run.sh and churn.sh (with `here` set to this directory): a venv with the
# Python peers from PyPI, and the release build of the Rust driver. Sets `rust_bin`
# and `py`.
echo "== setting up (venv with cachelib and diskcache from PyPI; release build)" >&2
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q --disable-pip-version-check cachelib diskcache >&2
(cd "$here" && cargo build --release --quiet)
rust_bin="$here/target/release/fscache-compare"
py="$here/.venv/bin/python"
