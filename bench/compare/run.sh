#!/usr/bin/env bash
# Side-by-side comparison: fscache, the bare-syscall floor, cacache (Rust, sync API),
# Python cachelib.FileSystemCache (threshold 500 and 0) and diskcache.Cache, on the
# same workloads, values and directories. Systems alternate in rounds; the table gives
# medians of the rounds.
#
#   bench/compare/run.sh           full: N = 1,000 / 10,000 / 100,000, 200 B and 16 KiB,
#                                  tmpfs and disk, 3 rounds (under 15 min on 2 cores)
#   bench/compare/run.sh --quick   N = 1,000, 200 B, tmpfs, 3 rounds (under 2 min)
#
# Environment: COMPARE_TMPFS (default /dev/shm), COMPARE_DISK (default target/compare-disk
# under the repository), COMPARE_CAP (seconds per workload before it is cut short).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ "${1:-}" = "--quick" ]; then
  ns="1000"; sizes="200"; fses="tmpfs"; rounds=3; cap=${COMPARE_CAP:-0.5}
else
  ns="1000 10000 100000"; sizes="200 16384"; fses="tmpfs disk"; rounds=3; cap=${COMPARE_CAP:-1}
fi
tmpfs=${COMPARE_TMPFS:-/dev/shm}
disk=${COMPARE_DISK:-$root/target/compare-disk}

. "$here/setup.sh"

results=$(mktemp)
trap 'rm -f "$results"' EXIT
systems=(floor fscache cacache cachelib0 cachelib diskcache)
for fs in $fses; do
  # A new directory of our own (mktemp): only it is ever removed.
  parent=$([ "$fs" = tmpfs ] && echo "$tmpfs" || echo "$disk")
  mkdir -p "$parent"
  base=$(mktemp -d "$parent/fscache-compare-XXXXXX")
  echo "== $fs: $base ($(stat -f -c %T "$base"))" >&2
  for n in $ns; do
    for size in $sizes; do
      for round in $(seq "$rounds"); do
        # Rotate the order each round so no system always runs first (or last).
        for i in "${!systems[@]}"; do
          system=${systems[$(( (i + round) % ${#systems[@]} ))]}
          dir="$base/$system"
          rm -rf "$dir"
          case "$system" in
            floor|fscache|cacache) out=$("$rust_bin" "$system" "$dir" "$n" "$size" "$cap") ;;
            *) out=$("$py" "$here/peers.py" "$system" "$dir" "$n" "$size" "$cap") ;;
          esac
          rm -rf "$dir"
          grep '^RESULT' <<<"$out" | sed "s/^RESULT/$fs $n $size $system/" >>"$results"
        done
      done
      echo "   N=$n size=$size done" >&2
    done
  done
  rm -rf "$base"
done

echo
echo "fscache comparison, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "filesystems: tmpfs=$tmpfs ($(stat -f -c %T "$tmpfs" 2>/dev/null)), disk=$disk ($(findmnt -n -o FSTYPE -T "$root" 2>/dev/null || echo '?'))"
echo "versions: $(rustc --version); fscache $(grep -m1 '^version' "$root/Cargo.toml" | cut -d'"' -f2);" \
  "cacache $(grep -A1 'name = "cacache"' "$here/Cargo.lock" | grep version | cut -d'"' -f2);" \
  "$("$py" --version); $("$py" -m pip show cachelib 2>/dev/null | grep Version | sed 's/Version: /cachelib /');" \
  "$("$py" -m pip show diskcache 2>/dev/null | grep Version | sed 's/Version: /diskcache /')"
echo "values: a session-like JSON object padded to the size; cap ${cap} s per workload; medians of $rounds rounds"
echo
"$py" "$here/summarize.py" "$results"
