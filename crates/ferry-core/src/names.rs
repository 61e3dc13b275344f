//! Names users and peers send us: repositories, branches, and file paths
//! inside a revision. Everything from outside passes through these checks
//! before it names a key or a file.
//!
//! The path rules are part of the revision format (`protocol/tree.md`,
//! section 4); the repository and branch rules are this implementation's
//! (`protocol/wire.md` bounds names on the wire at 256 bytes).

use crate::{invalid, FormatError};

/// Longest path in a revision, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest component of a path, in bytes (the file-name limit of common
/// file systems).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Longest branch name, in bytes.
pub const MAX_BRANCH_LEN: usize = 128;

fn name_segment_ok(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) && !s.starts_with(['.', '-'])
}

/// A repository name is `owner/name`: two segments of 1 to 64 ASCII letters,
/// digits, `.`, `_` or `-`, not starting with `.` or `-`. (A store also
/// refuses to create one that differs only in case from one it has.)
pub fn check_repo_name(name: &str) -> Result<(), FormatError> {
    match name.split_once('/') {
        Some((owner, repo)) if name_segment_ok(owner) && name_segment_ok(repo) => Ok(()),
        _ => Err(invalid("repository name", format!("{name:?} is not of the form owner/name (letters, digits, '.', '_', '-'; up to 64 each)"))),
    }
}

/// A branch name: 1 to 128 of letters, digits, `.`, `_`, `-`, `/`, without
/// empty, `.` or `..` segments. (A store also refuses to create one that
/// differs only in case from another branch of its repository.)
pub fn check_branch_name(name: &str) -> Result<(), FormatError> {
    let ok = (1..=MAX_BRANCH_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && !name.starts_with('-')
        && name.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(invalid("branch name", format!("{name:?} is not a valid branch name (letters, digits, '.', '_', '-', '/'; up to {MAX_BRANCH_LEN})")))
    }
}

/// A path inside a revision: relative, `/`-separated, no empty, `.` or `..`
/// components, no NUL or backslash, at most 4096 bytes. Such a path, joined
/// to a directory, can never leave it.
pub fn check_path(path: &str) -> Result<(), FormatError> {
    let bad = |why: &str| Err(invalid("path", format!("{path:?} {why}")));
    if path.is_empty() {
        return bad("is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("is longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return bad("is absolute");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path.contains('\\') {
        return bad("contains a backslash");
    }
    for c in path.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return bad("has an empty, '.' or '..' component");
        }
        if c.len() > MAX_COMPONENT_LEN {
            return bad("has a component longer than 255 bytes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        for ok in ["org/llama-ft", "a/b", "Org_1/model.v2"] {
            assert!(check_repo_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "a/b/c", "../x", "a/..", "/a", "a/", "a b/c", "-a/b", "a/.git"] {
            assert!(check_repo_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "a\0b", "a\\..\\b", "a/"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        for ok in ["model.safetensors", "a/b/c.json", ".gitattributes", "a..b"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn branch_names() {
        assert!(check_branch_name("main").is_ok());
        assert!(check_branch_name("feature/x").is_ok());
        for bad in ["", "a//b", "../x", "-x", "a b", "x/.."] {
            assert!(check_branch_name(bad).is_err(), "{bad}");
        }
    }
}
