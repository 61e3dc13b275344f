//! The messages of `ferry/1`, each carried in one frame whose type byte is
//! the message's tag. Field layouts are in `protocol/wire.md`, section 3;
//! the limits below are its section 2, and the error codes its section 4.
//!
//! A request is one frame from the client; its response is zero or more
//! data frames ended by exactly one [`Message::Done`] or [`Message::Error`].
//! Repository, branch, client and server names are at most
//! [`MAX_NAME_LEN`] bytes on the wire; whether a name is valid is checked by
//! whoever acts on it ([`ferry_core::names`]).

use ferry_core::codec::MAX_RECORD_LEN;
use ferry_core::tree::MAX_NODE_LEN;
use ferry_core::{invalid, put_bytes, FormatError, Id, Reader};

use crate::frame::{encode_frame, MAX_FRAME_LEN};

/// Most ids in one request (512 KiB of ids); also the most nodes or chunk
/// records in one frame, and the most bits in a `Bitmap`.
pub const MAX_IDS: usize = 16_384;
/// Longest repository, branch, client or server name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest token in `Hello`, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest message in an `Error` frame, in bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Most branches in one `Refs` frame, or of one repository in `Repos`.
pub const MAX_BRANCHES: usize = 65_536;
/// Most revisions in one frame (`Revisions`, `PutRevisions`,
/// `UpdateBranch`); each is at most [`MAX_FRAME_LEN`] bytes.
pub const MAX_REVISIONS: usize = 1024;
/// Most protocol versions a `Hello` may list.
pub const MAX_VERSIONS: usize = 16;
/// Most repositories in one `Repos` frame.
pub const MAX_REPOS: usize = 1024;
/// Longest repository glob in `ListRepos`.
pub const MAX_PATTERN_LEN: usize = 256;

/// Error codes in `Error` frames (`protocol/wire.md`, section 4). The
/// message beside the code is for people; programs act on the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame or message could not be decoded, or broke a limit.
    BadRequest,
    /// No protocol version in common.
    UnsupportedVersion,
    /// The token is not valid.
    Unauthorized,
    /// The repository does not exist or the client may not see it (the two
    /// are deliberately indistinguishable).
    NotFound,
    /// The client may read but not write this repository.
    Forbidden,
    /// The branch moved since the client read it: pull first.
    Conflict,
    /// Data did not match its id.
    Corrupt,
    /// Something referenced is missing (e.g. a node's children).
    Incomplete,
    /// Too many failed attempts, or the hub is at its connection limit;
    /// retry later.
    RateLimited,
    /// The server failed; the request may be retried.
    Internal,
    /// A code this implementation does not know.
    Other(u16),
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::Unauthorized => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::Forbidden => 5,
            ErrorCode::Conflict => 6,
            ErrorCode::Corrupt => 7,
            ErrorCode::Incomplete => 8,
            ErrorCode::RateLimited => 9,
            ErrorCode::Internal => 10,
            ErrorCode::Other(c) => c,
        }
    }
    /// The code received: unknown numbers become [`ErrorCode::Other`], which
    /// a client treats as an error like any other.
    pub fn from_u16(c: u16) -> ErrorCode {
        match c {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::Unauthorized,
            4 => ErrorCode::NotFound,
            5 => ErrorCode::Forbidden,
            6 => ErrorCode::Conflict,
            7 => ErrorCode::Corrupt,
            8 => ErrorCode::Incomplete,
            9 => ErrorCode::RateLimited,
            10 => ErrorCode::Internal,
            c => ErrorCode::Other(c),
        }
    }
}

