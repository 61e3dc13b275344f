#!/usr/bin/env bash
# ferry against the tools users would otherwise pick, on the same files in
# one run: what a new version costs in bytes stored and bytes on the wire,
# and how long ingesting and sending it takes.
#
#   bench/peers.sh [--full] [--size-mib N] [--only S1,S2] [--out DIR] [--keep] [--json]
#
#   (default)     quick run: 128 MiB models and dataset (a few minutes)
#   --full        1 GiB models and dataset (about 25 minutes here)
#   --size-mib N  another size
#   --only LIST   only these scenarios (comma-separated)
#   --out DIR     where the results go (default bench/results): peers-LABEL.jsonl,
#                 peers-LABEL.md and two plots, LABEL being quick, full or N-mib
#   --keep        keep the work directory
#   --json        print only the JSON lines
#
# Scenarios (ferry-gen scenario; each version's ground truth from the
# generator): rename, partial, header, full, small-step, adapter, dataset, reshard,
# checkpoints (10 versions). Systems, each version after the one before:
#   ferry    commit into a store, then push to a `ferry serve` on 127.0.0.1
#   rsync    upload to an rsync daemon on 127.0.0.1 (--no-whole-file) over
#            the previous version
#   casync   casync make into a chunk store (defaults: 64 KiB chunks, zstd)
#   restic   restic backup into a local repository (defaults: v2, auto compression)
#   borg     borg create into a local repository (no encryption, zstd level 3)
#   zstd     zstd --patch-from the previous version (v0: zstd -3 of it);
#            up to 1900 MiB (its window is at most 2 GiB)
#   whole    the whole version, as Git LFS would send it (timed as rsync
#            --whole-file into an empty directory of the daemon)
#   b3sum, dd  references: BLAKE3 of the version (hot cache), and writing
#            as many bytes with dd conv=fdatasync
# Every timed step starts after a sync and includes a sync of the file system
# afterwards, so tools that do not fsync are charged for their writeback too.
# Each step's restored data is compared with the original (ferry: export from
# the store and from the hub; rsync: the daemon's copy; the others: extract
# the last version).
#
# The work directory is created under $FERRY_BENCH_DIR (default $HOME) and
# needs about 27 x the size free (the ten checkpoints, and the largest stores:
# ferry's store and hub holding them; each system's are removed before the next).
set -euo pipefail

name=peers.sh min_mib=16 help_lines=2,40p quick_mib=128
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
size_mib=128 label="" out_dir="$root/bench/results"
scenarios=(rename partial header full small-step adapter dataset reshard checkpoints)
bench_arg() {
  case "$1" in
    --full) size_mib=1024 label=full bench_shift=1 ;;
    --size-mib) size_mib=${2:?--size-mib needs a value} label="" bench_shift=2 ;;
    --only) IFS=, read -r -a scenarios <<< "${2:?--only needs a list}"; bench_shift=2 ;;
    --out) out_dir=${2:?--out needs a directory} bench_shift=2 ;;
  esac
}
bench_args "$@"
[ -n "$label" ] || { [ "$size_mib" = 128 ] && label=quick || label="${size_mib}-mib"; }
for s in "${scenarios[@]}"; do
  case "$s" in rename|partial|header|full|small-step|adapter|dataset|reshard|checkpoints) ;; *) echo "$name: unknown scenario $s" >&2; exit 2 ;; esac
done

bench_tools rsync:rsync casync:casync restic:restic borg:borgbackup zstd:zstd b3sum:b3sum /usr/bin/time:time /usr/bin/python3:python3
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || bench_install python3-matplotlib
bench_build
hub_pid="" rsyncd_pid=""
bench_cleanup() {
  stop_hub
  [ -z "$rsyncd_pid" ] || kill "$rsyncd_pid" 2>/dev/null || true
}
bench_workdir ferry-peers
work=$(cd "$work" && pwd)
mkdir -p "$work/run" "$work/data" "$out_dir"
results="$work/results.jsonl"
: > "$results"

