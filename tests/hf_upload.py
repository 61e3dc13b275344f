"""huggingface_hub, unmodified, uploading to a ferry hub's HTTP door.

Usage: hf_upload.py ENDPOINT REPO FOLDER TOKEN [xet]

Creates REPO (twice: the second answers "exists"), uploads FOLDER, then a
second version of it, makes a branch and a tag, and tries a commit on a
stale parent; downloads each version back and compares. With `xet`, Xet is left
on as huggingface_hub installs it (only small files then go through).
Prints one JSON object of what it saw.
"""

import filecmp
import json
import os
import shutil
import sys
import tempfile

ENDPOINT, REPO, FOLDER, TOKEN = sys.argv[1:5]
XET = len(sys.argv) > 5 and sys.argv[5] == "xet"
os.environ.update(HF_HOME=tempfile.mkdtemp(), HF_ENDPOINT=ENDPOINT, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_IMPLICIT_TOKEN="1")
if not XET:
    os.environ["HF_HUB_DISABLE_XET"] = "1"

import huggingface_hub as hub  # noqa: E402  (the environment first)


def same_tree(want_dir, got_dir):
    want = sorted(os.path.relpath(os.path.join(d, f), want_dir) for d, _, fs in os.walk(want_dir) for f in fs)
    for rel in want:
        if not filecmp.cmp(os.path.join(want_dir, rel), os.path.join(got_dir, rel), shallow=False):
            return f"{rel} differs"
    return want


api = hub.HfApi(endpoint=ENDPOINT, token=TOKEN)
out = {}
out["created"] = str(api.create_repo(REPO, exist_ok=True))
out["created_again"] = str(api.create_repo(REPO, exist_ok=True))
first = api.upload_folder(repo_id=REPO, folder_path=FOLDER, commit_message="first upload")
out["first"] = first.oid
out["first_download"] = same_tree(FOLDER, hub.snapshot_download(REPO, endpoint=ENDPOINT, token=TOKEN))
info = api.model_info(REPO, files_metadata=True)
out["lfs"] = {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs}

# The second version: one file changed, one added, one deleted.
second_dir = tempfile.mkdtemp()
shutil.copytree(FOLDER, second_dir, dirs_exist_ok=True)
with open(os.path.join(second_dir, "config.json"), "w") as f:
    f.write('{"hidden": 8192}\n')
with open(os.path.join(second_dir, "added.txt"), "w") as f:
    f.write("new in the second version\n")
second = api.upload_folder(repo_id=REPO, folder_path=second_dir, commit_message="second upload")
api.delete_file("added.txt", repo_id=REPO, commit_message="take it back")
os.remove(os.path.join(second_dir, "added.txt"))
out["second_download"] = same_tree(second_dir, hub.snapshot_download(REPO, endpoint=ENDPOINT, token=TOKEN, cache_dir=tempfile.mkdtemp()))
out["first_still"] = same_tree(FOLDER, hub.snapshot_download(REPO, revision=first.oid, endpoint=ENDPOINT, token=TOKEN,
                                                               cache_dir=tempfile.mkdtemp()))

# A branch, and a commit on it.
api.create_branch(REPO, branch="experiment", revision=first.oid)
api.upload_file(path_or_fileobj=b"only on the branch\n", path_in_repo="branch.txt", repo_id=REPO, revision="experiment")
out["branch_files"] = sorted(api.list_repo_files(REPO, revision="experiment"))
out["refs"] = sorted(b.name for b in api.list_repo_refs(REPO).branches)

# A tag on the first version: listed as a tag, readable by its name; only
# an admin may delete it (the token here writes).
api.create_tag(REPO, tag="v1.0", revision=first.oid)
api.create_tag(REPO, tag="v1.0", revision=first.oid, exist_ok=True)
out["tags"] = sorted(t.name for t in api.list_repo_refs(REPO).tags)
out["tag_download"] = same_tree(FOLDER, hub.snapshot_download(REPO, revision="v1.0", endpoint=ENDPOINT, token=TOKEN,
                                                              cache_dir=tempfile.mkdtemp()))
try:
    api.delete_tag(REPO, tag="v1.0")
    out["tag_deleted_by_writer"] = None
except Exception as e:
    out["tag_deleted_by_writer"] = getattr(getattr(e, "response", None), "status_code", type(e).__name__)
out["main_files"] = sorted(api.list_repo_files(REPO))

# A commit whose parent is no longer the head is refused.
try:
    api.create_commit(REPO, operations=[hub.CommitOperationAdd("late.txt", b"late\n")], commit_message="late",
                      parent_commit=first.oid)
    out["stale_parent"] = None
except Exception as e:
    out["stale_parent"] = getattr(getattr(e, "response", None), "status_code", type(e).__name__)
print(json.dumps(out))