/// One message of `ferry/1`. Requests come from the client, answers from
/// the hub; each variant says which, and what answers it.
///
/// Objects travel encoded (`Vec<u8>`: revisions, tree nodes and chunk
/// records as `protocol/tree.md` defines them) and are decoded and checked
/// against their ids by whoever uses them, not by this codec. Every `repo`
/// field names the repository the client acts for; access is checked
/// against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client, first frame of a connection: the versions it speaks and its
    /// token. Answered by `Welcome` + `Done`, or an `Error`.
    Hello {
        /// Protocol versions the client speaks, at most [`MAX_VERSIONS`].
        versions: Vec<u16>,
        /// The client's token; empty for none. At most [`MAX_TOKEN_LEN`]
        /// bytes.
        token: String,
        /// Names the client software (`ferry/<version>`); informational.
        client: String,
    },
    /// Hub: the handshake succeeded.
    Welcome {
        /// The version chosen for the connection.
        version: u16,
        /// Names the hub software (`ferry/<version>`); informational.
        server: String,
    },
    /// Hub: the request failed; ends the response.
    Error {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong and what to do, for people; at most
        /// [`MAX_MESSAGE_LEN`] bytes.
        message: String,
    },
    /// Hub: the response is complete.
    Done,
    /// Client: the branches of a repository (→ `Refs`).
    ListRefs {
        /// The repository.
        repo: String,
    },
    /// Hub: a repository's branches and whether anyone may read it.
    Refs {
        /// Whether the repository is readable without a token.
        public: bool,
        /// Each branch's name and head revision, at most [`MAX_BRANCHES`].
        branches: Vec<(String, Id)>,
    },
    /// Revisions from `from` over parents, breadth-first, never returning
    /// or following a revision in `until`, at most `max` (→ `Revisions`
    /// frames). Every `from` revision the hub has comes first.
    GetHistory {
        /// The repository.
        repo: String,
        /// Where the walk starts.
        from: Vec<Id>,
        /// Where it stops (revisions the asker already has).
        until: Vec<Id>,
        /// Most revisions to return (the hub also caps it at
        /// [`MAX_REVISIONS`]).
        max: u32,
    },
    /// Hub: encoded revisions, answering `GetHistory`.
    Revisions {
        /// Encoded revisions, at most [`MAX_REVISIONS`] per frame.
        revisions: Vec<Vec<u8>>,
    },
    /// Client: which of these revisions the hub has (→ `Bitmap`).
    HaveRevisions {
        /// The repository.
        repo: String,
        /// Revision ids, at most [`MAX_IDS`].
        ids: Vec<Id>,
    },
    /// Client: which of these tree nodes the hub has (→ `Bitmap`). Having a
    /// node means having its whole subtree.
    HaveNodes {
        /// The repository.
        repo: String,
        /// Node ids, at most [`MAX_IDS`].
        ids: Vec<Id>,
    },
    /// Client: which of these chunks the hub has (→ `Bitmap`).
    HaveChunks {
        /// The repository.
        repo: String,
        /// Chunk ids, at most [`MAX_IDS`].
        ids: Vec<Id>,
    },
    /// Hub: one bit per id asked, in the order asked (`true`: has it).
    Bitmap {
        /// The answers, at most [`MAX_IDS`].
        bits: Vec<bool>,
    },
    /// Client: these tree nodes, encoded (→ `Nodes` frames).
    GetNodes {
        /// The repository.
        repo: String,
        /// Node ids, at most [`MAX_IDS`].
        ids: Vec<Id>,
    },
    /// Hub: encoded tree nodes, in the order asked.
    Nodes {
        /// Encoded nodes, each at most [`MAX_NODE_LEN`] bytes.
        nodes: Vec<Vec<u8>>,
    },
    /// Client: store these encoded nodes; each node's children must be
    /// stored already or come earlier in the list (→ `Done`).
    PutNodes {
        /// The repository.
        repo: String,
        /// Encoded nodes, children first.
        nodes: Vec<Vec<u8>>,
    },
    /// Client: these chunk records, as stored (→ `Chunks` frames).
    GetChunks {
        /// The repository.
        repo: String,
        /// Chunk ids, at most [`MAX_IDS`].
        ids: Vec<Id>,
    },
    /// Client: for each chunk, the base its record on the hub is a delta
    /// against (→ one `ChunkBases`), so the client can say which of those
    /// bases it holds before asking for the records.
    GetChunkBases {
        /// The repository.
        repo: String,
        /// Chunk ids, at most [`MAX_IDS`].
        ids: Vec<Id>,
    },
    /// Hub: one id per chunk asked, in the order asked: the base of its
    /// delta record, or all zeros for a record that decodes alone.
    ChunkBases {
        /// The bases, at most [`MAX_IDS`].
        bases: Vec<Id>,
    },
    /// Client: these chunk records, as `GetChunks`, except that a record
    /// may be a delta against a chunk in `held`, each named with the proof
    /// that the client holds its bytes (`ferry_core::codec::base_proof`)
    /// (→ `Chunks` frames).
    GetChunksAgainst {
        /// The repository.
        repo: String,
        /// Chunk ids, at most [`MAX_IDS`].
        ids: Vec<Id>,
        /// Chunks the client holds, with their proofs, at most [`MAX_IDS`].
        held: Vec<(Id, [u8; 32])>,
    },
    /// Hub: chunk records with their ids.
    Chunks {
        /// Each chunk's id and its record, at most [`MAX_RECORD_LEN`] bytes.
        chunks: Vec<(Id, Vec<u8>)>,
    },
    /// Client: store these chunks; the hub verifies every record against
    /// its id and stores none of the batch if one fails (→ `Done`).
    PutChunks {
        /// The repository.
        repo: String,
        /// Each chunk's id and its record, at most [`MAX_RECORD_LEN`] bytes.
        chunks: Vec<(Id, Vec<u8>)>,
    },
    /// Client: store `revisions`, then move `branch` from `expected` to
    /// `new` by compare-and-swap (→ `Done`, or `Error` with
    /// [`ErrorCode::Conflict`] if the branch is elsewhere).
    UpdateBranch {
        /// The repository.
        repo: String,
        /// The branch to move (created if `expected` is `None`).
        branch: String,
        /// Where the branch must be now; `None`: it must not exist.
        expected: Option<Id>,
        /// Where it moves to; stored already or among `revisions`.
        new: Id,
        /// Encoded revisions to store first, parents first.
        revisions: Vec<Vec<u8>>,
    },
    /// Repositories matching `pattern` that the client may read, in name
    /// order, starting after `after` (empty: from the first). With a change
    /// feed position (`since` > 0 of hub `hub`), only those whose branches
    /// changed after it, waiting up to `wait_ms` for a change if none has.
    ListRepos {
        /// A glob over `owner/name` (`*` and `?` do not match `/`), at most
        /// [`MAX_PATTERN_LEN`] bytes.
        pattern: String,
        /// List names after this one (the last of the previous page).
        after: String,
        /// Change-feed position; 0: list everything.
        since: u64,
        /// The id of the hub whose feed `since` counts; another hub's id
        /// makes the hub list everything.
        hub: [u8; 16],
        /// How long the hub may wait for a change, in milliseconds (it waits
        /// at most 20 000).
        wait_ms: u32,
    },
    /// One page of `ListRepos`; `more` says whether another page follows.
    /// `hub` and `seq` are the change-feed position the listing is complete
    /// up to; `changes_only` says whether only changed repositories are
    /// listed (else all of them).
    Repos {
        /// Another page follows.
        more: bool,
        /// Only repositories changed since the position asked are listed.
        changes_only: bool,
        /// The hub's 16-byte id, naming its change feed.
        hub: [u8; 16],
        /// The change-feed position the listing is complete up to.
        seq: u64,
        /// The repositories, at most [`MAX_REPOS`].
        repos: Vec<RepoRefs>,
    },
    /// Stores revisions without moving a branch (a history too long for one
    /// `UpdateBranch`); parents first.
    PutRevisions {
        /// The repository.
        repo: String,
        /// Encoded revisions, parents first.
        revisions: Vec<Vec<u8>>,
    },
    /// Client: delete `branch` if it is at `expected` (→ `Done`, or `Error`
    /// with [`ErrorCode::Conflict`] if it is elsewhere). A tag (`tags/...`)
    /// needs an admin token.
    DeleteBranch {
        /// The repository.
        repo: String,
        /// The branch or tag to delete.
        branch: String,
        /// Where it must be now.
        expected: Id,
    },
    /// Client: delete a repository with every branch and tag (→ `Done`);
    /// needs an admin token.
    DeleteRepo {
        /// The repository.
        repo: String,
    },
    /// Client: which of these revisions of `repo` the hub forgot, keeping
    /// their records but not their files (→ `Bitmap`).
    GetForgotten {
        /// The repository.
        repo: String,
        /// Revision ids, at most [`MAX_IDS`].
        ids: Vec<Id>,
    },
    /// Client: forget these revisions of `repo` (→ `Done`): their files no
    /// longer keep their data from gc. Forgetting one in the repository's
    /// history needs an admin token; a writer may name revisions it is
    /// about to send that its source forgot.
    Forget {
        /// The repository.
        repo: String,
        /// Revision ids, at most [`MAX_IDS`].
        ids: Vec<Id>,
    },
}

