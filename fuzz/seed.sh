#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the golden vectors in protocol/vectors/
# (plus a few hand-written inputs for targets without vectors). The corpus
# directories are git-ignored; running this again only adds files.
set -euo pipefail
fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$fuzz_dir")

python3 - "$root" "$fuzz_dir" <<'PY'
import hashlib, json, os, sys

root, fuzz = sys.argv[1], sys.argv[2]
core = json.load(open(os.path.join(root, "protocol/vectors/core.json")))
wire = json.load(open(os.path.join(root, "protocol/vectors/wire.json")))
store = json.load(open(os.path.join(root, "protocol/vectors/store.json")))
counts = {}

def seed(target, data):
    d = os.path.join(fuzz, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)
    counts[target] = counts.get(target, 0) + 1

enc = core["encodings"]
rec = bytes.fromhex(enc["chunk_record"]["hex"])
seed("chunk_record", rec)
seed("chunk_record", bytes.fromhex(enc["chunk_record"]["id"]) + rec)  # id || record
seed("chunk_record", bytes.fromhex(enc["planes_record"]["hex"]))
# split byte (base length / 4), the base, then a delta record against it
base = bytes.fromhex(enc["planes_record"]["raw_hex"])
seed("chunk_record", bytes([len(base) // 4]) + base + bytes.fromhex(enc["delta_record"]["hex"]))
seed("tree_node", bytes.fromhex(enc["node"]["hex"]))

# chunking: a buffer-size byte, then a file; the golden safetensors header
# over a little data (its offsets run past the end), and plain bytes.
st = core["safetensors"]["input"]["header"].encode()
filler = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(128))
seed("chunking", b"\x05" + len(st).to_bytes(8, "little") + st + filler)
seed("chunking", b"\x40" + filler)
seed("revision", bytes.fromhex(enc["revision"]["hex"]))

# revision: paths in both cases, for the case-clash rule (a clash, and none).
def revision(paths):
    out = b"FRV1" + b"\x00"
    for s in (b"fuzz",):
        out += len(s).to_bytes(4, "little") + s
    out += (0).to_bytes(8, "little") + (1).to_bytes(4, "little") + b"m"
    out += len(paths).to_bytes(4, "little")
    for p in sorted(p.encode() for p in paths):
        out += len(p).to_bytes(4, "little") + p + bytes(32) + (1).to_bytes(8, "little") + b"\x00"
    return out
seed("revision", revision(["Config.json", "model/Layer-0.bin", "model/layer-1.bin"]))
seed("revision", revision(["Model.bin", "model.bin"]))
seed("revision", revision(["A", "a/b"]))

# frames: split byte, then a stream of frames; each vector alone and all together.
frames = [bytes.fromhex(v["hex"]) for v in wire if "hex" in v]
for i, f in enumerate(frames):
    seed("frames", bytes([i]) + f)
seed("frames", b"\x07" + b"".join(frames))

# negotiate: decision tapes (roots, batch, answers, nodes...).
seed("negotiate", b"")
seed("negotiate", bytes([1, 0, 8, 0, 0, 2, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
seed("negotiate", bytes([3, 1, 2, 3, 255, 0, 0, 0, 0, 0, 2, 16] + list(range(64))))

# transfer: world bytes then answer choices; an empty tape is all honest,
# and every golden frame once as a hostile answer (0xf0, kind, len, payload).
seed("transfer", b"")
seed("transfer", bytes([2, 9] + list(range(18)) + [1, 1, 4, 0, 7, 2, 3]))
for f in frames:
    seed("transfer", bytes([1, 4, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0, f[0], len(f) - 5 & 0xff, len(f) - 5 >> 8 & 0xff]) + f[5:])

# access_file: token length, token, JSON. "fy_ab_" has secret "" whose
# BLAKE3 is the hash below, so `check` succeeds on it.
empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
doc = {"tokens": [{"id": "ab", "hash": empty, "repo": "org/*", "scope": "write", "created": 0},
                  {"id": "cd", "hash": empty, "repo": "{a,b}/**", "scope": "read", "created": 1}],
       "public": ["pub/*", "[a-z]?/m"]}
for tok in (b"fy_ab_", b"fy_cd_", b"fy_ab_x"):
    seed("access_file", bytes([len(tok)]) + tok + json.dumps(doc).encode())
seed("access_file", b"\x00{}")

# store_formats: 0 then a pack, 1 then a journal entry, 2 then an
# announcement, 3 then a retirement.
seed("store_formats", b"\x00" + bytes.fromhex(store["pack"]["hex"]))
seed("store_formats", b"\x01" + bytes.fromhex(store["journal_entry"]["hex"]))
seed("store_formats", b"\x01" + bytes.fromhex(store["journal_entry_forgotten"]["hex"]))
seed("store_formats", b"\x02" + bytes.fromhex(store["announcement"]["hex"]))
seed("store_formats", b"\x03" + bytes.fromhex(store["retirement"]["hex"]))

# http_door: flags (method in bits 0-2: GET HEAD POST PUT DELETE; +8 write
# token, +16 read token), the target, headers, an empty line, the body:
# the requests huggingface_hub, git-lfs and a hub server make.
def http(flags, target, headers=(), body=b""):
    seed("http_door", bytes([flags]) + target.encode() + b"\n" + b"".join(h.encode() + b"\n" for h in headers) + b"\n" + body)
zero = "0" * 64
http(16, "/api/models/org/demo")
http(16, "/api/models/org/demo/revision/main")
http(16, "/api/models/org/demo/tree/main?recursive=true")
http(17, "/org/demo/resolve/main/model.bin")
http(16, "/org/demo/resolve/main/model.bin", ["Range: bytes=5-100"])
http(16, "/org/demo/resolve/main/model.bin", ["Range: bytes=-10"])
http(16, "/datasets/org/demo/resolve/main/model.bin", ["Range: bytes=99999-"])
http(16, "/api/models/org/demo/refs")
http(8 | 2, "/api/models/org/demo/preupload/main", ["Content-Type: application/json"],
     json.dumps({"files": [{"path": "a.bin", "size": 3, "sample": "YWJj"}]}).encode())
http(8 | 2, "/api/models/org/demo/commit/main", ["Content-Type: application/x-ndjson"],
     b'{"key":"header","value":{"summary":"s","description":""}}\n'
     b'{"key":"file","value":{"path":"c.json","content":"e30=","encoding":"base64"}}\n'
     b'{"key":"deletedFile","value":{"path":"model.bin"}}\n')
http(8 | 2, "/org/demo.git/info/lfs/objects/batch", ["Content-Type: application/vnd.git-lfs+json"],
     json.dumps({"operation": "upload", "transfers": ["basic"], "objects": [{"oid": zero, "size": 10}]}).encode())
http(8 | 2, "/org/demo/info/lfs/objects/batch", ["Content-Type: application/vnd.git-lfs+json"],
     json.dumps({"operation": "download", "objects": [{"oid": zero, "size": 10}]}).encode())
http(8 | 3, "/org/demo/info/lfs/objects/" + zero, [], b"0123456789")
http(8 | 2, "/api/repos/create", ["Content-Type: application/json"], json.dumps({"name": "new", "organization": "org", "type": "model"}).encode())
http(16, "/v1/repos?pattern=org/*&since=00:0&wait=0")
http(16, "/v1/repos/org/demo/revisions/main")
http(16, "/v1/repos/org/demo/history/main?max=5")
http(8 | 2, "/v1/repos/org/demo/files", [], b"weights")
http(8 | 2, "/v1/repos/org/demo/commits", ["Content-Type: application/json"],
     json.dumps({"branch": "b", "expected": None, "message": "m", "files": {"x": zero}, "delete": []}).encode())
http(8 | 4, "/v1/repos/org/demo/branches/b?expected=" + zero)
http(8 | 4, "/v1/repos/org/demo")
http(0, "/metrics")
http(16, "/api/models/org/demo/xet-write-token/main")
http(8 | 2, "/org/demo/info/lfs/locks/verify", [], b"{}")

# Inputs that once crashed a target are replayed first, on every run.
reg = os.path.join(fuzz, "regressions")
for t in sorted(os.listdir(reg)) if os.path.isdir(reg) else []:
    for name in sorted(os.listdir(os.path.join(reg, t))):
        seed(t, open(os.path.join(reg, t, name), "rb").read())

print("seeded: " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
PY
