#!/usr/bin/python3
"""Tables and plots for bench/peers.sh.

    peers_report.py RESULTS.jsonl --out DIR --label LABEL

Reads the JSON lines peers.sh wrote (one per scenario, system and version),
writes DIR/peers-LABEL.jsonl (those lines plus one "summary" line per
scenario and system), DIR/peers-LABEL.md (the tables, also printed on
stdout), DIR/peers-LABEL-bytes.png and DIR/peers-LABEL-throughput.png.

A scenario's figures are those of its new version (v1); for the checkpoints,
the mean over v1..v9. "initial" is the first upload of the model (v0 of the
scenarios that start from the same single-file model; medians of their
timings). Needs only Debian's python3 and python3-matplotlib.
"""

import argparse
import json
import os
import statistics
import sys

SCENARIOS = ["initial", "rename", "partial", "header", "full", "small-step", "adapter", "dataset", "reshard", "checkpoints"]
SAME_V0 = ["rename", "partial", "header", "full", "small-step", "adapter", "checkpoints"]
PEERS = ["rsync", "casync", "restic", "borg", "zstd", "whole"]
SYSTEMS = ["ferry", "ferry-disk"] + PEERS + ["b3sum", "dd"]
LABELS = {
    "ferry": "ferry",
    "ferry-disk": "ferry, store on disk",
    "rsync": "rsync daemon",
    "casync": "casync",
    "restic": "restic",
    "borg": "borg",
    "zstd": "zstd --patch-from",
    "whole": "whole file (Git LFS)",
    "b3sum": "b3sum",
    "dd": "dd fdatasync",
}
MIB = 1 << 20


def mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def load(path):
    lines = [json.loads(line) for line in open(path) if line.strip()]
    versions = [x for x in lines if x.get("kind") == "version"]
    # The store on disk, as its own system: ferry's new and total bytes by du.
    for x in [x for x in versions if x["system"] == "ferry"]:
        d = dict(x, system="ferry-disk", new_stored_bytes=x["disk_new_bytes"], total_stored_bytes=x["disk_total_bytes"], wire_bytes=None)
        d.update({k: None for k in ("ingest_s", "transfer_s", "ingest_rss_kib", "transfer_rss_kib", "other_cpu", "negotiation_bytes")})
        versions.append(d)
    return lines, versions


def summarise(versions, servers):
    by = {}
    for x in versions:
        by.setdefault((x["scenario"], x["system"]), []).append(x)
    out = []
    for (scn, sys_), xs in by.items():
        xs.sort(key=lambda x: x["version"])
        new = [x for x in xs if x["version"] >= 1]
        if new:
            out.append(summary(scn, sys_, new, xs, servers.get((scn, sys_))))
    # The first upload of the model, from every scenario that starts with it.
    for sys_ in {x["system"] for x in versions}:
        v0 = [x for x in versions if x["system"] == sys_ and x["version"] == 0 and x["scenario"] in SAME_V0]
        if v0:
            out.append(summary("initial", sys_, v0, v0[:1], None, agg=median))
    order = {(s, y): (SCENARIOS.index(s), SYSTEMS.index(y)) for s in SCENARIOS for y in SYSTEMS}
    out.sort(key=lambda r: order.get((r["scenario"], r["system"]), (99, 99)))
    return out


def summary(scn, sys_, new, every, server_rss, agg=mean):
    def f(key, xs=new, how=agg):
        return how([x.get(key) for x in xs])

    b = f("bytes")
    r = {"kind": "summary", "scenario": scn, "system": sys_, "versions": len(new), "bytes": b, "changed_bytes": f("changed_bytes")}
    for key in ["new_stored_bytes", "wire_bytes", "ingest_s", "transfer_s", "other_cpu", "negotiation_bytes", "disk_new_bytes"]:
        r[key] = f(key)
    r["total_stored_bytes"] = every[-1].get("total_stored_bytes")
    r["disk_total_bytes"] = every[-1].get("disk_total_bytes")
    r["total_bytes"] = sum(x["bytes"] for x in every)
    for key in ["new_stored", "wire", "changed"]:
        v = r.get(key + "_bytes")
        r[key + "_pct"] = None if v is None or not b else 100.0 * v / b
    for key in ["ingest", "transfer"]:
        s = r[key + "_s"]
        r[key + "_mb_s"] = b / s / 1e6 if s else None
    rss = [x.get(k) for x in new for k in ("ingest_rss_kib", "transfer_rss_kib")]
    r["peak_rss_kib"] = max([x for x in rss if x is not None], default=None)
    if server_rss is not None:
        r["server_rss_kib"] = server_rss
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if v is not None or not k.startswith(("disk_", "negotiation"))}