/// A repository and its branch heads, as listed by `Repos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRefs {
    /// The repository, `owner/name`.
    pub name: String,
    /// Whether it is readable without a token.
    pub public: bool,
    /// Each branch's name and head revision.
    pub branches: Vec<(String, Id)>,
}

/// The frame type byte of each message (`protocol/wire.md`, section 3).
/// 0x0_ handshake and response ends, 0x1_ refs and history, 0x2_ trees,
/// 0x3_ chunks, 0x4_ revisions stored and branches moved.
pub mod tag {
    /// [`Message::Hello`](super::Message::Hello).
    pub const HELLO: u8 = 0x01;
    /// [`Message::Welcome`](super::Message::Welcome).
    pub const WELCOME: u8 = 0x02;
    /// [`Message::Error`](super::Message::Error).
    pub const ERROR: u8 = 0x03;
    /// [`Message::Done`](super::Message::Done).
    pub const DONE: u8 = 0x04;
    /// [`Message::ListRefs`](super::Message::ListRefs).
    pub const LIST_REFS: u8 = 0x10;
    /// [`Message::Refs`](super::Message::Refs).
    pub const REFS: u8 = 0x11;
    /// [`Message::GetHistory`](super::Message::GetHistory).
    pub const GET_HISTORY: u8 = 0x12;
    /// [`Message::Revisions`](super::Message::Revisions).
    pub const REVISIONS: u8 = 0x13;
    /// [`Message::HaveRevisions`](super::Message::HaveRevisions).
    pub const HAVE_REVISIONS: u8 = 0x14;
    /// [`Message::HaveNodes`](super::Message::HaveNodes).
    pub const HAVE_NODES: u8 = 0x20;
    /// [`Message::HaveChunks`](super::Message::HaveChunks).
    pub const HAVE_CHUNKS: u8 = 0x21;
    /// [`Message::Bitmap`](super::Message::Bitmap).
    pub const BITMAP: u8 = 0x22;
    /// [`Message::GetNodes`](super::Message::GetNodes).
    pub const GET_NODES: u8 = 0x23;
    /// [`Message::Nodes`](super::Message::Nodes).
    pub const NODES: u8 = 0x24;
    /// [`Message::PutNodes`](super::Message::PutNodes).
    pub const PUT_NODES: u8 = 0x25;
    /// [`Message::GetChunks`](super::Message::GetChunks).
    pub const GET_CHUNKS: u8 = 0x30;
    /// [`Message::Chunks`](super::Message::Chunks).
    pub const CHUNKS: u8 = 0x31;
    /// [`Message::PutChunks`](super::Message::PutChunks).
    pub const PUT_CHUNKS: u8 = 0x32;
    /// [`Message::GetChunkBases`](super::Message::GetChunkBases).
    pub const GET_CHUNK_BASES: u8 = 0x33;
    /// [`Message::ChunkBases`](super::Message::ChunkBases).
    pub const CHUNK_BASES: u8 = 0x34;
    /// [`Message::GetChunksAgainst`](super::Message::GetChunksAgainst).
    pub const GET_CHUNKS_AGAINST: u8 = 0x35;
    /// [`Message::ListRepos`](super::Message::ListRepos).
    pub const LIST_REPOS: u8 = 0x15;
    /// [`Message::Repos`](super::Message::Repos).
    pub const REPOS: u8 = 0x16;
    /// [`Message::UpdateBranch`](super::Message::UpdateBranch).
    pub const UPDATE_BRANCH: u8 = 0x40;
    /// [`Message::PutRevisions`](super::Message::PutRevisions).
    pub const PUT_REVISIONS: u8 = 0x41;
    /// [`Message::DeleteBranch`](super::Message::DeleteBranch).
    pub const DELETE_BRANCH: u8 = 0x42;
    /// [`Message::DeleteRepo`](super::Message::DeleteRepo).
    pub const DELETE_REPO: u8 = 0x43;
    /// [`Message::GetForgotten`](super::Message::GetForgotten).
    pub const GET_FORGOTTEN: u8 = 0x17;
    /// [`Message::Forget`](super::Message::Forget).
    pub const FORGET: u8 = 0x44;
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_ids(out: &mut Vec<u8>, ids: &[Id]) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
}

