#!/usr/bin/env bash
# ferry across an emulated long, lossy link, beside rsync over the same link.
#
#   bench/wan.sh [--size-gib N] [--quick] [--keep] [--json]
#                [--rate-mbit 200] [--rtt-ms 100] [--loss 0.01]
#
#   --size-gib N  size of each generated model file (default 1)
#   --quick       256 MiB files instead
#   --rate-mbit, --rtt-ms, --loss   the link (loss applies each way)
#
# wan-link (tests/wan_link.rs) joins two network namespaces, A (10.77.0.1)
# and B (10.77.0.2), through a user-space relay of IP packets that adds the
# rate limit, queue, delay and loss; both QUIC and TCP cross it. Hubs and an
# rsync daemon run in B (and a source hub in A for the mirror); clients in A.
# Measured, each as one timed command (process start, handshakes and
# negotiation included), with the bytes each tool reports on the wire:
#   push v1 (a new model) over QUIC, then over TLS-over-TCP to a second hub;
#   rsync upload of v1 to the daemon;
#   push v2 (the last quarter of the layers fine-tuned) and rsync of v2 over v1;
#   pull of v1+v2 into an empty store (QUIC);
#   mirror of v1 from a hub in A to an empty hub in B (`ferry mirror` in B).
# Throughput = wire bytes x 8 / wall time, as a fraction of the link rate.
# Needs root (namespaces, TUN devices). Work directory under
# $FERRY_BENCH_DIR (default $HOME), about 8 x the model size free.
set -euo pipefail

rate=200 rtt=100 loss=0.01
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rate-mbit) rate=$2; shift 2 ;;
    --rtt-ms) rtt=$2; shift 2 ;;
    --loss) loss=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
name=wan.sh min_mib=64 help_lines=2,24p
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
size_mib=1024
bench_args "${args[@]}"
[ "$(id -u)" = 0 ] || { echo "wan.sh: needs root (network namespaces, TUN devices)" >&2; exit 2; }
bench_tools rsync:rsync /usr/bin/time:time ip:iproute2
bench_build
(cd "$root" && cargo build --release -p ferry-tests --bin wan-link --quiet)
wanlink="$CARGO_TARGET_DIR/release/wan-link"

pids=()
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  # Closing the relay's stdin tears the link down.
  [ -n "${WAN_PID:-}" ] && { exec {WAN[1]}>&- || true; wait "$WAN_PID" 2>/dev/null || true; }
  true
}
bench_workdir ferry-wan-bench
link="fb$$"
link=${link:0:10}

log "generating two ${size_mib} MiB safetensors models in $work"
"$gen" model --size-mib "$size_mib" --seed 1 --truth --out "$work/v1/model.safetensors" > "$work/v1.truth"
"$gen" model --size-mib "$size_mib" --seed 1 --changed-fraction 0.25 --truth --out "$work/v2/model.safetensors" > "$work/v2.truth"
file_bytes=$(field "$work/v1.truth" bytes)
changed_v2=$(field "$work/v2.truth" changed_bytes)

log "link: $rate Mbit/s, $rtt ms round trip, loss $loss each way"
coproc WAN { exec "$wanlink" --name "$link" --rate-mbit "$rate" --rtt-ms "$rtt" --loss "$loss"; }
read -r _ <&"${WAN[0]}"
A="$link-a" B="$link-b"
tcp_cc=$(ip netns exec "$A" sysctl -n net.ipv4.tcp_congestion_control)

# Hubs: in B the destination of pushes (QUIC), a second one (TCP), and an
# empty one for the mirror; in A the mirror's source.
export FERRY_KNOWN_HUBS="$work/known_hubs"
serve() { # netns store addr
  bench_hub "$2" "$3" "$1"
  pids+=("$hub_pid")
}
token() { "$ferry" --store "$1" token create --repo 'bench/*' --scope write; }
serve "$B" "$work/hub-quic" 10.77.0.2:4433
serve "$B" "$work/hub-tcp" 10.77.0.2:4434
serve "$B" "$work/hub-us" 10.77.0.2:4435
serve "$A" "$work/hub-eu" 10.77.0.1:4436
tok_quic=$(token "$work/hub-quic") tok_tcp=$(token "$work/hub-tcp") tok_us=$(token "$work/hub-us") tok_eu=$(token "$work/hub-eu")

bench_rsyncd "$work/rsync-module" 10.77.0.2 8730 "$B"
pids+=("$rsyncd_pid")

"$ferry" --store "$work/a" init > /dev/null
"$ferry" --store "$work/a" commit bench/model "$work/v1" -m v1 > /dev/null
"$ferry" --store "$work/eu-client" init > /dev/null
"$ferry" --store "$work/eu-client" commit bench/model "$work/v1" -m v1 > /dev/null
FERRY_TOKEN=$tok_eu ip netns exec "$A" "$ferry" --store "$work/eu-client" push 10.77.0.1:4436 bench/model > /dev/null

