#!/usr/bin/env bash
# Push and pull through a real hub on loopback, upload and download (no
# client store) through a second one, beside an rsync daemon on 127.0.0.1
# doing the same transfers of the same files.
#
#   bench/hub.sh [--size-gib N] [--quick] [--keep] [--json]
#
#   --size-gib N  size of each generated model file (default 2)
#   --quick       256 MiB files instead
#   --keep        keep the work directory
#   --json        print only the JSON lines (one object per measurement)
#
# Versions: v1 a new model; v2 the last quarter of its layers fine-tuned;
# v3 one more layer tuned (1% of a 2 GiB file), for negotiation cost.
# ferry: commit then push each version from store A; pull each into store B
# (and export v1, for the first download's reference); upload each version
# straight from its directory to the second hub, and download each into a
# directory holding the previous one.
# rsync: upload each version onto the daemon's copy (--no-whole-file), and
# download each into a local directory holding the previous one.
# Bytes are what each tool reports it moved (ferry: frame bytes both ways;
# rsync: "Total bytes sent/received"); neither counts TLS/QUIC or TCP/IP
# overhead, and rsync's daemon protocol is unencrypted.
#
# Then, where loop devices can be mounted (root), the download of v2 into a
# directory holding v1 again, ferry and rsync alike, on an XFS filesystem
# with reflinks (an image file in the work directory): there ferry's new
# file starts as a clone of the old one, so what stayed costs nothing.
#
# The work directory is created under $FERRY_BENCH_DIR (default $HOME). It
# needs about 6 x the model size free (11 x with the XFS image).
set -euo pipefail

