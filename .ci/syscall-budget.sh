#!/usr/bin/env bash
# Syscalls per operation, counted with strace on examples/syscalls.rs (N operations,
# between the begin/end markers it writes to stderr), against the budgets the design
# sets: set ≤ 5, overwrite ≤ 5, get ≤ 5, miss ≤ 2, delete ≤ 4. Deterministic, unlike
# timings, so CI can judge it. The budgets are for an operation's own path, so they
# are checked with the automatic expiry step off; its amortized share (one step of a
# few header reads every 32 writes) is printed separately, like sweeps are measured
# separately as churn.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/examples/syscalls"
n=1000
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
between() { awk '/fscache-syscalls: begin/ { on = 1; next } /fscache-syscalls: end/ { on = 0 } on { n++ } END { print n + 0 }' "$1"; }
for spec in set-new:5 overwrite:5 get:5 miss:2 delete:4 inc:12; do
  op=${spec%%:*} budget=${spec##*:}
  FSCACHE_EXPIRY_BUDGET=0 strace -qq -o "$work/trace" "$bin" "$op" "$n" "$work" >/dev/null 2>&1
  calls=$(between "$work/trace")
  per_op=$(awk -v c="$calls" -v n="$n" 'BEGIN { printf "%.2f", c / n }')
  verdict=ok
  awk -v p="$per_op" -v b="$budget" 'BEGIN { exit !(p <= b && p > 0) }' || { verdict="OVER BUDGET"; fail=1; }
  printf '%-10s %5s syscalls per operation (budget %s) %s\n' "$op" "$per_op" "$budget" "$verdict"
done
for op in set-new overwrite; do
  strace -qq -o "$work/trace" "$bin" "$op" "$n" "$work" >/dev/null 2>&1
  with=$(between "$work/trace")
  FSCACHE_EXPIRY_BUDGET=0 strace -qq -o "$work/trace" "$bin" "$op" "$n" "$work" >/dev/null 2>&1
  without=$(between "$work/trace")
  awk -v a="$with" -v b="$without" -v n="$n" -v op="$op" \
    'BEGIN { printf "%-10s +%.2f syscalls per write for the automatic expiry step (default budget 8)\n", op, (a - b) / n }'
done
exit $fail