results=()
emit() { # what bytes seconds rss
  local line
  line=$(awk -v w="$1" -v b="$2" -v s="$3" -v rss="$4" -v rate="$rate" -v rtt="$rtt" -v loss="$loss" -v fb="$file_bytes" 'BEGIN {
    mbit = b * 8 / s / 1e6
    printf "{\"what\":\"%s\",\"link_mbit\":%s,\"rtt_ms\":%s,\"loss\":%s,\"file_bytes\":%.0f,\"wire_bytes\":%.0f,\"seconds\":%.3f,\"mbit_s\":%.1f,\"link_fraction\":%.3f,\"peak_rss_kib\":%.0f}\n", w, rate, rtt, loss, fb, b, s, mbit, mbit / rate, rss
  }')
  results+=("$line")
  echo "$line"
}
ferry_bytes() { echo $(( $(field "$1" wire_bytes_sent) + $(field "$1" wire_bytes_received) )); }

log "push v1 over QUIC"
timed_step push1 env FERRY_TOKEN="$tok_quic" ip netns exec "$A" "$ferry" --store "$work/a" --json push 10.77.0.2:4433 bench/model
emit "ferry push v1 (QUIC)" "$(ferry_bytes "$work/push1.out")" "$wall" "$rss"
log "push v1 over TLS/TCP"
timed_step push1tcp env FERRY_TOKEN="$tok_tcp" ip netns exec "$A" "$ferry" --store "$work/a" --json push 10.77.0.2:4434 bench/model --transport tcp
emit "ferry push v1 (TCP fallback)" "$(ferry_bytes "$work/push1tcp.out")" "$wall" "$rss"
log "rsync v1"
timed_step rsync1 ip netns exec "$A" rsync --no-whole-file --stats "$work/v1/model.safetensors" rsync://10.77.0.2:8730/bench/model.safetensors
emit "rsync v1 (TCP $tcp_cc)" "$(rsync_wire_bytes "$work/rsync1.out")" "$wall" "$rss"

"$ferry" --store "$work/a" commit bench/model "$work/v2" -m v2 > /dev/null
log "push v2 over QUIC"
timed_step push2 env FERRY_TOKEN="$tok_quic" ip netns exec "$A" "$ferry" --store "$work/a" --json push 10.77.0.2:4433 bench/model
emit "ferry push v2 (QUIC)" "$(ferry_bytes "$work/push2.out")" "$wall" "$rss"
log "rsync v2 over v1"
timed_step rsync2 ip netns exec "$A" rsync --no-whole-file --stats "$work/v2/model.safetensors" rsync://10.77.0.2:8730/bench/model.safetensors
emit "rsync v2 over v1 (TCP $tcp_cc)" "$(rsync_wire_bytes "$work/rsync2.out")" "$wall" "$rss"

log "pull v1+v2 into an empty store"
"$ferry" --store "$work/b" init > /dev/null
timed_step pull env FERRY_TOKEN="$tok_quic" ip netns exec "$A" "$ferry" --store "$work/b" --json pull 10.77.0.2:4433 bench/model
emit "ferry pull v1+v2 (QUIC)" "$(ferry_bytes "$work/pull.out")" "$wall" "$rss"

log "mirror v1 from a hub in A to an empty hub in B"
timed_step mirror env FERRY_FROM_TOKEN="$tok_eu" FERRY_TO_TOKEN="$tok_us" ip netns exec "$B" "$ferry" --json mirror 10.77.0.1:4436 10.77.0.2:4435
# The mirror runs beside the destination: only the source's side crosses the link.
m="$work/mirror.out"
mirror_link_bytes=$(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['source_wire_bytes']['sent'] + j['source_wire_bytes']['received'])" "$m")
emit "ferry mirror v1 (QUIC)" "$mirror_link_bytes" "$wall" "$rss"
negotiation=$(field "$m" negotiation_bytes)

"$ferry" --store "$work/b" export bench/model "$work/b-out" > /dev/null
cmp -s "$work/b-out/model.safetensors" "$work/v2/model.safetensors" || { echo "wan.sh: the pull exported different bytes" >&2; exit 1; }
cmp -s "$work/rsync-module/model.safetensors" "$work/v2/model.safetensors" || { echo "wan.sh: rsync's copy differs" >&2; exit 1; }

[ "$json_only" = 1 ] && exit 0
echo
echo "Link: $rate Mbit/s, $rtt ms RTT, ${loss} loss each way; model $(mib "$file_bytes") MiB, v2 changes $(mib "$changed_v2") MiB; rsync's TCP uses $tcp_cc"
echo
echo "| transfer | MiB on the wire | seconds | Mbit/s | of the link | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
for line in "${results[@]}"; do
  g() { echo "$line" | sed -E "s/.*\"$1\":\"?([^,\"]+)\"?.*/\1/"; }
  echo "| $(g what) | $(mib "$(g wire_bytes)") | $(g seconds) | $(g mbit_s) | $(awk -v f="$(g link_fraction)" 'BEGIN { printf "%.0f%%", f * 100 }') | $(awk -v k="$(g peak_rss_kib)" 'BEGIN { printf "%.0f", k / 1024 }') |"
done
echo
echo "mirror negotiation: $negotiation bytes (everything on the wire but chunk records)"
