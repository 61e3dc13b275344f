#!/usr/bin/env bash
# Runs every fuzz target briefly: fuzz/run.sh [SECONDS_PER_TARGET] (default 30).
# Installs cargo-fuzz if missing, seeds the corpora from protocol/vectors/,
# prints the executions per target and exits non-zero if any target crashed
# (the crashing input is left in fuzz/artifacts/<target>/).
#
# Environment: FUZZ_TARGETS="frames revision" to run a subset;
# FUZZ_SANITIZER=none to build without AddressSanitizer.
set -uo pipefail
secs=${1:-30}
fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$fuzz_dir")
cd "$root"

targets=${FUZZ_TARGETS:-"chunk_record tree_node revision frames negotiate access_file transfer store_formats chunking http_door"}
export CARGO_TARGET_DIR=${FERRY_FUZZ_TARGET_DIR:-$HOME/.cache/ferry/fuzz-target}
# The toolchain is stable; this lets cargo-fuzz pass its -Z flags.
export RUSTC_BOOTSTRAP=1
mkdir -p "$CARGO_TARGET_DIR"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || exit 2
fi

# ferry-hub pulls in RocksDB (through ferry-store), which the targets never
# call. Compiling it from source takes many minutes, so reuse a librocksdb.a
# that a normal build of the workspace already produced, if there is one.
if [ -z "${ROCKSDB_LIB_DIR:-}" ]; then
    prebuilt="$CARGO_TARGET_DIR/prebuilt-rocksdb"
    if [ ! -f "$prebuilt/librocksdb.a" ]; then
        want=$(grep -A1 '^name = "librocksdb-sys"$' "$fuzz_dir/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')
        for out in "$HOME"/.cache/ferry/target*/*/build/librocksdb-sys-*/out "$root"/target/*/build/librocksdb-sys-*/out; do
            [ -f "$out/librocksdb.a" ] || continue
            # Only an archive built from the same librocksdb-sys version.
            grep -qsF "/librocksdb-sys-$want" "$(dirname "$out")/output" || continue
            mkdir -p "$prebuilt"
            ln -f "$out/librocksdb.a" "$prebuilt/librocksdb.a" 2>/dev/null || cp "$out/librocksdb.a" "$prebuilt/librocksdb.a"
            break
        done
    fi
    if [ -f "$prebuilt/librocksdb.a" ]; then
        export ROCKSDB_LIB_DIR=$prebuilt ROCKSDB_STATIC=1
        export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-lstdc++"
        echo "using prebuilt RocksDB from $prebuilt" >&2
    fi
fi

"$fuzz_dir/seed.sh" || exit 2

sanitizer=()
[ -n "${FUZZ_SANITIZER:-}" ] && sanitizer=(--sanitizer "$FUZZ_SANITIZER")
if ! cargo fuzz build "${sanitizer[@]}"; then
    if [ -z "${FUZZ_SANITIZER:-}" ]; then
        echo "build with AddressSanitizer failed; retrying with --sanitizer none" >&2
        sanitizer=(--sanitizer none)
        cargo fuzz build "${sanitizer[@]}" || exit 2
    else
        exit 2
    fi
fi

logs=$(mktemp -d)
failed=()
summary=()
for t in $targets; do
    echo "=== $t: ${secs}s" >&2
    extra=()
    asan=${ASAN_OPTIONS:-}
    # RocksDB's C API leaks one byte listing the column families of the
    # store this target opens once; the leak checker (per input and at
    # exit) would stop there.
    if [ "$t" = http_door ]; then
        extra=(-detect_leaks=0)
        asan="detect_leaks=0${asan:+:$asan}"
    fi
    ASAN_OPTIONS=$asan cargo fuzz run "${sanitizer[@]}" "$t" -- -max_total_time="$secs" -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048 "${extra[@]}" >"$logs/$t.log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        grep -E "panicked at|^==[0-9]+==ERROR|SUMMARY|Test unit written to|^Failing input|Output of .std::fmt::Debug.:" -A2 "$logs/$t.log" | head -40 >&2
        summary+=("$(printf '%-14s CRASH (exit %s) after %s executions; log %s' "$t" "$rc" "${execs:-?}" "$logs/$t.log")")
    else
        summary+=("$(printf '%-14s ok   %s executions' "$t" "${execs:-?}")")
    fi
done

echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
