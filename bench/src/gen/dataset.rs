//! The dataset scenario: a JSONL file of realistic-looking rows (ids,
//! uuids, timestamps, categorical fields, scores, English-like text), and a
//! revision of it with rows appended and a few edited in the middle.
//!
//! Ground truth of v1: the bytes of the rows of the new file that are not
//! byte-identical to the row at the same index in the old file (newline
//! included), i.e. the edited rows as they now read plus the appended rows.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::scenario::Truth;
use crate::weights::Rng;

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "model",
    "data",
    "training",
    "results",
    "time",
    "people",
    "system",
    "first",
    "new",
    "used",
    "two",
    "may",
    "after",
    "between",
    "however",
    "only",
    "also",
    "other",
    "than",
    "such",
    "into",
    "each",
    "these",
    "some",
    "could",
    "while",
    "where",
    "most",
    "number",
    "language",
    "network",
    "paper",
    "method",
    "learning",
    "performance",
    "error",
    "value",
    "function",
    "question",
    "answer",
    "problem",
    "example",
    "research",
    "large",
    "small",
    "different",
    "important",
    "following",
    "process",
    "information",
    "approach",
    "analysis",
    "should",
    "because",
    "during",
    "through",
    "before",
    "under",
    "several",
    "without",
    "within",
    "report",
    "study",
    "evidence",
    "history",
    "water",
    "city",
    "world",
    "government",
    "company",
    "market",
    "school",
    "family",
    "health",
    "service",
    "program",
    "software",
    "version",
    "release",
    "update",
    "server",
    "memory",
    "layer",
    "weights",
    "gradient",
    "batch",
    "token",
    "sequence",
    "attention",
    "output",
    "input",
    "loss",
    "accuracy",
    "benchmark",
    "dataset",
    "evaluation",
    "baseline",
    "user",
    "page",
    "file",
    "code",
    "library",
    "support",
    "issue",
    "change",
    "build",
    "test",
    "value",
    "region",
    "century",
    "music",
    "river",
    "early",
    "later",
    "known",
    "called",
    "based",
    "found",
    "made",
    "including",
    "against",
    "around",
    "second",
    "third",
    "year",
    "years",
    "many",
    "much",
    "very",
    "still",
    "well",
    "even",
    "back",
    "over",
    "state",
    "national",
    "public",
    "local",
    "general",
    "original",
    "similar",
    "simple",
    "better",
    "best",
    "high",
    "low",
    "long",
    "short",
    "open",
    "closed",
    "fast",
    "slow",
    "clear",
    "likely",
    "possible",
    "available",
    "recent",
];
const SOURCES: &[&str] = &["web", "books", "forum", "wiki", "news", "code-comments", "qa"];
const LABELS: &[&str] = &["positive", "neutral", "negative"];
const TAG_ROW: u64 = 0xDA7A;
const TAG_ID: u64 = 0x1D;
/// Rows edited in the middle third of the file.
const EDITED_ROWS: u64 = 10;
/// Bytes appended, as a fraction of v0.
const APPENDED: f64 = 0.05;

use ferry_core::time::civil_from_days as civil;