fn put_blobs(out: &mut Vec<u8>, blobs: &[Vec<u8>]) {
    out.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
    for b in blobs {
        put_bytes(out, b);
    }
}

fn put_chunks(out: &mut Vec<u8>, chunks: &[(Id, Vec<u8>)]) {
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for (id, rec) in chunks {
        out.extend_from_slice(id.as_bytes());
        put_bytes(out, rec);
    }
}

fn put_flag(out: &mut Vec<u8>, b: bool) {
    out.push(b as u8);
}

fn put_refs(out: &mut Vec<u8>, branches: &[(String, Id)]) {
    out.extend_from_slice(&(branches.len() as u32).to_le_bytes());
    for (b, id) in branches {
        put_str(out, b);
        out.extend_from_slice(id.as_bytes());
    }
}

/// A 0-or-1 byte; anything else is refused so that every message has one
/// encoding.
fn get_flag(r: &mut Reader, what: &'static str) -> Result<bool, FormatError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        x => Err(invalid(what, format!("flag {x} is not 0 or 1"))),
    }
}

fn get_refs(r: &mut Reader) -> Result<Vec<(String, Id)>, FormatError> {
    // A branch is at least a 4-byte name length and a 32-byte id.
    let n = count(r, "branch list", MAX_BRANCHES, 36)?;
    (0..n).map(|_| Ok((r.string("name", MAX_NAME_LEN)?.to_owned(), r.id()?))).collect()
}

fn count(r: &mut Reader, what: &'static str, limit: usize, min_each: usize) -> Result<usize, FormatError> {
    let n = r.u32()? as usize;
    if n > limit {
        return Err(FormatError::TooLarge { what, len: n as u64, limit: limit as u64 });
    }
    // Never trust a count the remaining bytes cannot hold.
    if n.saturating_mul(min_each) > r.remaining() {
        return Err(FormatError::Truncated { what, needed: n * min_each - r.remaining() });
    }
    Ok(n)
}

