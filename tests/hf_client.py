"""huggingface_hub, unmodified, against a ferry hub's HTTP door.

Usage: hf_client.py ENDPOINT REPO SOURCE_DIR [TOKEN]

Downloads REPO every way the library offers and compares each file with
SOURCE_DIR; asks for what is not there; prints one JSON object of what it
saw. The test that runs it asserts on that object.
"""

import filecmp
import json
import os
import sys
import tempfile

ENDPOINT, REPO, SOURCE = sys.argv[1], sys.argv[2], sys.argv[3]
TOKEN = sys.argv[4] if len(sys.argv) > 4 else None
HOME = tempfile.mkdtemp()
os.environ.update(HF_HOME=HOME, HF_ENDPOINT=ENDPOINT, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
                  HF_HUB_DISABLE_IMPLICIT_TOKEN="1")

import huggingface_hub as hub  # noqa: E402  (the environment first)


def same_tree(got):
    want = sorted(os.path.relpath(os.path.join(d, f), SOURCE) for d, _, fs in os.walk(SOURCE) for f in fs)
    for rel in want:
        if not filecmp.cmp(os.path.join(SOURCE, rel), os.path.join(got, rel), shallow=False):
            return f"{rel} differs"
    return want


def error_of(f):
    try:
        f()
        return None
    except Exception as e:  # the class name is what a user's code catches
        return type(e).__name__


out = {"version": hub.__version__}
api = hub.HfApi(endpoint=ENDPOINT, token=TOKEN)
info = api.model_info(REPO, files_metadata=True)
out["sha"] = info.sha
out["siblings"] = {s.rfilename: s.size for s in info.siblings}
out["files"] = sorted(api.list_repo_files(REPO))
out["snapshot"] = same_tree(hub.snapshot_download(REPO, endpoint=ENDPOINT, token=TOKEN))
out["by_commit"] = same_tree(hub.snapshot_download(REPO, revision=info.sha, endpoint=ENDPOINT, token=TOKEN,
                                                   cache_dir=tempfile.mkdtemp()))
local = tempfile.mkdtemp()
for f in out["files"]:
    hub.hf_hub_download(REPO, f, endpoint=ENDPOINT, token=TOKEN, local_dir=local)
out["local_dir"] = same_tree(local)
out["dataset"] = same_tree(hub.snapshot_download(REPO, repo_type="dataset", endpoint=ENDPOINT, token=TOKEN))
out["missing_file"] = error_of(lambda: hub.hf_hub_download(REPO, "no/such.bin", endpoint=ENDPOINT, token=TOKEN))
out["missing_revision"] = error_of(lambda: hub.hf_hub_download(REPO, out["files"][0], revision="no-such-branch",
                                                                 endpoint=ENDPOINT, token=TOKEN))
out["missing_repo"] = error_of(lambda: hub.model_info("nobody/nothing", token=TOKEN))
infos = api.get_paths_info(REPO, ["config.json", "sub", "no/such.bin"])
out["paths_info"] = [[type(i).__name__, i.path] for i in infos]
print(json.dumps(out))