def fmt_mib(b, total=None):
    """MiB, or KiB or bytes (with the unit) when that small."""
    if b is None:
        return "—"
    if b < 10 * 1024:
        s = f"{b:.0f} B"
    elif b < MIB:
        s = f"{b / 1024:.0f} KiB"
    else:
        s = f"{b / MIB:.2f}" if b < 10 * MIB else f"{b / MIB:.1f}"
    if total:
        p = 100.0 * b / total
        s += f" ({p:.3f}%)" if p < 0.1 else f" ({p:.1f}%)"
    return s


def fmt_size(b):
    """Like fmt_mib, always with a unit."""
    s = fmt_mib(b)
    return s if s.endswith("B") or s == "—" else s + " MiB"


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def get(rows, scn, sys_):
    for r in rows:
        if r["scenario"] == scn and r["system"] == sys_:
            return r
    return None


def tables(machine, end, rows, lines):
    out = []
    m = machine or {}
    out.append(f"Run `{m.get('label', '?')}` of {m.get('date', '?')}: {m.get('size_mib', '?')} MiB per model/dataset version, ferry {m.get('ferry', '?')}.")
    out.append(
        f"Machine: {m.get('cpu', '?')}, {m.get('nproc', '?')} cores, {m.get('mem_gib', '?')} GiB, {m.get('fstype', '?')} on {m.get('device', '?')}, kernel {m.get('kernel', '?')}."
    )
    t = m.get("tools", {})
    out.append("Peers: " + ", ".join(f"{k} {v}" for k, v in t.items()) + ".")
    others = [x.get("other_cpu") for x in lines if x.get("kind") == "version" and x.get("other_cpu") is not None]
    if others and end:
        out.append(
            f"Noise: other work used {statistics.fmean(others):.2f} cores on average during the measured steps (max {max(others):.2f}); "
            f"CPU pressure (some, avg60) {m.get('psi_some_avg60_start')}% at the start, {end.get('psi_some_avg60_end')}% at the end; "
            f"load {m.get('load_start')} → {end.get('load_end')}; the run took {end['seconds'] / 60:.1f} min."
        )
    out.append("")
    out.append("**New version: bytes stored and sent**, MiB (% of the version). Ground truth: the bytes that really changed.")
    out.append("")
    cols = [
        ("ferry stored", "ferry", "new_stored_bytes"),
        ("ferry on disk", "ferry-disk", "new_stored_bytes"),
        ("ferry wire", "ferry", "wire_bytes"),
        ("rsync wire", "rsync", "wire_bytes"),
        ("casync", "casync", "new_stored_bytes"),
        ("restic", "restic", "new_stored_bytes"),
        ("borg", "borg", "new_stored_bytes"),
        ("zstd patch", "zstd", "new_stored_bytes"),
        ("whole file", "whole", "wire_bytes"),
    ]
    out.append("| scenario | version MiB | ground truth | " + " | ".join(c[0] for c in cols) + " |")
    out.append("|---|---:|---:|" + "---:|" * len(cols))
    for scn in SCENARIOS:
        f = get(rows, scn, "ferry")
        if not f:
            continue
        cells = [fmt_mib(f["bytes"]), fmt_mib(f["changed_bytes"], f["bytes"])]
        for _, sys_, key in cols:
            r = get(rows, scn, sys_)
            cells.append(fmt_mib(r and r[key], r and r["bytes"]))
        out.append(f"| {scn} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("**Every scenario and system.** Times are per version (checkpoints: the mean of v1..v9); MB/s = version bytes ÷ time.")
    out.append("")
    out.append(
        "| scenario | system | new stored MiB (%) | wire MiB (%) | total stored MiB (of logical) | ingest s | transfer s | ingest MB/s | transfer MB/s | peak RSS MiB | other load |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        total = r["total_stored_bytes"]
        of = "" if total is None else " (of {:.0f})".format(r["total_bytes"] / MIB)
        out.append(
            f"| {r['scenario']} | {LABELS.get(r['system'], r['system'])} | {fmt_mib(r['new_stored_bytes'], r['bytes'])} | {fmt_mib(r['wire_bytes'], r['bytes'])} | "
            f"{fmt_mib(total)}{of} | {fmt(r['ingest_s'], '.2f')} | {fmt(r['transfer_s'], '.2f')} | "
            f"{fmt(r['ingest_mb_s'], '.0f')} | {fmt(r['transfer_mb_s'], '.0f')} | {fmt(r['peak_rss_kib'] and r['peak_rss_kib'] / 1024, '.0f')} | {fmt(r['other_cpu'], '.2f')} |"
        )
    servers = [x for x in lines if x.get("kind") == "server"]
    if servers:
        out.append("")
        out.append(f"ferry hub peak RSS: {max(x['server_rss_kib'] for x in servers) / 1024:.0f} MiB (the largest over all scenarios; rsync's daemon is not measured).")
    out.append("")
    out.append("**ferry against the hardware references and rsync**, same run. Commit = ingest into the local store; push = transfer to the hub on loopback.")
    out.append("")
    out.append("| scenario | commit MB/s | b3sum MB/s | dd MB/s | commit ÷ b3sum | commit ÷ dd | push MB/s | commit + push s | rsync s | ferry ÷ rsync time |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scn in SCENARIOS:
        f, b3, dd, rs = (get(rows, scn, s) for s in ("ferry", "b3sum", "dd", "rsync"))
        if not (f and b3 and dd and rs):
            continue
        both = f["ingest_s"] + f["transfer_s"]
        out.append(
            f"| {scn} | {f['ingest_mb_s']:.0f} | {b3['ingest_mb_s']:.0f} | {dd['ingest_mb_s']:.0f} | {f['ingest_mb_s'] / b3['ingest_mb_s']:.2f} | "
            f"{f['ingest_mb_s'] / dd['ingest_mb_s']:.2f} | {f['transfer_mb_s']:.0f} | {both:.2f} | {rs['transfer_s']:.2f} | {both / rs['transfer_s']:.2f} |"
        )
    out.append("")
    out.append("**Where ferry is behind a peer** (bytes: more than 1% and 4 KiB more; time and memory: more than 10% more):")
    out.append("")
    behind = behind_rows(rows)
    out.extend(f"- {b}" for b in behind or ["nowhere"])
    return "\n".join(out) + "\n"


def behind_rows(rows):
    found = []
    for scn in SCENARIOS:
        f = get(rows, scn, "ferry")
        if not f:
            continue
        checks = [
            ("new bytes stored", "new_stored_bytes", "new_stored_bytes", ["casync", "restic", "borg", "zstd"], 1.01, 4096, fmt_size, ""),
            ("new bytes on disk (du)", "disk_new_bytes", "new_stored_bytes", ["casync", "restic", "borg", "zstd"], 1.01, 4096, fmt_size, ""),
            ("total stored", "total_stored_bytes", "total_stored_bytes", ["casync", "restic", "borg", "zstd"], 1.01, 4096, fmt_size, ""),
            ("total on disk (du)", "disk_total_bytes", "total_stored_bytes", ["casync", "restic", "borg", "zstd"], 1.01, 4096, fmt_size, ""),
            ("bytes on the wire", "wire_bytes", "wire_bytes", ["rsync", "casync", "restic", "borg", "zstd"], 1.01, 4096, fmt_size, ""),
            ("ingest time (commit)", "ingest_s", "ingest_s", ["casync", "restic", "borg", "zstd"], 1.10, 0.0, lambda v: f"{v:.2f}", " s"),
            ("transfer time (push)", "transfer_s", "transfer_s", ["rsync", "whole"], 1.10, 0.0, lambda v: f"{v:.2f}", " s"),
            ("peak RSS", "peak_rss_kib", "peak_rss_kib", PEERS, 1.10, 0, lambda v: f"{v / 1024:.0f}", " MiB"),
        ]
        for what, fk, pk, peers, ratio, slack, show, unit in checks:
            mine = f.get(fk)
            ahead = []
            for p in peers:
                r = get(rows, scn, p)
                theirs = r and r.get(pk)
                if mine is None or theirs is None:
                    continue
                if mine > theirs * ratio and mine - theirs > slack:
                    ahead.append(f"{LABELS[p]} {show(theirs)}" + (f" ({mine / theirs:.2f} ×)" if theirs else ""))
            if ahead:
                found.append(f"{scn}, {what}: ferry {show(mine)}{unit}; " + ", ".join(ahead))
    return found


def plots(rows, versions, out, label):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scns = [s for s in SCENARIOS if get(rows, s, "ferry")]
    colors = {
        "ferry": "#d62728",
        "ferry wire": "#ff9896",
        "rsync": "#1f77b4",
        "casync": "#2ca02c",
        "restic": "#9467bd",
        "borg": "#8c564b",
        "zstd": "#7f7f7f",
        "whole": "#bcbd22",
        "b3sum": "#17becf",
        "dd": "#000000",
        "ferry push": "#ff9896",
    }
    floor = 1e-4
    # Bytes: per scenario, and the checkpoint series.
    series = [
        ("ferry", "ferry", "new_stored_bytes", "ferry stored"),
        ("ferry wire", "ferry", "wire_bytes", "ferry wire"),
        ("rsync", "rsync", "wire_bytes", "rsync wire"),
        ("casync", "casync", "new_stored_bytes", "casync"),
        ("restic", "restic", "new_stored_bytes", "restic"),
        ("borg", "borg", "new_stored_bytes", "borg"),
        ("zstd", "zstd", "new_stored_bytes", "zstd --patch-from"),
        ("whole", "whole", "wire_bytes", "whole file"),
    ]
    ck = [x for x in versions if x["scenario"] == "checkpoints"]
    if ck:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 7), gridspec_kw={"width_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(9, 7))
    h = 0.8 / len(series)
    for j, (c, sys_, key, name) in enumerate(series):
        ys, xs = [], []
        for i, scn in enumerate(scns):
            r = get(rows, scn, sys_)
            if r and r.get(key) is not None:
                ys.append(i + (j - len(series) / 2 + 0.5) * h)
                xs.append(max(100.0 * r[key] / r["bytes"], floor))
        ax.barh(ys, xs, height=h, color=colors[c], label=name)
    for i, scn in enumerate(scns):
        f = get(rows, scn, "ferry")
        ax.plot([max(f["changed_pct"], floor)] * 2, [i - 0.45, i + 0.45], color="black", lw=1.5)
    ax.plot([], [], color="black", lw=1.5, label="ground truth")
    ax.set_xscale("log")
    ax.set_xlim(floor, 200)
    ax.set_yticks(range(len(scns)), scns)
    ax.invert_yaxis()
    ax.set_xlabel("bytes for the new version, % of its size (log; 0 drawn at 0.0001%)", fontsize=9)
    ax.set_title("What a new version costs")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.09))
    ax.grid(axis="x", which="major", alpha=0.3)
    if ck:
        for c, sys_, name in [("ferry", "ferry", "ferry"), ("casync", "casync", "casync"), ("restic", "restic", "restic"), ("borg", "borg", "borg"), ("zstd", "zstd", "zstd --patch-from"), ("whole", "whole", "whole files")]:
            xs = sorted((x["version"], x["total_stored_bytes"] / MIB) for x in ck if x["system"] == sys_ and x.get("total_stored_bytes") is not None)
            if xs:
                # ferry wide and underneath: where it equals a peer, both stay visible.
                wide = dict(lw=5, alpha=0.5, zorder=1) if sys_ == "ferry" else dict(lw=1.5, zorder=2)
                ax2.plot([v for v, _ in xs], [t for _, t in xs], marker="o", ms=3, color=colors[c], label=name, **wide)
        truth = sorted((x["version"], x["changed_bytes"]) for x in ck if x["system"] == "ferry")
        acc, pts = 0, []
        for v, ch in truth:
            acc += ch
            pts.append((v, acc / MIB))
        ax2.plot([v for v, _ in pts], [t for _, t in pts], color="black", ls="--", label="ground truth (sum)")
        ax2.set_xlabel("checkpoint")
        ax2.set_ylabel("total stored, MiB")
        ax2.set_title("Ten checkpoints: total stored")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"peers-{label}-bytes.png"), dpi=80)
    plt.close(fig)

    # Throughput: per scenario, every system's ingest or transfer rate.
    tseries = [
        ("ferry", "ferry", "ingest_mb_s", "ferry commit"),
        ("ferry push", "ferry", "transfer_mb_s", "ferry push"),
        ("rsync", "rsync", "transfer_mb_s", "rsync (delta)"),
        ("whole", "whole", "transfer_mb_s", "rsync --whole-file"),
        ("casync", "casync", "ingest_mb_s", "casync make"),
        ("restic", "restic", "ingest_mb_s", "restic backup"),
        ("borg", "borg", "ingest_mb_s", "borg create"),
        ("zstd", "zstd", "ingest_mb_s", "zstd --patch-from"),
        ("b3sum", "b3sum", "ingest_mb_s", "b3sum"),
        ("dd", "dd", "ingest_mb_s", "dd fdatasync"),
    ]
    fig, ax = plt.subplots(figsize=(13, 5.5))
    w = 0.85 / len(tseries)
    for j, (c, sys_, key, name) in enumerate(tseries):
        xs, ys = [], []
        for i, scn in enumerate(scns):
            r = get(rows, scn, sys_)
            if r and r.get(key):
                xs.append(i + (j - len(tseries) / 2 + 0.5) * w)
                ys.append(r[key])
        ax.bar(xs, ys, width=w, color=colors[c], label=name, hatch="//" if c == "ferry push" else None, edgecolor="white" if c != "ferry push" else "#d62728")
    ax.set_yscale("log")
    ax.set_xticks(range(len(scns)), scns)
    ax.set_ylabel("MB/s of the version's bytes (log)")
    ax.set_title("Ingest and transfer throughput per version (same run, same machine)")
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"peers-{label}-throughput.png"), dpi=80)
    plt.close(fig)