fn get_ids(r: &mut Reader) -> Result<Vec<Id>, FormatError> {
    let n = count(r, "id list", MAX_IDS, 32)?;
    (0..n).map(|_| r.id()).collect()
}

fn get_blobs(r: &mut Reader, what: &'static str, max_count: usize, max_len: usize) -> Result<Vec<Vec<u8>>, FormatError> {
    let n = count(r, what, max_count, 4)?;
    (0..n).map(|_| Ok(r.bytes(what, max_len)?.to_vec())).collect()
}

fn get_chunks(r: &mut Reader) -> Result<Vec<(Id, Vec<u8>)>, FormatError> {
    let n = count(r, "chunk list", MAX_IDS, 36)?;
    (0..n).map(|_| Ok((r.id()?, r.bytes("chunk record", MAX_RECORD_LEN)?.to_vec()))).collect()
}

impl Message {
    /// The frame type byte of this message (a constant in [`tag`]).
    pub fn tag(&self) -> u8 {
        use tag::*;
        match self {
            Message::Hello { .. } => HELLO,
            Message::Welcome { .. } => WELCOME,
            Message::Error { .. } => ERROR,
            Message::Done => DONE,
            Message::ListRefs { .. } => LIST_REFS,
            Message::Refs { .. } => REFS,
            Message::GetHistory { .. } => GET_HISTORY,
            Message::Revisions { .. } => REVISIONS,
            Message::HaveRevisions { .. } => HAVE_REVISIONS,
            Message::HaveNodes { .. } => HAVE_NODES,
            Message::HaveChunks { .. } => HAVE_CHUNKS,
            Message::Bitmap { .. } => BITMAP,
            Message::GetNodes { .. } => GET_NODES,
            Message::Nodes { .. } => NODES,
            Message::PutNodes { .. } => PUT_NODES,
            Message::GetChunks { .. } => GET_CHUNKS,
            Message::Chunks { .. } => CHUNKS,
            Message::PutChunks { .. } => PUT_CHUNKS,
            Message::GetChunkBases { .. } => GET_CHUNK_BASES,
            Message::ChunkBases { .. } => CHUNK_BASES,
            Message::GetChunksAgainst { .. } => GET_CHUNKS_AGAINST,
            Message::UpdateBranch { .. } => UPDATE_BRANCH,
            Message::ListRepos { .. } => LIST_REPOS,
            Message::Repos { .. } => REPOS,
            Message::PutRevisions { .. } => PUT_REVISIONS,
            Message::DeleteBranch { .. } => DELETE_BRANCH,
            Message::DeleteRepo { .. } => DELETE_REPO,
            Message::GetForgotten { .. } => GET_FORGOTTEN,
            Message::Forget { .. } => FORGET,
        }
    }

