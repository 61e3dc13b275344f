# Shared by the benchmark scripts (sourced, not run). The caller sets
# `name` (for messages), `min_mib` and `help_lines` (the lines of its header
# comment that --help prints), and may set `quick_mib` (the --quick size)
# and define `bench_arg` (called with the remaining arguments for one it
# does not know; it sets `bench_shift` to the number it used), then calls:
#   bench_args "$@"          --size-gib N, --quick, --keep, --json, --help
#   bench_tools CMD:PKG ...  installs the Debian packages of missing commands
#   bench_install PKG ...    installs Debian packages
#   bench_build              installs what the build needs (scripts/setup), builds
#                            ferry and ferry-gen; sets $ferry, $gen
#   bench_workdir PREFIX     makes $work under $FERRY_BENCH_DIR (default $HOME),
#                            and sets $fstype to its file system
#   bench_hub STORE LISTEN [NETNS]
#                            a new store served as a hub (in network namespace
#                            NETNS if given); sets $hub_pid and $hub (its address)
#   timed_step NAME CMD...   runs and measures one step; sets $wall, $rss
#   bench_rsyncd DIR ADDRESS PORT [NETNS]
#                            an rsync daemon serving DIR as the writable module
#                            "bench"; sets $rsyncd_pid
# and may define `bench_cleanup`, run on exit before $work is removed.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
size_mib=$((2 * 1024))
keep=0
json_only=0

log() { [ "$json_only" = 1 ] || echo "$@" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# What rsync's --stats in file $1 counts as sent plus received.
rsync_wire_bytes() {
  awk '/^Total bytes sent:/ { gsub(",", "", $4); s = $4 } /^Total bytes received:/ { gsub(",", "", $4); r = $4 } END { if (s == "" || r == "") exit 1; printf "%.0f", s + r }' "$1" ||
    { echo "$name: no byte totals in rsync's --stats in $1" >&2; return 1; }
}
# A number or word field of the one-line JSON object in file $1.
field() { sed -E "s/.*\"$2\":\"?([0-9.a-z]+).*/\1/" "$1"; }

bench_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --size-gib) size_mib=$(awk -v g="${2:?--size-gib needs a value}" 'BEGIN { printf "%d", g * 1024 }'); shift 2 ;;
      --size-gib=*) size_mib=$(awk -v g="${1#*=}" 'BEGIN { printf "%d", g * 1024 }'); shift ;;
      --quick) size_mib=${quick_mib:-256}; shift ;;
      --keep) keep=1; shift ;;
      --json) json_only=1; shift ;;
      -h|--help) sed -n "$help_lines" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *)
        bench_shift=0
        if declare -F bench_arg >/dev/null; then bench_arg "$@"; fi
        [ "$bench_shift" -gt 0 ] || { echo "$name: unknown argument $1 (try --help)" >&2; exit 2; }
        shift "$bench_shift" ;;
    esac
  done
  [ "$size_mib" -ge "$min_mib" ] || { echo "$name: size must be at least $min_mib MiB" >&2; exit 2; }
}

bench_tools() {
  local need=() t
  for t in "$@"; do
    command -v "${t%%:*}" >/dev/null 2>&1 || [ -x "${t%%:*}" ] || need+=("${t#*:}")
  done
  [ ${#need[@]} -eq 0 ] && return
  bench_install "${need[@]}"
}

bench_install() {
  [ $# -eq 0 ] && return
  local SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  log "installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

bench_build() {
  "$root/scripts/setup"
  export CARGO_TARGET_DIR="$("$root/scripts/target-dir")"
  log "building (release)"
  (cd "$root" && cargo build --release -p ferry-cli -p ferry-bench --quiet)
  ferry="$CARGO_TARGET_DIR/release/ferry"
  gen="$CARGO_TARGET_DIR/release/ferry-gen"
}

bench_workdir() {
  local base="${FERRY_BENCH_DIR:-$HOME}"
  mkdir -p "$base"
  work=$(mktemp -d "$base/$1.XXXXXX")
  trap '_bench_exit' EXIT
  fstype=$(df --output=fstype "$work" | tail -1 | tr -d ' ')
  case "$fstype" in
    tmpfs|ramfs|overlay*) log "warning: $work is on $fstype, not a disk; set FERRY_BENCH_DIR" ;;
  esac
}

# timed_step NAME CMD...: runs CMD under GNU time, stdout to $work/NAME.out;
# sets $wall (s) and $rss (KiB, its peak). Each step starts from a quiet
# disk: the previous step's writeback (GiBs of dirty pages after a commit or
# an rsync) must not be charged to the next.
timed_step() {
  local name=$1 t0 t1; shift
  sync
  t0=$(now)
  /usr/bin/time -f %M -o "$work/$name.rss" "$@" > "$work/$name.out"
  t1=$(now)
  wall=$(secs "$t0" "$t1"); rss=$(tail -1 "$work/$name.rss")
}

# Not in a $(...) subshell: the pids must reach bench_cleanup. (ip netns
# exec execs its command, so $! is the server itself.)
bench_hub() {
  local store=$1 listen=$2 ns=()
  [ -z "${3:-}" ] || ns=(ip netns exec "$3")
  "$ferry" --store "$store" init > /dev/null
  "${ns[@]}" "$ferry" --store "$store" serve --listen "$listen" > "$store.out" 2>&1 &
  hub_pid=$!
  for _ in $(seq 100); do grep -q listening "$store.out" 2> /dev/null && break; sleep 0.1; done
  hub=$(sed -nE 's/.*listening on ([^ ]+) .*/\1/p' "$store.out" | head -1)
  [ -n "$hub" ] || { echo "$name: the hub did not start: $(cat "$store.out")" >&2; exit 1; }
}

bench_rsyncd() {
  local dir=$1 addr=$2 port=$3 ns=()
  [ -z "${4:-}" ] || ns=(ip netns exec "$4")
  mkdir -p "$dir"
  printf '%s\n' "use chroot = no" "pid file = $work/rsyncd.pid" "[bench]" "path = $dir" \
    "read only = no" "uid = $(id -un)" "gid = $(id -gn)" > "$work/rsyncd.conf"
  "${ns[@]}" rsync --daemon --no-detach --address="$addr" --port="$port" --config="$work/rsyncd.conf" &
  rsyncd_pid=$!
  for _ in $(seq 50); do "${ns[@]}" rsync "rsync://$addr:$port/" > /dev/null 2>&1 && break; sleep 0.1; done
  "${ns[@]}" rsync "rsync://$addr:$port/" > /dev/null 2>&1 || { echo "$name: the rsync daemon did not start on $addr:$port" >&2; exit 1; }
}

_bench_exit() {
  if declare -F bench_cleanup >/dev/null; then bench_cleanup || true; fi
  if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
