#!/usr/bin/env bash
# A store on a bucket against the embedded store, on a real Garage node on
# loopback: commit a new model (v1), commit its fine-tune (v2, a quarter of
# the layers changed), export v2, rebuild the store's directory from the
# bucket, read 1 MiB ranges from it, and collect garbage (a third model
# committed, its repository deleted, gc run twice: the first retires its
# packs, the second deletes them; no grace period). Also: the bucket's bytes against
# the embedded store's growth, and the bytes Garage sends per byte a range
# read returns (from Garage's own I/O counters). The bound a bucket store
# is up against is how fast the object
# store takes one big PUT (curl with SigV4, the same bytes as v1), so that
# is measured in the same run.
#
#   bench/bucket.sh [--size-gib N] [--quick] [--keep] [--json]
#
#   --size-gib N  size of each generated model file (default 2)
#   --quick       256 MiB files instead
#   --keep        keep the work directory
#   --json        print only the JSON lines (one object per measurement)
#
# Needs Garage (scripts/garage-bin builds it once) and about 5 x the model
# size free under $FERRY_BENCH_DIR (default $HOME).
set -euo pipefail

name=bucket.sh min_mib=8 help_lines=2,16p
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_args "$@"
bench_tools /usr/bin/time:time curl:curl
export FERRY_GARAGE="$("$root/scripts/garage-bin")"
bench_build
bench_workdir ferry-bucket

log "generating two ${size_mib} MiB safetensors models in $work"
"$gen" model --size-mib "$size_mib" --seed 1 --out "$work/v1/model.safetensors"
"$gen" model --size-mib "$size_mib" --seed 1 --changed-fraction 0.25 --out "$work/v2/model.safetensors"
file_bytes=$(stat -c %s "$work/v1/model.safetensors")

