#!/usr/bin/env bash
# Commit throughput and peak memory of the embedded engine, against the two
# things that bound it on this machine: how fast the disk takes sequential
# writes (dd with fdatasync) and how fast one core pass of BLAKE3 reads the
# same file from the page cache (b3sum).
#
#   bench/commit.sh [--size-gib N] [--quick] [--keep] [--json]
#
#   --size-gib N  size of each generated model file (default 2)
#   --quick       256 MiB files instead
#   --keep        keep the work directory
#   --json        print only the JSON lines (one object per measurement)
#
# The work directory (models, dd file and stores) is created under
# $FERRY_BENCH_DIR (default $HOME), which must be on a real disk, not tmpfs:
# the point is to measure the disk the store lives on. It needs about
# 3.3 x the model size free (two models, the store, the dd file).
set -euo pipefail

name=commit.sh min_mib=8 help_lines=2,17p
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_args "$@"
# b3sum for the hashing baseline, GNU time for peak RSS.
bench_tools b3sum:b3sum /usr/bin/time:time
bench_build
bench_workdir ferry-bench

div() { awk -v a="$1" -v b="$2" -v s="${3:-1}" 'BEGIN { if (b > 0) printf "%.3f", a / b / s; else print "null" }'; }

log "generating two ${size_mib} MiB safetensors models in $work"
t0=$(now)
"$gen" model --size-mib "$size_mib" --seed 1 --out "$work/v1/model.safetensors"
"$gen" model --size-mib "$size_mib" --seed 1 --changed-fraction 0.25 --out "$work/v2/model.safetensors"
sync
log "  generated in $(secs "$t0" "$(now)") s"
file_bytes=$(stat -c %s "$work/v1/model.safetensors")

# (a) Sequential write speed of this disk: as many bytes as one model file,
# at most 4 GiB (enough to get past the disk's caches, and the big runs are
# short of space already).
dd_run() {
  local mib=$(( size_mib < 4096 ? size_mib : 4096 ))
  local count=$(( (mib + 7) / 8 )) t0 t1
  t0=$(now)
  dd if=/dev/zero of="$work/dd.tmp" bs=8M count="$count" conv=fdatasync status=none
  t1=$(now)
  rm -f "$work/dd.tmp"
  sync
  echo "$((count * 8 << 20)) $(secs "$t0" "$t1")"
}

# (b) BLAKE3 of v1 from a hot page cache, all cores (b3sum's default).
log "measuring b3sum (hot cache)"
cat "$work/v1/model.safetensors" > /dev/null
t0=$(now); b3sum "$work/v1/model.safetensors" > /dev/null; t1=$(now)
b3_secs=$(secs "$t0" "$t1")

# (c)-(e) commits. Wall time and peak RSS of the whole ferry process.
results=()
commit() { # name repo dir
  local name=$1 repo=$2 dir=$3 out t0 t1 rss
  out="$work/$name.json"
  t0=$(now)
  /usr/bin/time -f %M -o "$work/$name.rss" "$ferry" --store "$work/store" --json commit "$repo" "$dir" -m "$name" > "$out"
  t1=$(now)
  rss=$(tail -1 "$work/$name.rss")
  results+=("$name $(secs "$t0" "$t1") $rss $(sed -E 's/.*"bytes":([0-9]+).*/\1/' "$out") $(sed -E 's/.*"new_bytes":([0-9]+).*/\1/' "$out") $(sed -E 's/.*"stored_bytes":([0-9]+).*/\1/' "$out") $(sed -E 's/.*"seconds":([0-9.e+-]+).*/\1/' "$out")")
}

"$ferry" --store "$work/store" init > /dev/null
log "measuring dd write speed"
read -r dd1_bytes dd1_secs < <(dd_run)
log "committing v1 (new data)"
cat "$work/v1/model.safetensors" > /dev/null
commit new_data bench/model "$work/v1"
log "measuring dd write speed again"
read -r dd2_bytes dd2_secs < <(dd_run)
log "committing v2 (25% of layers changed)"
cat "$work/v2/model.safetensors" > /dev/null
commit partial bench/model "$work/v2"
log "committing v1 again under another repo (all stored)"
cat "$work/v1/model.safetensors" > /dev/null
commit all_stored bench/model-copy "$work/v1"
store_disk=$(du -sb "$work/store" | cut -f1)

