#!/usr/bin/env bash
# The HTTP door beside nginx: the same model file downloaded whole and in
# byte ranges from `ferry serve --http` and from nginx serving it from
# disk, on loopback, with curl; and uploads through the door beside
# `ferry commit` of the same file into a local store.
#
#   bench/http.sh [--size-gib N] [--quick] [--keep] [--json]
#
#   --size-gib N  size of the model file (default 2)
#   --quick       256 MiB instead
#   --keep        keep the work directory
#   --json        print only the JSON lines (one object per measurement)
#
# Each measurement is the best of three runs. ferry verifies every chunk
# against its id before sending it and reads it back out of RocksDB's blob
# files; nginx sends the file with sendfile. The page cache is warm for
# both (each is read once before timing).
set -euo pipefail

name=http.sh min_mib=64 help_lines=2,17p
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_args "$@"
bench_tools curl:curl nginx:nginx /usr/bin/time:time
bench_build
nginx_pid=""
bench_cleanup() {
  [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
  true
}
bench_workdir ferry-http-bench

log "generating a ${size_mib} MiB safetensors model in $work"
mkdir -p "$work/src" "$work/www/bench/m"
"$gen" model --size-mib "$size_mib" --seed 1 --out "$work/src/model.safetensors" > /dev/null
cp "$work/src/model.safetensors" "$work/www/bench/m/model.safetensors"
bytes=$(stat -c %s "$work/src/model.safetensors")

# The hub, with the model committed and public.
"$ferry" --store "$work/hub" init > /dev/null
"$ferry" --store "$work/hub" commit bench/m "$work/src" -m v1 > /dev/null
"$ferry" --store "$work/hub" visibility 'bench/*' public > /dev/null
token=$("$ferry" --store "$work/hub" token create --repo 'bench/*' --scope write)
"$ferry" --store "$work/hub" --json serve --listen 127.0.0.1:0 --http 127.0.0.1:0 > "$work/hub.out" 2> "$work/hub.err" &
hub_pid=$!
for _ in $(seq 100); do grep -q http "$work/hub.out" 2> /dev/null && break; sleep 0.1; done
http=$(sed -nE 's/.*"http":"([^"]+)".*/\1/p' "$work/hub.out")
[ -n "$http" ] || { echo "$name: the hub did not start: $(cat "$work/hub.err")" >&2; exit 1; }

# nginx serving the same file.
port=$(( 20000 + RANDOM % 20000 ))
# As root, nginx's workers would drop to a user that cannot read $work.
user_line=""; [ "$(id -u)" = 0 ] && user_line="user root;"
cat > "$work/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/nginx-tmp;
  proxy_temp_path $work/nginx-tmp;
  fastcgi_temp_path $work/nginx-tmp;
  uwsgi_temp_path $work/nginx-tmp;
  scgi_temp_path $work/nginx-tmp;
  server { listen 127.0.0.1:$port; root $work/www; }
}
EOF
mkdir -p "$work/nginx-tmp"
nginx -c "$work/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/bench/m/model.safetensors" -r 0-0 && break; sleep 0.1; done

ferry_url="http://$http/bench/m/resolve/main/model.safetensors"
nginx_url="http://127.0.0.1:$port/bench/m/model.safetensors"

# best SECONDS of three runs of CMD...
best() {
  local b="" t0 t1 s
  for _ in 1 2 3; do
    t0=$(now); "$@" > /dev/null; t1=$(now); s=$(secs "$t0" "$t1")
    b=$(awk -v a="$b" -v s="$s" 'BEGIN { print (a == "" || s < a) ? s : a }')
  done
  echo "$b"
}
whole() { curl -sf -o /dev/null "$1"; }
# 200 ranges of 1 MiB at offsets spread over the file, one curl process
# (keep-alive) per run.
ranges() {
  local url=$1 args=() i off
  for i in $(seq 0 199); do
    off=$(( (bytes - 1048576) / 200 * i ))
    args+=(-r "$off-$(( off + 1048575 ))" -o /dev/null "$url")
    [ "$i" -lt 199 ] && args+=(--next)
  done
  curl -sf "${args[@]}"
}
upload() {
  curl -sf -H "Authorization: Bearer $token" --data-binary "@$work/src/model.safetensors" "http://$http/v1/repos/bench/up$RANDOM/files"
}
commit_local() {
  rm -rf "$work/local"; "$ferry" --store "$work/local" init > /dev/null
  "$ferry" --store "$work/local" commit bench/local "$work/src" -m v1
}

whole "$ferry_url"; whole "$nginx_url"
log "downloading the whole file"
f_whole=$(best whole "$ferry_url"); n_whole=$(best whole "$nginx_url")
log "200 ranges of 1 MiB"
f_ranges=$(best ranges "$ferry_url"); n_ranges=$(best ranges "$nginx_url")
log "uploading (new data the first time, deduplicated after)"
t0=$(now); upload > /dev/null; t1=$(now); f_upload_new=$(secs "$t0" "$t1")
f_upload_dup=$(best upload)
c_commit=$(best commit_local)

line() {
  local what=$1 ferry_s=$2 ref=$3 ref_s=$4 b=$5
  local fm rm ratio
  fm=$(awk -v b="$b" -v s="$ferry_s" 'BEGIN { printf "%.0f", b / 1048576 / s }')
  rm=$(awk -v b="$b" -v s="$ref_s" 'BEGIN { printf "%.0f", b / 1048576 / s }')
  ratio=$(awk -v f="$ferry_s" -v r="$ref_s" 'BEGIN { printf "%.2f", r / f }')
  echo "{\"bench\":\"http\",\"step\":\"$what\",\"bytes\":$b,\"ferry_s\":$ferry_s,\"ferry_mib_s\":$fm,\"reference\":\"$ref\",\"reference_s\":$ref_s,\"reference_mib_s\":$rm,\"ratio\":$ratio}"
  log "$(printf '%-22s ferry %6s MiB/s   %-13s %6s MiB/s   ferry/reference %s' "$what" "$fm" "$ref" "$rm" "$ratio")"
}
{
  line download-whole "$f_whole" nginx "$n_whole" "$bytes"
  line download-ranges "$f_ranges" nginx "$n_ranges" $((200 * 1048576))
  line upload-new "$f_upload_new" "ferry commit" "$c_commit" "$bytes"
  line upload-deduplicated "$f_upload_dup" "ferry commit" "$c_commit" "$bytes"
} > "$work/results.jsonl"
[ "$json_only" = 1 ] && cat "$work/results.jsonl"
true