name=hub.sh min_mib=64 help_lines=2,22p
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_args "$@"
bench_tools rsync:rsync /usr/bin/time:time
bench_build
hub_pid=""
hub2_pid=""
rsyncd_pid=""
xfs=""
bench_cleanup() {
  [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null
  [ -n "$hub2_pid" ] && kill "$hub2_pid" 2>/dev/null
  [ -n "$rsyncd_pid" ] && kill "$rsyncd_pid" 2>/dev/null
  [ -n "$xfs" ] && umount "$xfs" 2>/dev/null
  true
}
bench_workdir ferry-hub-bench

log "generating three ${size_mib} MiB safetensors models in $work"
"$gen" model --size-mib "$size_mib" --seed 1 --truth --out "$work/v1/model.safetensors" > "$work/v1.truth"
"$gen" model --size-mib "$size_mib" --seed 1 --changed-fraction 0.25 --truth --out "$work/v2/model.safetensors" > "$work/v2.truth"
"$gen" model --size-mib "$size_mib" --seed 1 --changed-layers $(( $(field "$work/v2.truth" changed_layers) + 1 )) --truth --out "$work/v3/model.safetensors" > "$work/v3.truth"
file_bytes=$(field "$work/v1.truth" bytes)
# Bytes that really differ from the version before.
truth_v1=$file_bytes
truth_v2=$(field "$work/v2.truth" changed_bytes)
truth_v3=$(( $(field "$work/v3.truth" changed_bytes) - truth_v2 ))

# The hubs (the second for upload and download), and a client store with a
# pinned certificate and a write token.
bench_hub "$work/hub2" 127.0.0.1:0
hub2=$hub hub2_pid=$hub_pid
token2=$("$ferry" --store "$work/hub2" token create --repo 'bench/*' --scope write)
bench_hub "$work/hub" 127.0.0.1:0
token=$("$ferry" --store "$work/hub" token create --repo 'bench/*' --scope write)
export FERRY_TOKEN="$token" FERRY_KNOWN_HUBS="$work/known_hubs"
"$ferry" --store "$work/a" init > /dev/null
"$ferry" --store "$work/b" init > /dev/null

# The rsync daemon: one writable module on loopback.
mkdir -p "$work/rsync-pull"
port=$(( 20000 + RANDOM % 20000 ))
bench_rsyncd "$work/rsync-module" 127.0.0.1 "$port"


emit() { echo "$1"; }
results=()
for v in 1 2 3; do
  truth_var="truth_v$v"; truth=${!truth_var}
  cat "$work/v$v/model.safetensors" > /dev/null

  log "v$v: ferry commit + push"
  timed_step "commit$v" "$ferry" --store "$work/a" --json commit bench/model "$work/v$v" -m "v$v"
  commit_s=$wall
  timed_step "push$v" "$ferry" --store "$work/a" --json push "$hub" bench/model
  push_s=$wall push_rss=$rss
  p="$work/push$v.out"
  push_sent=$(field "$p" wire_bytes_sent); push_recv=$(field "$p" wire_bytes_received)
  push_chunk=$(field "$p" chunk_bytes_moved)

  log "v$v: ferry pull"
  timed_step "pull$v" "$ferry" --store "$work/b" --json pull "$hub" bench/model
  pull_s=$wall pull_rss=$rss
  q="$work/pull$v.out"
  pull_sent=$(field "$q" wire_bytes_sent); pull_recv=$(field "$q" wire_bytes_received)

  export_s=0
  if [ "$v" = 1 ]; then
    timed_step "export$v" "$ferry" --store "$work/b" --json export bench/model "$work/b-out1"
    export_s=$wall
    rm -rf "$work/b-out1"
  fi

  log "v$v: ferry upload + download"
  timed_step "upload$v" env FERRY_TOKEN="$token2" "$ferry" --json upload "$hub2" bench/model "$work/v$v" -m "v$v"
  up_s=$wall up_rss=$rss
  up_bytes=$(( $(field "$work/upload$v.out" wire_bytes_sent) + $(field "$work/upload$v.out" wire_bytes_received) ))
  up_chunk=$(field "$work/upload$v.out" chunk_bytes_moved)
  timed_step "download$v" env FERRY_TOKEN="$token2" "$ferry" --json download "$hub2" bench/model "$work/down"
  down_s=$wall down_rss=$rss
  down_bytes=$(( $(field "$work/download$v.out" wire_bytes_sent) + $(field "$work/download$v.out" wire_bytes_received) ))
  cmp -s "$work/down/model.safetensors" "$work/v$v/model.safetensors" || { echo "hub.sh: ferry download of v$v differs" >&2; exit 1; }

  log "v$v: rsync upload + download"
  timed_step "rsync-up$v" rsync --no-whole-file --stats "$work/v$v/model.safetensors" "rsync://127.0.0.1:$port/bench/model.safetensors"
  rup_s=$wall rup_rss=$rss
  rup_bytes=$(rsync_wire_bytes "$work/rsync-up$v.out")
  timed_step "rsync-down$v" rsync --no-whole-file --stats "rsync://127.0.0.1:$port/bench/model.safetensors" "$work/rsync-pull/model.safetensors"
  rdown_s=$wall rdown_rss=$rss
  rdown_bytes=$(rsync_wire_bytes "$work/rsync-down$v.out")
  cmp -s "$work/rsync-pull/model.safetensors" "$work/v$v/model.safetensors" || { echo "hub.sh: rsync download of v$v differs" >&2; exit 1; }

  line=$(awk -v v="$v" -v fb="$file_bytes" -v truth="$truth" \
    -v cs="$commit_s" -v ps="$push_s" -v prss="$push_rss" -v psent="$push_sent" -v precv="$push_recv" -v pchunk="$push_chunk" \
    -v qs="$pull_s" -v qrss="$pull_rss" -v qsent="$pull_sent" -v qrecv="$pull_recv" \
    -v us="$rup_s" -v urss="$rup_rss" -v ubytes="$rup_bytes" \
    -v ds="$rdown_s" -v drss="$rdown_rss" -v dbytes="$rdown_bytes" -v es="$export_s" \
    -v fus="$up_s" -v furss="$up_rss" -v fubytes="$up_bytes" -v fuchunk="$up_chunk" \
    -v fds="$down_s" -v fdrss="$down_rss" -v fdbytes="$down_bytes" 'BEGIN {
      push_bytes = psent + precv; pull_bytes = qsent + qrecv
      printf "{\"version\":%.0f,\"file_bytes\":%.0f,\"changed_bytes\":%.0f,", v, fb, truth
      printf "\"ferry_commit_s\":%.3f,\"ferry_push_s\":%.3f,\"ferry_push_bytes\":%.0f,\"ferry_push_negotiation_bytes\":%.0f,\"ferry_push_rss_kib\":%.0f,", cs, ps, push_bytes, push_bytes - pchunk, prss
      printf "\"ferry_pull_s\":%.3f,\"ferry_pull_bytes\":%.0f,\"ferry_pull_rss_kib\":%.0f,", qs, pull_bytes, qrss
      printf "\"rsync_up_s\":%.3f,\"rsync_up_bytes\":%.0f,\"rsync_up_rss_kib\":%.0f,", us, ubytes, urss
      printf "\"rsync_down_s\":%.3f,\"rsync_down_bytes\":%.0f,\"rsync_down_rss_kib\":%.0f,", ds, dbytes, drss
      printf "\"push_bytes_over_changed\":%.4f,\"negotiation_pct_of_file\":%.4f,", push_bytes / (truth > 0 ? truth : 1), 100 * (push_bytes - pchunk) / fb
      printf "\"ferry_upload_s\":%.3f,\"ferry_upload_bytes\":%.0f,\"ferry_upload_rss_kib\":%.0f,", fus, fubytes, furss
      printf "\"ferry_download_s\":%.3f,\"ferry_download_bytes\":%.0f,\"ferry_download_rss_kib\":%.0f,", fds, fdbytes, fdrss
      if (es > 0) printf "\"ferry_export_s\":%.3f,\"first_download_speed_vs_pull_export\":%.2f,", es, (qs + es) / fds
      printf "\"upload_speedup_vs_commit_push\":%.2f,\"upload_speedup_vs_rsync\":%.2f,\"download_speedup_vs_rsync\":%.2f,", (cs + ps) / fus, us / fus, ds / fds
      printf "\"download_bytes_over_uploaded_chunk_bytes\":%.4f,", fdbytes / (fuchunk > 0 ? fuchunk : 1)
      printf "\"push_speedup_vs_rsync\":%.2f,\"commit_push_speedup_vs_rsync\":%.2f,\"pull_speedup_vs_rsync\":%.2f}\n", us / ps, us / (cs + ps), ds / qs
    }')
  results+=("$line")
  emit "$line"
done

hub_rss=$(awk '/VmHWM/ { print $2 }' "/proc/$hub_pid/status")
emit "{\"hub_peak_rss_kib\":$hub_rss}"

# v2 into a directory holding v1, on XFS with reflinks.
xfs_line=""
if [ "$(id -u)" = 0 ] && [ -e /dev/loop-control ]; then
  bench_tools mkfs.xfs:xfsprogs
  truncate -s $(( size_mib * 5 + 1024 ))M "$work/xfs.img"
  mkfs.xfs -q -m reflink=1 "$work/xfs.img"
  mkdir -p "$work/xfs"
  if mount -o loop "$work/xfs.img" "$work/xfs"; then
    xfs="$work/xfs"
    log "v2 on XFS with reflinks: ferry download and rsync down into a copy of v1"
    mkdir -p "$xfs/ferry" "$xfs/rsync"
    cp "$work/v1/model.safetensors" "$xfs/ferry/"
    cp "$work/v1/model.safetensors" "$xfs/rsync/"
    cat "$work/v2/model.safetensors" > /dev/null
    v2_head=$(field "$work/upload2.out" head)
    timed_step xfs-download env FERRY_TOKEN="$token2" "$ferry" --json download "$hub2" "bench/model@$v2_head" "$xfs/ferry"
    xd_s=$wall
    cmp -s "$xfs/ferry/model.safetensors" "$work/v2/model.safetensors" || { echo "hub.sh: ferry download of v2 on XFS differs" >&2; exit 1; }
    xd_cloned=$(field "$work/xfs-download.out" bytes_cloned)
    rsync --no-whole-file -q "$work/v2/model.safetensors" "rsync://127.0.0.1:$port/bench/model.safetensors"
    timed_step xfs-rsync-down rsync --no-whole-file --stats "rsync://127.0.0.1:$port/bench/model.safetensors" "$xfs/rsync/model.safetensors"
    xr_s=$wall
    cmp -s "$xfs/rsync/model.safetensors" "$work/v2/model.safetensors" || { echo "hub.sh: rsync download of v2 on XFS differs" >&2; exit 1; }
    xfs_line=$(awk -v fs="$xd_s" -v rs="$xr_s" -v c="$xd_cloned" 'BEGIN { printf "{\"xfs_ferry_download_v2_s\":%.3f,\"xfs_bytes_cloned\":%.0f,\"xfs_rsync_down_v2_s\":%.3f,\"xfs_download_speedup_vs_rsync\":%.2f}", fs, c, rs, rs / fs }')
    emit "$xfs_line"
    umount "$xfs" && xfs=""
  else
    log "could not mount an XFS image here; the reflink comparison is left out"
  fi
fi

"$ferry" --store "$work/b" export bench/model "$work/b-out" > /dev/null
cmp -s "$work/b-out/model.safetensors" "$work/v3/model.safetensors" || { echo "hub.sh: ferry pull of v3 exports different bytes" >&2; exit 1; }

[ "$json_only" = 1 ] && exit 0
echo
echo "| version | really changed | ferry push: bytes (negotiation) | time | rsync up: bytes | time | ferry pull: bytes | time | rsync down: bytes | time |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for line in "${results[@]}"; do
  g() { echo "$line" | sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }
  echo "| v$(g version) | $(mib "$(g changed_bytes)") MiB | $(mib "$(g ferry_push_bytes)") MiB ($(mib "$(g ferry_push_negotiation_bytes)")) | $(g ferry_push_s) s (+ commit $(g ferry_commit_s) s) | $(mib "$(g rsync_up_bytes)") MiB | $(g rsync_up_s) s | $(mib "$(g ferry_pull_bytes)") MiB | $(g ferry_pull_s) s | $(mib "$(g rsync_down_bytes)") MiB | $(g rsync_down_s) s |"
done
echo
echo "| version | ferry upload: bytes | time | vs commit + push | vs rsync up | ferry download: bytes | time | vs rsync down | peak RSS up / down |"
echo "|---|---|---|---|---|---|---|---|---|"
for line in "${results[@]}"; do
  g() { echo "$line" | sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }
  echo "| v$(g version) | $(mib "$(g ferry_upload_bytes)") MiB | $(g ferry_upload_s) s | $(g upload_speedup_vs_commit_push) x | $(g upload_speedup_vs_rsync) x | $(mib "$(g ferry_download_bytes)") MiB | $(g ferry_download_s) s | $(g download_speedup_vs_rsync) x | $(( $(g ferry_upload_rss_kib) / 1024 )) / $(( $(g ferry_download_rss_kib) / 1024 )) MiB |"
done
if [ -n "$xfs_line" ]; then
  x() { echo "$xfs_line" | sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }
  echo "v2 on XFS with reflinks: ferry download $(x xfs_ferry_download_v2_s) s ($(mib "$(x xfs_bytes_cloned)") MiB cloned), rsync down $(x xfs_rsync_down_v2_s) s: $(x xfs_download_speedup_vs_rsync) x"
fi
echo "first download vs pull + export: $(echo "${results[0]}" | sed -E 's/.*"first_download_speed_vs_pull_export":([0-9.]+).*/\1/') x"
echo
echo "file: $(mib "$file_bytes") MiB; hub peak RSS $(awk -v k="$hub_rss" 'BEGIN { printf "%.0f", k / 1024 }') MiB"