dd1_mbs=$(div "$dd1_bytes" "$dd1_secs" 1e6)
dd2_mbs=$(div "$dd2_bytes" "$dd2_secs" 1e6)
dd_mbs=$(awk -v a="$dd1_mbs" -v b="$dd2_mbs" 'BEGIN { printf "%.1f", (a + b) / 2 }')
b3_gbs=$(div "$file_bytes" "$b3_secs" 1e9)

json=()
json+=("{\"bench\":\"machine\",\"nproc\":$(nproc),\"cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')\",\"fstype\":\"$fstype\",\"file_bytes\":$file_bytes}")
json+=("{\"bench\":\"dd\",\"run\":1,\"bytes\":$dd1_bytes,\"seconds\":$dd1_secs,\"mb_per_s\":$dd1_mbs}")
json+=("{\"bench\":\"dd\",\"run\":2,\"bytes\":$dd2_bytes,\"seconds\":$dd2_secs,\"mb_per_s\":$dd2_mbs}")
json+=("{\"bench\":\"b3sum\",\"bytes\":$file_bytes,\"seconds\":$b3_secs,\"gb_per_s\":$b3_gbs}")

table="$(printf '%-12s %8s %8s %8s %8s %7s %9s %9s\n' commit "logical" "new" "stored" "wall s" "GB/s" "stored/s" "peak RSS")"$'\n'
table+="$(printf '%-12s %8s %8s %8s %8s %7s %9s %9s\n' "" "MiB" "MiB" "MiB" "" "logical" "MB/s" "MiB")"$'\n'
declare -A gbs wr
for r in "${results[@]}"; do
  read -r name wall rss bytes new stored inner <<< "$r"
  gbs[$name]=$(div "$bytes" "$wall" 1e9)
  wr[$name]=$(div "$stored" "$wall" 1e6)
  table+="$(printf '%-12s %8.1f %8.1f %8.1f %8.2f %7.2f %9.1f %9.1f\n' "$name" \
    "$(div "$bytes" 1048576)" "$(div "$new" 1048576)" "$(div "$stored" 1048576)" "$wall" "${gbs[$name]}" "${wr[$name]}" "$(div "$rss" 1024)")"$'\n'
  json+=("{\"bench\":\"commit\",\"case\":\"$name\",\"bytes\":$bytes,\"new_bytes\":$new,\"stored_bytes\":$stored,\"wall_seconds\":$wall,\"inner_seconds\":$inner,\"gb_per_s\":${gbs[$name]},\"stored_mb_per_s\":${wr[$name]},\"peak_rss_kib\":$rss}")
done
write_ratio=$(div "${wr[new_data]}" "$dd_mbs")
dedup_ratio=$(div "${gbs[all_stored]}" "$b3_gbs")
json+=("{\"bench\":\"ratios\",\"new_data_stored_vs_dd\":$write_ratio,\"all_stored_vs_b3sum\":$dedup_ratio,\"dd_mb_per_s\":$dd_mbs,\"b3sum_gb_per_s\":$b3_gbs,\"store_disk_bytes\":$store_disk}")

if [ "$json_only" = 0 ]; then
  echo
  echo "model file: $file_bytes bytes ($(div "$file_bytes" 1073741824) GiB) on $fstype, $(nproc) cores"
  echo "dd write (8M blocks, fdatasync): $dd1_mbs MB/s before, $dd2_mbs MB/s after the first commit; mean $dd_mbs MB/s"
  echo "b3sum, hot cache: $b3_gbs GB/s"
  echo
  printf '%s' "$table"
  echo
  echo "new-data commit writes $(div "${wr[new_data]}" 1) MB/s of stored bytes = $write_ratio x dd (target >= 0.85)"
  echo "all-stored commit reads $(div "${gbs[all_stored]}" 1) GB/s = $dedup_ratio x b3sum (target >= 1.2 GB/s absolute)"
  echo "store on disk: $(div "$store_disk" 1048576) MiB"
  echo
fi
printf '%s\n' "${json[@]}"