def check_complete(lines, versions):
    """Every system measured every version of every scenario, or no report."""
    truth = {(x["scenario"], x["version"]) for x in lines if x.get("kind") == "truth"}
    have = {(x["scenario"], x["version"], x["system"]) for x in versions}
    expected = set(SYSTEMS) - {"ferry-disk"}
    for scn in {s for s, _ in truth}:
        big = any(x.get("scenario") == scn and x.get("bytes", 0) > 1900 * MIB for x in lines if x.get("kind") == "truth")
        for s, v in truth:
            if s != scn:
                continue
            missing = [y for y in expected if (s, v, y) not in have and not (y == "zstd" and big)]
            if missing:
                sys.exit(f"peers_report.py: {s} v{v} has no figures for {', '.join(sorted(missing))}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--out", required=True)
    ap.add_argument("--label", required=True)
    a = ap.parse_args()
    lines, versions = load(a.results)
    machine = next((x for x in lines if x.get("kind") == "machine"), None)
    end = next((x for x in lines if x.get("kind") == "end"), None)
    servers = {(x["scenario"], x["system"]): x["server_rss_kib"] for x in lines if x.get("kind") == "server"}
    check_complete(lines, versions)
    rows = summarise(versions, servers)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"peers-{a.label}.jsonl"), "w") as f:
        for x in lines + rows:
            f.write(json.dumps(x, separators=(",", ":")) + "\n")
    md = tables(machine, end, rows, lines)
    with open(os.path.join(a.out, f"peers-{a.label}.md"), "w") as f:
        f.write(md)
    plots(rows, [x for x in versions if x["system"] != "ferry-disk"], a.out, a.label)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
