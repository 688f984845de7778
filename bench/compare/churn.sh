#!/usr/bin/env bash
# Churn latency side by side: new keys inserted into a cache full at its threshold,
# every insert timed, for fscache (inline bounded steps; with a background
# prune_step thread), fscache's own plain set of new keys into an unbounded cache of
# the same size, fscache with the bound as a byte budget (max_bytes) and in LRU
# order, diskcache (its default cull of at most 10 rows per write, bounded in bytes
# to the same entry count: its size_limit; also in its least-recently-used policy)
# and cachelib (FileSystemCache with the threshold). Then the cost of a read under
# LRU (each of N entries read once, shuffled: every fscache read stamps, every
# diskcache read updates its access time) beside the default policies.
# One process per run, one writer; 200-byte values. Prints one table per filesystem
# (mean, p50, p99, p99.9, max in microseconds).
#
#   bench/compare/churn.sh                 thresholds 1,000 10,000 100,000 1,000,000
#                                          (peers up to 100,000), tmpfs and disk
#   bench/compare/churn.sh --quick         threshold 1,000, tmpfs, 5,000 inserts
#
# Environment: COMPARE_TMPFS (default /dev/shm), COMPARE_DISK (default
# target/compare-disk), CHURN_CAP (seconds of inserts per run, default 30; 5 quick),
# CHURN_THRESHOLDS and CHURN_FS ("tmpfs", "disk" or both) to run a part.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

quick=0
if [ "${1:-}" = "--quick" ]; then
  quick=1; thresholds="1000"; fses="tmpfs"; cap=${CHURN_CAP:-5}
else
  thresholds="1000 10000 100000 1000000"; fses="tmpfs disk"; cap=${CHURN_CAP:-30}
fi
thresholds=${CHURN_THRESHOLDS:-$thresholds}
fses=${CHURN_FS:-$fses}
peer_max=100000
tmpfs=${COMPARE_TMPFS:-/dev/shm}
disk=${COMPARE_DISK:-$root/target/compare-disk}

. "$here/setup.sh"

for fs in $fses; do
  parent=$([ "$fs" = tmpfs ] && echo "$tmpfs" || echo "$disk")
  mkdir -p "$parent"
  base=$(mktemp -d "$parent/fscache-churn-XXXXXX")
  echo
  echo "### $fs ($(stat -f -c %T "$base")), one writer, 200 B values, µs per insert"
  echo
  echo "| threshold | system | inserts | mean | p50 | p99 | p99.9 | max | mean / fscache plain set |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  for t in $thresholds; do
    if [ $quick = 1 ]; then n=5000; else n=$(( t < 20000 ? 20000 : (t > 200000 ? 200000 : t) )); fi
    plain=""
    for system in fscache-plain fscache fscache-pruner fscache-bytes fscache-lru diskcache diskcache-lru cachelib; do
      case $system in
        diskcache*|cachelib) [ "$t" -le "$peer_max" ] || continue ;;
      esac
      dir="$base/$system"
      rm -rf "$dir"
      case $system in
        fscache*) out=$("$rust_bin" churn "$system" "$dir" "$t" "$n" 200 "$cap") ;;
        *) out=$("$py" "$here/peers.py" churn "$system" "$dir" "$t" "$n" 200 "$cap") ;;
      esac
      rm -rf "$dir"
      read -r _ count mean p50 p99 p999 max capped <<<"$(grep '^LAT' <<<"$out")"
      [ "$system" = fscache-plain ] && plain=$mean
      ratio=$(python3 -c "print(f'{$mean / $plain:.2f}×')")
      note=$([ "$capped" = 1 ] && echo " (cut at ${cap} s)" || true)
      echo "| $t | $system | $count$note | $mean | $p50 | $p99 | $p999 | $max | $ratio |"
    done
  done
  n=$([ $quick = 1 ] && echo 5000 || echo 100000)
  echo
  echo "### $fs: reads of $n entries, each once in a shuffled order, 200 B values, µs per read"
  echo
  echo "| system | reads | mean | p50 | p99 | p99.9 | max | mean / fscache |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  first=""
  for system in fscache fscache-lru diskcache diskcache-lru; do
    dir="$base/get-$system"
    rm -rf "$dir"
    case $system in
      fscache*) out=$("$rust_bin" lruget "$system" "$dir" "$n" 200 "$cap") ;;
      *) out=$("$py" "$here/peers.py" lruget "$system" "$dir" "$n" 200 "$cap") ;;
    esac
    rm -rf "$dir"
    read -r _ count mean p50 p99 p999 max capped <<<"$(grep '^LAT' <<<"$out")"
    [ "$system" = fscache ] && first=$mean
    ratio=$(python3 -c "print(f'{$mean / $first:.2f}×')")
    echo "| $system | $count | $mean | $p50 | $p99 | $p999 | $max | $ratio |"
  done
  rm -rf "$base"
done