log "starting Garage"
coproc GARAGE { "$CARGO_TARGET_DIR/release/ferry-garage-node"; }
bench_cleanup() { exec {GARAGE[1]}>&- 2>/dev/null || true; wait "$GARAGE_PID" 2>/dev/null || true; }
read -r garage_json <&"${GARAGE[0]}"
g() { echo "$garage_json" | sed -E "s/.*\"$1\":\"([^\"]*)\".*/\1/"; }
endpoint=$(g endpoint) region=$(g region) bucket=$(g bucket) admin=$(g admin_endpoint) admin_token=$(g admin_token)
export AWS_ACCESS_KEY_ID=$(g access_key_id) AWS_SECRET_ACCESS_KEY=$(g secret_access_key)
garage_pid=$(pgrep -n -x garage)
# Bytes Garage has written, to sockets and files: during reads, what it sends.
garage_sent() { awk '/^wchar:/ { print $2 }' "/proc/$garage_pid/io"; }
# curl signing S3 requests (Garage wants the payload hash header, which
# curl does not send by itself).
s3_curl=(curl -sf -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --aws-sigv4 "aws:amz:$region:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
s3() { "${s3_curl[@]}" "$@"; }
# Bytes of every object under a prefix. One listing page without a query
# prefix (Garage and curl disagree on signing an encoded '/'), so at most
# 1000 objects: far more than a bench run makes.
bucket_bytes() {
  local page
  page=$(s3 "$endpoint/$bucket?list-type=2")
  if echo "$page" | grep -q '<IsTruncated>true'; then echo "$name: more than 1000 objects in the bucket" >&2; exit 1; fi
  echo "$page" | awk -v p="<Key>$1/" 'BEGIN { RS = "<Contents>" } index($0, p) { match($0, /<Size>[0-9]+/); s += substr($0, RSTART + 6, RLENGTH - 6) } END { print s + 0 }'
}

# S3 requests Garage has answered so far, in all and by kind
# ("PutObject:3,UploadPart:12,...").
s3_requests() {
  curl -sf -H "Authorization: Bearer $admin_token" "$admin/metrics" |
    awk '/^api_s3_request_counter\{/ { match($0, /api_endpoint="[^"]*"/); k = substr($0, RSTART + 14, RLENGTH - 15); n[k] += $NF; t += $NF }
         END { s = ""; for (k in n) s = s (s == "" ? "" : ",") k ":" n[k]; printf "%d %s\n", t, (s == "" ? "-" : s) }'
}

results=()
step() { # name cmd...: times it, keeps "name seconds rss requests kinds"
  local n=$1 before after kinds; shift
  read -r before _ < <(s3_requests)
  timed_step "$n" "$@"
  read -r after kinds < <(s3_requests)
  # The metrics request itself is not an S3 request.
  results+=("$n $wall $rss $((after - before)) $kinds")
  log "  $n: $wall s, peak RSS $((rss / 1024)) MiB, $((after - before)) S3 requests"
}

log "reference: one PUT of v1's bytes"
step put "${s3_curl[@]}" -T "$work/v1/model.safetensors" "$endpoint/$bucket/reference.bin"

address="s3://$bucket/bench?gc_grace=0"
backend=(--backend "$address" --s3-endpoint "$endpoint" --s3-region "$region")
"$ferry" --store "$work/embedded" init > /dev/null
embedded_empty=$(du -sb "$work/embedded" | cut -f1)
"$ferry" --store "$work/bucket" init "${backend[@]}" > /dev/null
for kind in embedded bucket; do
  log "$kind store"
  step "$kind-commit-v1" "$ferry" --store "$work/$kind" --json commit bench/model "$work/v1" -m v1
  step "$kind-commit-v2" "$ferry" --store "$work/$kind" --json commit bench/model "$work/v2" -m v2
  step "$kind-export-v2" "$ferry" --store "$work/$kind" --json export bench/model "$work/out-$kind"
  cmp "$work/out-$kind/model.safetensors" "$work/v2/model.safetensors"
done
embedded_grew=$(($(du -sb "$work/embedded" | cut -f1) - embedded_empty))
in_bucket=$(bucket_bytes bench)
rm -rf "$work/bucket"
step rebuild "$ferry" --store "$work/rebuilt" --json rebuild "${backend[@]}"
step rebuilt-export-v2 "$ferry" --store "$work/rebuilt" --json export bench/model "$work/out-rebuilt"
cmp "$work/out-rebuilt/model.safetensors" "$work/v2/model.safetensors"
ranges=64
log "$ranges ranged reads of 1 MiB from the rebuilt store (nothing cached)"
sent_before=$(garage_sent)
step ranges bash -c 'for i in $(seq "$3"); do
    at=$(( (RANDOM * 32768 + RANDOM) % ($4 - 1048576) ))
    "$0" --store "$1" cat bench/model@main model.safetensors --range "$at..$((at + 1048576))" | cmp -s - <(tail -c +$((at + 1)) "$2" | head -c 1048576) || { echo "range at $at differs" >&2; exit 1; }
  done' "$ferry" "$work/rebuilt" "$work/v2/model.safetensors" "$ranges" "$file_bytes"
range_amplification=$(awk -v s="$(( $(garage_sent) - sent_before ))" -v n="$ranges" 'BEGIN { printf "%.2f", s / (n * 1048576) }')

log "gc: a third model committed and its repository deleted, then gc twice"
"$gen" model --size-mib "$size_mib" --seed 3 --out "$work/v3/model.safetensors"
for kind in embedded rebuilt; do
  "$ferry" --store "$work/$kind" commit bench/scratch "$work/v3" -m scratch > /dev/null
  [ "$kind" = rebuilt ] && with_scratch=$(bucket_bytes bench)
  "$ferry" --store "$work/$kind" repo delete bench/scratch > /dev/null
  step "$kind-gc" "$ferry" --store "$work/$kind" --json gc
  step "$kind-gc-again" "$ferry" --store "$work/$kind" --json gc
done
after_gc=$(bucket_bytes bench)

get() { local want=$1 r; for r in "${results[@]}"; do set -- $r; [ "$1" = "$want" ] && { echo "$2"; return; }; done; }
mibs() { awk -v b="$file_bytes" -v s="$1" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }

requests() { local want=$1 r; for r in "${results[@]}"; do set -- $r; [ "$1" = "$want" ] && { echo "$4"; return; }; done; }
per_gib() { awk -v n="$1" -v b="$file_bytes" 'BEGIN { printf "%.0f", n / (b / 1073741824) }'; }

for r in "${results[@]}"; do
  set -- $r
  echo "{\"bench\":\"bucket\",\"step\":\"$1\",\"seconds\":$2,\"peak_rss_kib\":$3,\"s3_requests\":$4,\"file_bytes\":$file_bytes,\"mib_per_s\":$(mibs "$2")}"
done
echo "{\"bench\":\"bucket\",\"bucket_bytes_with_scratch\":$with_scratch,\"bucket_bytes_after_gc\":$after_gc}"
echo "{\"bench\":\"bucket\",\"bucket_bytes\":$in_bucket,\"embedded_growth_bytes\":$embedded_grew,\"range_reads\":$ranges,\"garage_bytes_sent_per_byte_read\":$range_amplification}"
if [ "$json_only" = 0 ]; then
  put=$(get put)
  echo
  echo "bucket.sh: ${size_mib} MiB model, Garage single node on loopback ($fstype)"
  printf '  %-16s %10s %10s %12s\n' step embedded bucket "bucket/emb."
  for s in commit-v1 commit-v2 export-v2; do
    e=$(get "embedded-$s") b=$(get "bucket-$s")
    printf '  %-16s %8s MiB/s %6s MiB/s %8s x\n' "$s" "$(mibs "$e")" "$(mibs "$b")" "$(ratio "$b" "$e")"
  done
  echo "  one PUT of v1 (curl): $(mibs "$put") MiB/s; bucket commit-v1 at $(ratio "$(get bucket-commit-v1)" "$put") x of it"
  echo "  rebuild from the bucket: $(get rebuild) s; export after it: $(mibs "$(get rebuilt-export-v2)") MiB/s"
  echo "  after v1 and v2 the bucket holds $in_bucket bytes, $(ratio "$embedded_grew" "$in_bucket") x what the embedded store grew by ($embedded_grew)"
  echo "  1 MiB range reads: Garage sent $range_amplification bytes per byte returned; $(requests ranges) S3 requests for $ranges reads (each a new process: opening the store reads the journal)"
  echo "  gc (a deleted model's packs): embedded $(get embedded-gc) s, bucket $(get rebuilt-gc) s ($(requests rebuilt-gc) S3 requests) then $(get rebuilt-gc-again) s to delete them ($(requests rebuilt-gc-again) requests); the bucket went from $with_scratch to $after_gc bytes ($in_bucket before the scratch model)"
  echo "  S3 requests per GiB of model: commit v1 $(per_gib "$(requests bucket-commit-v1)"), commit v2 $(per_gib "$(requests bucket-commit-v2)"), export v2 $(per_gib "$(requests bucket-export-v2)"), rebuild $(requests rebuild) in all"
fi