die() { echo "$name: $*" >&2; exit 1; }
# A number from a one-line JSON object: jnum KEY < file (or <<< "$json").
jnum() { sed -nE "s/.*[{,]\"$1\":(-?[0-9][0-9.e+-]*).*/\1/p" | head -1 | grep . || die "no number \"$1\" in JSON"; }
dsize() { du -sb "$@" | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
# A ferry store without RocksDB's info logs (LOG, LOG.old.*: one of 100-200 KB
# per process that opens the store, up to 1000 kept), which grow with the
# number of commands run, not with the data; logs_bytes reports them.
ferry_size() { du -sb --exclude='LOG*' "$1" | cut -f1; }
warm() { cat "$1"/* > /dev/null; }

# CPU time (ticks) used by everything on the machine, and by the server
# process a transfer talks to (with its reaped children).
busy_ticks() { awk '/^cpu / { printf "%.0f\n", $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
server_ticks() {
  if [ -n "${server_pid:-}" ] && [ -r "/proc/$server_pid/stat" ]; then awk '{ printf "%.0f\n", $14 + $15 + $16 + $17 }' "/proc/$server_pid/stat"; else echo 0; fi
}
hz=$(getconf CLK_TCK)

# Runs one measured step: sync, the command (stdout to $work/step.out),
# sync again. Sets $wall (s), $rss (KiB, the command's peak), $other (CPU
# cores busy with work other than this command and its server, on average).
timed() {
  sync -f "$work"
  local b0 b1 s0 s1 t0 t1 u s
  b0=$(busy_ticks) s0=$(server_ticks) t0=$(now)
  /usr/bin/time -f '%M %U %S' -o "$work/step.time" "$@" > "$work/step.out" 2> "$work/step.err" || {
    cat "$work/step.err" >&2
    die "failed: $*"
  }
  sync -f "$work"
  t1=$(now) b1=$(busy_ticks) s1=$(server_ticks)
  read -r rss u s < <(tail -1 "$work/step.time")
  wall=$(secs "$t0" "$t1")
  other=$(awk -v b=$((b1 - b0 - s1 + s0)) -v hz="$hz" -v u="$u" -v s="$s" -v w="$wall" \
    'BEGIN { o = b / hz - u - s; if (o < 0) o = 0; printf "%.2f", (w > 0 ? o / w : 0) }')
}

# One JSON line per system and version: emit SYSTEM KEY=VALUE... (numbers or null).
emit() {
  local sys=$1 kv line
  shift
  line="{\"kind\":\"version\",\"scenario\":\"$scn\",\"system\":\"$sys\",\"version\":$k,\"bytes\":$vbytes,\"changed_bytes\":$vchanged"
  for kv in "$@"; do line+=",\"${kv%%=*}\":${kv#*=}"; done
  echo "$line}" >> "$results"
  [ "$json_only" = 1 ] || log "  $sys v$k: $(echo "$line}" | cut -c1-400 | sed -E 's/.*"changed_bytes":[0-9]+,//')"
}

# --- the rsync daemon: one writable module on loopback, for all scenarios ---
port=$(( 20000 + RANDOM % 20000 ))
bench_rsyncd "$work/run/rsync-module" 127.0.0.1 "$port"
rsync_url="rsync://127.0.0.1:$port/bench"

# --- ferry: a store, and a hub that already holds every earlier version ---
start_hub() {
  bench_hub "$run/hub" 127.0.0.1:0
  token=$("$ferry" --store "$run/hub" token create --repo 'bench/*' --scope write)
}
stop_hub() {
  [ -n "$hub_pid" ] || return 0
  kill "$hub_pid" 2> /dev/null || true
  wait "$hub_pid" 2> /dev/null || true
  hub_pid=""
}

run_ferry() {
  local fs="$run/store" prev_stored=0 prev_disk stored disk commit_s commit_rss commit_other push_s push_rss push_other
  local committed new_chunks sent received wire chunk hub_rss
  "$ferry" --store "$fs" init > /dev/null
  start_hub
  export FERRY_TOKEN="$token" FERRY_KNOWN_HUBS="$work/known_hubs"
  server_pid=$hub_pid
  for k in $(seq 0 $((nver - 1))); do
    version_truth
    prev_disk=$(ferry_size "$fs")
    warm "$data/v$k"
    timed "$ferry" --store "$fs" --json commit "bench/$scn" "$data/v$k" -m "v$k"
    commit_s=$wall commit_rss=$rss commit_other=$other
    committed=$(jnum bytes < "$work/step.out")
    new_chunks=$(jnum new_chunks < "$work/step.out")
    [ "$committed" = "$vbytes" ] || die "ferry committed $committed bytes of $scn v$k, not $vbytes"
    stored=$("$ferry" --store "$fs" --json stats | jnum stored_bytes)
    disk=$(ferry_size "$fs")
    timed "$ferry" --store "$fs" --json push "$hub" "bench/$scn"
    push_s=$wall push_rss=$rss push_other=$other
    sent=$(jnum wire_bytes_sent < "$work/step.out")
    received=$(jnum wire_bytes_received < "$work/step.out")
    wire=$((sent + received))
    chunk=$(jnum chunk_bytes_moved < "$work/step.out")
    emit ferry new_stored_bytes=$((stored - prev_stored)) total_stored_bytes="$stored" wire_bytes="$wire" \
      ingest_s="$commit_s" ingest_rss_kib="$commit_rss" transfer_s="$push_s" transfer_rss_kib="$push_rss" \
      other_cpu="$(awk -v a="$commit_other" -v b="$push_other" -v x="$commit_s" -v y="$push_s" 'BEGIN { printf "%.2f", (a * x + b * y) / (x + y) }')" \
      disk_new_bytes=$((disk - prev_disk)) disk_total_bytes="$disk" negotiation_bytes=$((wire - chunk)) new_chunks="$new_chunks" \
      logs_bytes="$(dsize "$fs"/LOG*)"
    prev_stored=$stored
  done
  hub_rss=$(awk '/VmHWM/ { print $2 }' "/proc/$hub_pid/status")
  echo "{\"kind\":\"server\",\"scenario\":\"$scn\",\"system\":\"ferry\",\"server_rss_kib\":$hub_rss}" >> "$results"
  stop_hub
  server_pid=""
  "$ferry" --store "$fs" export "bench/$scn" "$run/export-store" > /dev/null
  "$ferry" --store "$run/hub" export "bench/$scn" "$run/export-hub" > /dev/null
  diff -r "$run/export-store" "$data/v$((nver - 1))" > /dev/null || die "ferry: the store's $scn v$((nver - 1)) exports different files"
  diff -r "$run/export-hub" "$data/v$((nver - 1))" > /dev/null || die "ferry: the hub's $scn v$((nver - 1)) exports different files"
}

# --- rsync: the daemon holds the previous version; whole files, no history ---
run_rsync() {
  local total=0 dest="$work/run/rsync-module/$scn" wire
  server_pid=$rsyncd_pid
  for k in $(seq 0 $((nver - 1))); do
    version_truth
    warm "$data/v$k"
    timed rsync -r --delete --no-whole-file --stats "$data/v$k/" "$rsync_url/$scn/"
    wire=$(rsync_wire_bytes "$work/step.out")
    total=$((total + vbytes))
    emit rsync new_stored_bytes="$vbytes" total_stored_bytes="$total" wire_bytes="$wire" \
      ingest_s=null ingest_rss_kib=null transfer_s="$wall" transfer_rss_kib="$rss" other_cpu="$other"
    diff -r "$dest" "$data/v$k" > /dev/null || die "rsync: the daemon's copy of $scn v$k differs"
  done
  rm -rf "$dest"
  server_pid=""
}

# --- the whole version, as Git LFS would send and store it ---
run_whole() {
  local total=0
  server_pid=$rsyncd_pid
  for k in $(seq 0 $((nver - 1))); do
    version_truth
    warm "$data/v$k"
    timed rsync -r --whole-file --stats "$data/v$k/" "$rsync_url/whole-$scn-$k/"
    rm -rf "$work/run/rsync-module/whole-$scn-$k"
    total=$((total + vbytes))
    emit whole new_stored_bytes="$vbytes" total_stored_bytes="$total" wire_bytes="$vbytes" \
      ingest_s=null ingest_rss_kib=null transfer_s="$wall" transfer_rss_kib="$rss" other_cpu="$other"
  done
  server_pid=""
}

# --- dedup stores; their "wire" is what they would upload to a remote store ---
store_version() { # SYSTEM STORE-PATHS... : emits after a timed ingest
  local sys=$1 size
  shift
  size=$(dsize "$@")
  emit "$sys" new_stored_bytes=$((size - prev)) total_stored_bytes="$size" wire_bytes=$((size - prev)) \
    ingest_s="$wall" ingest_rss_kib="$rss" transfer_s=null transfer_rss_kib=null other_cpu="$other"
  prev=$size
}

run_casync() {
  local cs="$run/casync-store" idx="$run/casync-index" prev=0
  mkdir -p "$cs" "$idx"
  for k in $(seq 0 $((nver - 1))); do
    version_truth
    warm "$data/v$k"
    timed casync make --store="$cs" "$idx/v$k.caidx" "$data/v$k"
    store_version casync "$cs" "$idx"
  done
  casync extract --store="$cs" "$idx/v$((nver - 1)).caidx" "$run/extract" > /dev/null 2>&1
  diff -r "$run/extract" "$data/v$((nver - 1))" > /dev/null || die "casync: $scn v$((nver - 1)) extracts different files"
}

run_restic() {
  local repo="$run/restic-repo" prev
  export RESTIC_PASSWORD=ferry-bench RESTIC_CACHE_DIR="$run/restic-cache"
  restic -r "$repo" init -q > /dev/null
  prev=$(dsize "$repo")
  for k in $(seq 0 $((nver - 1))); do
    version_truth
    warm "$data/v$k"
    timed restic -r "$repo" backup -q --host bench "$data/v$k"
    store_version restic "$repo"
  done
  restic -r "$repo" restore latest -q --target "$run/extract" > /dev/null
  diff -r "$run/extract/$data/v$((nver - 1))" "$data/v$((nver - 1))" > /dev/null || die "restic: $scn v$((nver - 1)) restores different files"
}

run_borg() {
  local repo="$run/borg-repo" prev
  export BORG_BASE_DIR="$run/borg-base" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
  borg init --encryption=none "$repo"
  prev=$(dsize "$repo")
  for k in $(seq 0 $((nver - 1))); do
    version_truth
    warm "$data/v$k"
    timed env -C "$data" borg create --compression zstd "$repo::v$k" "v$k"
    store_version borg "$repo"
  done
  mkdir -p "$run/extract"
  env -C "$run/extract" borg extract "$repo::v$((nver - 1))"
  diff -r "$run/extract/v$((nver - 1))" "$data/v$((nver - 1))" > /dev/null || die "borg: $scn v$((nver - 1)) extracts different files"
}

# zstd works on one file per version: the file itself, or a tar of the
# version's files (made outside the timed step).
bundle() {
  local files=("$data/v$1"/*)
  if [ ${#files[@]} = 1 ]; then echo "${files[0]}"; else
    [ -f "$run/v$1.tar" ] || tar --sort=name -cf "$run/v$1.tar" -C "$data/v$1" .
    echo "$run/v$1.tar"
  fi
}

run_zstd() {
  local z="$run/zstd" prev=0 b
  if [ "$size_mib" -gt 1900 ]; then
    log "  zstd: skipped (--patch-from needs the old and new version within its 2 GiB window)"
    return
  fi
  mkdir -p "$z"
  for k in $(seq 0 $((nver - 1))); do
    version_truth
    b=$(bundle "$k")
    cat "$b" > /dev/null
    if [ "$k" = 0 ]; then
      timed zstd -q -3 "$b" -o "$z/v0.zst"
    else
      cat "$(bundle $((k - 1)))" > /dev/null
      timed zstd -q -3 --patch-from="$(bundle $((k - 1)))" "$b" -o "$z/v$k.zst"
    fi
    store_version zstd "$z"
  done
  k=$((nver - 1))
  if [ "$k" -gt 0 ]; then
    zstd -q -d --long=31 --patch-from="$(bundle $((k - 1)))" "$z/v$k.zst" -o "$run/restored"
    cmp -s "$run/restored" "$(bundle "$k")" || die "zstd: the patch of $scn v$k restores different bytes"
  fi
}

run_refs() {
  local count
  for k in $(seq 0 $((nver - 1))); do
    version_truth
    warm "$data/v$k"
    timed b3sum "$data/v$k"/*
    emit b3sum new_stored_bytes=null total_stored_bytes=null wire_bytes=null \
      ingest_s="$wall" ingest_rss_kib="$rss" transfer_s=null transfer_rss_kib=null other_cpu="$other"
    count=$(( (vbytes + (1 << 20) - 1) >> 20 ))
    timed dd if=/dev/zero of="$run/dd.tmp" bs=1M count="$count" conv=fdatasync status=none
    rm -f "$run/dd.tmp"
    emit dd new_stored_bytes=null total_stored_bytes=null wire_bytes=null \
      ingest_s="$wall" ingest_rss_kib="$rss" transfer_s=null transfer_rss_kib=null other_cpu="$other"
  done
}

version_truth() { # sets vbytes, vchanged for version $k of $scn
  local line
  line=$(sed -n "$((k + 1))p" "$data/truth.jsonl")
  vbytes=$(jnum bytes <<< "$line")
  vchanged=$(jnum changed_bytes <<< "$line")
}

psi() { awk '/^some/ { sub("avg60=", "", $3); print $3 }' /proc/pressure/cpu 2> /dev/null || echo null; }

machine() {
  local dev
  dev=$(df --output=source "$work" | tail -1)
  printf '{"kind":"machine","label":"%s","size_mib":%d,"date":"%s","cpu":"%s","nproc":%d,"mem_gib":%d,"fstype":"%s","device":"%s","kernel":"%s","ferry":"%s","psi_some_avg60_start":%s,"load_start":"%s","tools":{"rsync":"%s","casync":"%s","restic":"%s","borg":"%s","zstd":"%s","b3sum":"%s"}}\n' \
    "$label" "$size_mib" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(nproc)" \
    "$(awk '/MemTotal/ { printf "%d", $2 / 1048576 + 0.5 }' /proc/meminfo)" "$fstype" "$dev" "$(uname -r)" \
    "$(git -C "$root" describe --always --dirty 2> /dev/null || echo unknown)" "$(psi)" "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(rsync --version | head -1 | awk '{ print $3 }')" "$(casync --version | head -1 | awk '{ print $2 }')" "$(restic version | awk '{ print $2 }')" \
    "$(borg --version | awk '{ print $2 }')" "$(zstd --version | grep -o 'v[0-9.]*')" "$(b3sum --version | awk '{ print $2 }')"
}
machine >> "$results"

t_start=$(now)
done_scenarios=0
for scn in "${scenarios[@]}"; do
  data="$work/data/$scn"
  log "$scn: generating ($size_mib MiB)"
  "$gen" scenario "$scn" --size-mib "$size_mib" --seed 1 --out "$data" > "$data.truth"
  mv "$data.truth" "$data/truth.jsonl"
  nver=$(wc -l < "$data/truth.jsonl")
  sed 's/^{/{"kind":"truth",/' "$data/truth.jsonl" >> "$results"
  for sys in ferry rsync whole casync restic borg zstd refs; do
    run="$work/run/$sys"
    mkdir -p "$run"
    log "$scn: $sys"
    "run_$sys"
    rm -rf "$run"
  done
  rm -rf "$data"
  done_scenarios=$((done_scenarios + 1))
done
# An expansion error (bad arithmetic) abandons the loop without tripping set -e.
[ "$done_scenarios" = "${#scenarios[@]}" ] || die "stopped after $done_scenarios of ${#scenarios[@]} scenarios"
echo "{\"kind\":\"end\",\"seconds\":$(secs "$t_start" "$(now)"),\"psi_some_avg60_end\":$(psi),\"load_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >> "$results"

/usr/bin/python3 "$root/bench/peers_report.py" "$results" --out "$out_dir" --label "$label" > "$work/report.md"
if [ "$json_only" = 1 ]; then cat "$out_dir/peers-$label.jsonl"; else cat "$work/report.md"; fi