    /// The payload (without the frame header).
    pub fn payload(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Message::Hello { versions, token, client } => {
                o.push(versions.len() as u8);
                for v in versions {
                    o.extend_from_slice(&v.to_le_bytes());
                }
                put_str(&mut o, token);
                put_str(&mut o, client);
            }
            Message::Welcome { version, server } => {
                o.extend_from_slice(&version.to_le_bytes());
                put_str(&mut o, server);
            }
            Message::Error { code, message } => {
                o.extend_from_slice(&code.to_u16().to_le_bytes());
                put_str(&mut o, message);
            }
            Message::Done => {}
            Message::ListRefs { repo } => put_str(&mut o, repo),
            Message::Refs { public, branches } => {
                put_flag(&mut o, *public);
                put_refs(&mut o, branches);
            }
            Message::GetHistory { repo, from, until, max } => {
                put_str(&mut o, repo);
                put_ids(&mut o, from);
                put_ids(&mut o, until);
                o.extend_from_slice(&max.to_le_bytes());
            }
            Message::Revisions { revisions } => put_blobs(&mut o, revisions),
            Message::HaveRevisions { repo, ids }
            | Message::HaveNodes { repo, ids }
            | Message::HaveChunks { repo, ids }
            | Message::GetNodes { repo, ids }
            | Message::GetChunks { repo, ids }
            | Message::GetChunkBases { repo, ids } => {
                put_str(&mut o, repo);
                put_ids(&mut o, ids);
            }
            Message::ChunkBases { bases } => put_ids(&mut o, bases),
            Message::GetChunksAgainst { repo, ids, held } => {
                put_str(&mut o, repo);
                put_ids(&mut o, ids);
                o.extend_from_slice(&(held.len() as u32).to_le_bytes());
                for (id, proof) in held {
                    o.extend_from_slice(id.as_bytes());
                    o.extend_from_slice(proof);
                }
            }
            Message::Bitmap { bits } => {
                o.extend_from_slice(&(bits.len() as u32).to_le_bytes());
                let mut bytes = vec![0u8; bits.len().div_ceil(8)];
                for (i, b) in bits.iter().enumerate() {
                    if *b {
                        bytes[i / 8] |= 1 << (i % 8);
                    }
                }
                o.extend_from_slice(&bytes);
            }
            Message::Nodes { nodes } => put_blobs(&mut o, nodes),
            Message::PutNodes { repo, nodes } => {
                put_str(&mut o, repo);
                put_blobs(&mut o, nodes);
            }
            Message::Chunks { chunks } => put_chunks(&mut o, chunks),
            Message::PutChunks { repo, chunks } => {
                put_str(&mut o, repo);
                put_chunks(&mut o, chunks);
            }
            Message::UpdateBranch { repo, branch, expected, new, revisions } => {
                put_str(&mut o, repo);
                put_str(&mut o, branch);
                match expected {
                    Some(id) => {
                        o.push(1);
                        o.extend_from_slice(id.as_bytes());
                    }
                    None => o.push(0),
                }
                o.extend_from_slice(new.as_bytes());
                put_blobs(&mut o, revisions);
            }
            Message::ListRepos { pattern, after, since, hub, wait_ms } => {
                put_str(&mut o, pattern);
                put_str(&mut o, after);
                o.extend_from_slice(&since.to_le_bytes());
                o.extend_from_slice(hub);
                o.extend_from_slice(&wait_ms.to_le_bytes());
            }
            Message::Repos { more, changes_only, hub, seq, repos } => {
                put_flag(&mut o, *more);
                put_flag(&mut o, *changes_only);
                o.extend_from_slice(hub);
                o.extend_from_slice(&seq.to_le_bytes());
                o.extend_from_slice(&(repos.len() as u32).to_le_bytes());
                for r in repos {
                    put_str(&mut o, &r.name);
                    put_flag(&mut o, r.public);
                    put_refs(&mut o, &r.branches);
                }
            }
            Message::PutRevisions { repo, revisions } => {
                put_str(&mut o, repo);
                put_blobs(&mut o, revisions);
            }
            Message::DeleteBranch { repo, branch, expected } => {
                put_str(&mut o, repo);
                put_str(&mut o, branch);
                o.extend_from_slice(expected.as_bytes());
            }
            Message::DeleteRepo { repo } => put_str(&mut o, repo),
            Message::GetForgotten { repo, ids } | Message::Forget { repo, ids } => {
                put_str(&mut o, repo);
                put_ids(&mut o, ids);
            }
        }
        o
    }

    /// Encodes the message as one frame appended to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_frame(self.tag(), &self.payload(), out);
    }

    /// The message as one whole frame.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes the payload of a frame of type `kind`, checking every count
    /// and length against its limit before allocating and refusing unknown
    /// types, non-canonical flags and trailing bytes, so a decoded message
    /// re-encodes to exactly the bytes received.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Message, FormatError> {
        use tag::*;
        if payload.len() > MAX_FRAME_LEN {
            return Err(FormatError::TooLarge { what: "frame", len: payload.len() as u64, limit: MAX_FRAME_LEN as u64 });
        }
        let mut r = Reader::new("message", payload);
        let name = |r: &mut Reader| -> Result<String, FormatError> { Ok(r.string("name", MAX_NAME_LEN)?.to_owned()) };
        let m = match kind {
            HELLO => {
                let n = r.u8()? as usize;
                if n > MAX_VERSIONS {
                    return Err(FormatError::TooLarge { what: "version list", len: n as u64, limit: MAX_VERSIONS as u64 });
                }
                let versions = (0..n).map(|_| r.u16()).collect::<Result<_, _>>()?;
                let token = r.string("token", MAX_TOKEN_LEN)?.to_owned();
                let client = name(&mut r)?;
                Message::Hello { versions, token, client }
            }
            WELCOME => Message::Welcome { version: r.u16()?, server: name(&mut r)? },
            ERROR => Message::Error { code: ErrorCode::from_u16(r.u16()?), message: r.string("error message", MAX_MESSAGE_LEN)?.to_owned() },
            DONE => Message::Done,
            LIST_REFS => Message::ListRefs { repo: name(&mut r)? },
            REFS => Message::Refs { public: get_flag(&mut r, "refs public flag")?, branches: get_refs(&mut r)? },
            GET_HISTORY => Message::GetHistory { repo: name(&mut r)?, from: get_ids(&mut r)?, until: get_ids(&mut r)?, max: r.u32()? },
            REVISIONS => Message::Revisions { revisions: get_blobs(&mut r, "revision", MAX_REVISIONS, MAX_FRAME_LEN)? },
            HAVE_REVISIONS => Message::HaveRevisions { repo: name(&mut r)?, ids: get_ids(&mut r)? },
            HAVE_NODES => Message::HaveNodes { repo: name(&mut r)?, ids: get_ids(&mut r)? },
            HAVE_CHUNKS => Message::HaveChunks { repo: name(&mut r)?, ids: get_ids(&mut r)? },
            GET_NODES => Message::GetNodes { repo: name(&mut r)?, ids: get_ids(&mut r)? },
            GET_CHUNKS => Message::GetChunks { repo: name(&mut r)?, ids: get_ids(&mut r)? },
            GET_CHUNK_BASES => Message::GetChunkBases { repo: name(&mut r)?, ids: get_ids(&mut r)? },
            CHUNK_BASES => Message::ChunkBases { bases: get_ids(&mut r)? },
            GET_CHUNKS_AGAINST => {
                let (repo, ids) = (name(&mut r)?, get_ids(&mut r)?);
                let n = count(&mut r, "held chunk list", MAX_IDS, 64)?;
                let held = (0..n).map(|_| Ok((r.id()?, r.take(32)?.try_into().expect("32 bytes")))).collect::<Result<_, FormatError>>()?;
                Message::GetChunksAgainst { repo, ids, held }
            }
            BITMAP => {
                let n = r.u32()? as usize;
                if n > MAX_IDS {
                    return Err(FormatError::TooLarge { what: "bitmap", len: n as u64, limit: MAX_IDS as u64 });
                }
                let bytes = r.take(n.div_ceil(8))?;
                if !n.is_multiple_of(8) && bytes[n / 8] >> (n % 8) != 0 {
                    return Err(invalid("bitmap", "padding bits are set"));
                }
                Message::Bitmap { bits: (0..n).map(|i| bytes[i / 8] & (1 << (i % 8)) != 0).collect() }
            }
            NODES => Message::Nodes { nodes: get_blobs(&mut r, "tree node", MAX_IDS, MAX_NODE_LEN)? },
            PUT_NODES => Message::PutNodes { repo: name(&mut r)?, nodes: get_blobs(&mut r, "tree node", MAX_IDS, MAX_NODE_LEN)? },
            CHUNKS => Message::Chunks { chunks: get_chunks(&mut r)? },
            PUT_CHUNKS => Message::PutChunks { repo: name(&mut r)?, chunks: get_chunks(&mut r)? },
            UPDATE_BRANCH => {
                let repo = name(&mut r)?;
                let branch = name(&mut r)?;
                let expected = if get_flag(&mut r, "update branch expected-head flag")? { Some(r.id()?) } else { None };
                let new = r.id()?;
                let revisions = get_blobs(&mut r, "revision", MAX_REVISIONS, MAX_FRAME_LEN)?;
                Message::UpdateBranch { repo, branch, expected, new, revisions }
            }
            LIST_REPOS => Message::ListRepos {
                pattern: r.string("repository pattern", MAX_PATTERN_LEN)?.to_owned(),
                after: name(&mut r)?,
                since: r.u64()?,
                hub: r.take(16)?.try_into().expect("16 bytes"),
                wait_ms: r.u32()?,
            },
            REPOS => {
                let more = get_flag(&mut r, "repos more flag")?;
                let changes_only = get_flag(&mut r, "repos changes-only flag")?;
                let hub = r.take(16)?.try_into().expect("16 bytes");
                let seq = r.u64()?;
                // A repository is at least a name length, a flag and a branch count.
                let n = count(&mut r, "repository list", MAX_REPOS, 9)?;
                let repos = (0..n)
                    .map(|_| Ok(RepoRefs { name: name(&mut r)?, public: get_flag(&mut r, "repository public flag")?, branches: get_refs(&mut r)? }))
                    .collect::<Result<_, FormatError>>()?;
                Message::Repos { more, changes_only, hub, seq, repos }
            }
            PUT_REVISIONS => Message::PutRevisions { repo: name(&mut r)?, revisions: get_blobs(&mut r, "revision", MAX_REVISIONS, MAX_FRAME_LEN)? },
            DELETE_BRANCH => Message::DeleteBranch { repo: name(&mut r)?, branch: name(&mut r)?, expected: r.id()? },
            DELETE_REPO => Message::DeleteRepo { repo: name(&mut r)? },
            GET_FORGOTTEN => Message::GetForgotten { repo: name(&mut r)?, ids: get_ids(&mut r)? },
            FORGET => Message::Forget { repo: name(&mut r)?, ids: get_ids(&mut r)? },
            other => return Err(invalid("frame", format!("unknown frame type {other:#04x}"))),
        };
        r.finish()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameDecoder;

    pub(crate) fn samples() -> Vec<Message> {
        let a = Id::of_chunk(b"a");
        let b = Id::of_chunk(b"b");
        vec![
            Message::Hello { versions: vec![1], token: "fy_x".into(), client: "ferry/0.1".into() },
            Message::Welcome { version: 1, server: "hub".into() },
            Message::Error { code: ErrorCode::Conflict, message: "pull first".into() },
            Message::Done,
            Message::ListRefs { repo: "org/m".into() },
            Message::Refs { public: true, branches: vec![("main".into(), a)] },
            Message::GetHistory { repo: "org/m".into(), from: vec![a], until: vec![b], max: 64 },
            Message::Revisions { revisions: vec![b"FRV1".to_vec()] },
            Message::HaveRevisions { repo: "org/m".into(), ids: vec![a, b] },
            Message::HaveNodes { repo: "org/m".into(), ids: vec![a] },
            Message::HaveChunks { repo: "org/m".into(), ids: vec![] },
            Message::Bitmap { bits: vec![true, false, true, true, false, false, false, false, true] },
            Message::GetNodes { repo: "org/m".into(), ids: vec![b] },
            Message::Nodes { nodes: vec![vec![1, 0, 0]] },
            Message::PutNodes { repo: "org/m".into(), nodes: vec![vec![1, 0, 0]] },
            Message::GetChunks { repo: "org/m".into(), ids: vec![a] },
            Message::GetChunkBases { repo: "org/m".into(), ids: vec![a, b] },
            Message::ChunkBases { bases: vec![Id::default(), a] },
            Message::GetChunksAgainst { repo: "org/m".into(), ids: vec![b], held: vec![(a, [7; 32])] },
            Message::Chunks { chunks: vec![(a, vec![0, 1, 0, 0, 0, b'a'])] },
            Message::PutChunks { repo: "org/m".into(), chunks: vec![(a, vec![0, 1, 0, 0, 0, b'a'])] },
            Message::UpdateBranch { repo: "org/m".into(), branch: "main".into(), expected: Some(a), new: b, revisions: vec![] },
            Message::ListRepos { pattern: "org/*".into(), after: "".into(), since: 7, hub: [9; 16], wait_ms: 20_000 },
            Message::Repos {
                more: true,
                changes_only: true,
                hub: [9; 16],
                seq: 8,
                repos: vec![RepoRefs { name: "org/m".into(), public: false, branches: vec![("main".into(), a)] }],
            },
            Message::PutRevisions { repo: "org/m".into(), revisions: vec![b"FRV1".to_vec()] },
            Message::DeleteBranch { repo: "org/m".into(), branch: "tags/v1".into(), expected: a },
            Message::DeleteRepo { repo: "org/m".into() },
            Message::GetForgotten { repo: "org/m".into(), ids: vec![a, b] },
            Message::Forget { repo: "org/m".into(), ids: vec![a] },
        ]
    }

    #[test]
    fn every_message_round_trips_through_the_frame_decoder() {
        let mut stream = Vec::new();
        for m in samples() {
            m.encode(&mut stream);
        }
        let mut d = FrameDecoder::new();
        // Deliver in awkward pieces.
        for piece in stream.chunks(7) {
            d.push(piece);
        }
        for m in samples() {
            let (kind, payload) = d.next_frame().unwrap().unwrap();
            assert_eq!(Message::decode(kind, &payload).unwrap(), m);
        }
        assert!(d.next_frame().unwrap().is_none());
        d.finish().unwrap();
    }

    #[test]
    fn lying_counts_and_lengths_are_refused_before_allocating() {
        // A HaveNodes claiming 16384 ids with none present.
        let mut p = Vec::new();
        put_str(&mut p, "org/m");
        p.extend_from_slice(&(MAX_IDS as u32).to_le_bytes());
        assert!(matches!(Message::decode(tag::HAVE_NODES, &p), Err(FormatError::Truncated { .. })));
        let mut p = Vec::new();
        put_str(&mut p, "org/m");
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Message::decode(tag::HAVE_NODES, &p), Err(FormatError::TooLarge { .. })));
        let mut d = FrameDecoder::new();
        d.push(&[tag::PUT_CHUNKS, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
        assert!(Message::decode(0x7f, &[]).is_err(), "unknown frame type");
        assert!(Message::decode(tag::REFS, &[0x21, 0, 0, 0, 0]).is_err(), "non-canonical flag");
        assert!(Message::decode(tag::DONE, &[0]).is_err(), "trailing bytes");
        let mut d = FrameDecoder::new();
        d.push(&[tag::DONE, 5, 0, 0]);
        assert!(d.next_frame().unwrap().is_none());
        assert!(d.finish().is_err(), "truncated frame at end of stream");
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(kind in proptest::prelude::any::<u8>(), payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Message::decode(kind, &payload);
        }
    }
}