/// Row `id` as revision `revision` of its content: the id, uuid, time and
/// source stay, the text, label and score change with the revision.
pub fn row(seed: u64, id: u64, revision: u64, out: &mut Vec<u8>) {
    let mut fixed = Rng::stream(&[seed, id, TAG_ID]);
    let (u1, u2) = (fixed.next(), fixed.next());
    let t = 1_672_531_200 + id as i64 * 41 + fixed.below(40) as i64;
    let (y, mo, d) = civil(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    let source = SOURCES[fixed.below(SOURCES.len() as u64) as usize];
    let mut r = Rng::stream(&[seed, id, revision, TAG_ROW]);
    let label = LABELS[r.below(LABELS.len() as u64) as usize];
    let score = r.below(10_000);
    let words = 12 + r.below(100);
    let _ = write!(
        out,
        r#"{{"id":{id},"uuid":"{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}","created":"{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z","source":"{source}","lang":"en","label":"{label}","score":0.{score:04},"tokens":{},"text":""#,
        u1 >> 32,
        (u1 >> 16) & 0xFFFF,
        u1 & 0xFFF,
        0x8000 | ((u2 >> 48) & 0x3FFF),
        u2 & 0xFFFF_FFFF_FFFF,
        s / 3600,
        s / 60 % 60,
        s % 60,
        words * 13 / 10
    );
    let mut sentence_left = 0;
    for w in 0..words {
        let u = (r.next() >> 11) as f64 / (1u64 << 53) as f64;
        let word = WORDS[((u * u) * WORDS.len() as f64) as usize];
        if sentence_left == 0 {
            if w > 0 {
                out.extend_from_slice(b". ");
            }
            let mut cs = word.chars();
            if let Some(c) = cs.next() {
                out.extend(c.to_uppercase().to_string().bytes());
                out.extend_from_slice(cs.as_str().as_bytes());
            }
            sentence_left = 5 + r.below(14);
        } else {
            out.extend_from_slice(if r.below(12) == 0 { b", " } else { b" " });
            out.extend_from_slice(word.as_bytes());
        }
        sentence_left -= 1;
    }
    out.extend_from_slice(b".\"}\n");
}

/// Writes `out/v0/data.jsonl` (about `size_mib` MiB) and `out/v1/data.jsonl`.
pub fn write(size_mib: u64, seed: u64, out: &Path) -> Result<Vec<Truth>> {
    let target = size_mib << 20;
    let open = |k: u32| -> Result<std::io::BufWriter<std::fs::File>> {
        let dir = out.join(format!("v{k}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join("data.jsonl");
        Ok(std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?))
    };
    // Rows up to the target size; which of them are edited is known only
    // once their number is, so v0 is written first, then v1 from the same rows.
    let mut v0 = open(0)?;
    let mut buf = Vec::with_capacity(4096);
    let (mut rows, mut bytes0) = (0u64, 0u64);
    while bytes0 < target {
        buf.clear();
        row(seed, rows, 0, &mut buf);
        v0.write_all(&buf)?;
        bytes0 += buf.len() as u64;
        rows += 1;
    }
    v0.flush()?;
    let edited: Vec<u64> = (0..EDITED_ROWS).map(|j| rows / 3 + j * (rows / 3) / EDITED_ROWS).collect();
    let mut v1 = open(1)?;
    let (mut bytes1, mut changed) = (0u64, 0u64);
    for id in 0..rows {
        buf.clear();
        let edit = edited.contains(&id);
        row(seed, id, u64::from(edit), &mut buf);
        v1.write_all(&buf)?;
        bytes1 += buf.len() as u64;
        if edit {
            changed += buf.len() as u64;
        }
    }
    let mut id = rows;
    while bytes1 < bytes0 + (bytes0 as f64 * APPENDED) as u64 {
        buf.clear();
        row(seed, id, 0, &mut buf);
        v1.write_all(&buf)?;
        bytes1 += buf.len() as u64;
        changed += buf.len() as u64;
        id += 1;
    }
    v1.flush()?;
    let t = |bytes, changed_bytes| Truth { files: 1, bytes, changed_bytes, ..Truth::default() };
    Ok(vec![t(bytes0, bytes0), t(bytes1, changed)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_json_and_edits_keep_the_identity() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        row(3, 12_345, 0, &mut a);
        row(3, 12_345, 1, &mut b);
        let va: serde_json::Value = serde_json::from_slice(&a).expect("row 0 is JSON");
        let vb: serde_json::Value = serde_json::from_slice(&b).expect("row 1 is JSON");
        assert_eq!(va["id"], 12_345);
        for k in ["id", "uuid", "created", "source"] {
            assert_eq!(va[k], vb[k], "{k} changed with the edit");
        }
        assert_ne!(va["text"], vb["text"]);
        assert!(a.ends_with(b"\n") && !a[..a.len() - 1].contains(&b'\n'));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_358), (2023, 1, 1));
        assert_eq!(civil(19_417), (2023, 3, 1));
    }
}
