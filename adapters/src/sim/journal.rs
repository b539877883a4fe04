//! Saving the simulated state at the cost of the change, not of the state.
//!
//! The state keeps every replica ever submitted (`find` must answer for any key, ever), so
//! rewriting it whole after each change costs O(replicas so far) per submit: with hundreds of
//! centers and thousands of submits a second, that serialization alone took a sizeable share
//! of a node's CPU. Instead each change — the replicas one call submitted, started from the
//! queue or stopped, in the snapshot's own form — is appended as one JSON line to
//! `sim-journal.jsonl`, and the whole state is written to `sim-state.json` (temporary file,
//! then rename) only when the journal has grown past four times the last snapshot (and at
//! least `MIN_COMPACT_BYTES`); then the journal is emptied. Each snapshot costs at most about
//! a quarter of the journal bytes written since the previous one, and a load replays at most
//! that much. Nothing is synced to disk: this is a simulator.
//!
//! Loading reads the snapshot, then merges the journal's lines in order. A crash at any instant
//! leaves a loadable state, at worst without the change being written: a line torn by a crash
//! does not parse and is skipped (the state is then compacted at once, so that nothing is
//! appended after the fragment); a crash between writing a snapshot and emptying the journal
//! leaves lines the snapshot already holds, and merging those changes nothing (see
//! `state::Recovery`).
//!
//! Two instances on one work dir (a node rebuilding a center's adapter while the old one is
//! still in use) are not coordinated, as before the journal: the last writer's state wins. An
//! instance that finds the journal's length other than it left it (another instance appended
//! or compacted) writes its whole state instead of a line.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::state::{Recovery, SimState};
use crate::pool::Pool;

/// The whole state as of the last compaction.
const SNAPSHOT: &str = "sim-state.json";
/// The changes since, one JSON line each.
const JOURNAL: &str = "sim-journal.jsonl";
/// The journal is compacted once longer than this and four times the last snapshot.
const MIN_COMPACT_BYTES: u64 = 256 * 1024;
/// How many times the last snapshot's size the journal may grow to before compaction.
const GROWTH: u64 = 4;

/// Numbers instances, so that concurrent instances on one work dir never share a temporary file.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// Why the simulated state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub(super) enum JournalError {
    #[error("cannot read the simulator state {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot save the simulator state to {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("corrupt simulator state {}: {source}", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Read { path: path.to_path_buf(), source }
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Write { path: path.to_path_buf(), source }
}

/// One instance's handle on a work dir's snapshot and journal.
pub(super) struct Journal {
    snapshot: PathBuf,
    /// Where a snapshot is written before it is renamed over `snapshot`.
    staging: PathBuf,
    path: PathBuf,
    /// The journal, opened for appending.
    file: File,
    /// The journal's length as this instance left it.
    len: u64,
    /// The size of the last snapshot written or read.
    snapshot_len: u64,
    /// The last save failed: the next one writes the whole state.
    failed: bool,
}

impl Journal {
    /// Opens the journal in `dir` and recovers the state saved there: the snapshot, then every
    /// line of the journal that parses.
    pub(super) fn open(dir: &Path, pool: Pool<u64>) -> Result<(Journal, SimState), JournalError> {
        let snapshot = dir.join(SNAPSHOT);
        let mut recovery = Recovery::new();
        let snapshot_len = match std::fs::read(&snapshot) {
            Ok(bytes) => {
                recovery.merge(&bytes).map_err(|source| JournalError::Corrupt { path: snapshot.clone(), source })?;
                bytes.len() as u64
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(read_error(&snapshot)(e)),
        };
        let path = dir.join(JOURNAL);
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(write_error(&path))?;
        let mut lines = Vec::new();
        file.read_to_end(&mut lines).map_err(read_error(&path))?;
        let skipped = replay(&lines, &mut recovery);
        let state = recovery.finish(pool);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let mut journal = Journal {
            staging: dir.join(format!("{SNAPSHOT}.{}-{instance}.tmp", std::process::id())),
            snapshot,
            path,
            file,
            len: lines.len() as u64,
            snapshot_len,
            failed: false,
        };
        if skipped > 0 {
            tracing::warn!(journal = %journal.path.display(), skipped, "skipped unreadable simulator journal lines");
            journal.compact(&state)?;
        }
        Ok((journal, state))
    }

    /// Saves what changed in `state` since the last save: one line, or the whole state when
    /// the journal has outgrown it, another instance wrote to it, or the last save failed.
    pub(super) fn save(&mut self, state: &mut SimState) -> Result<(), JournalError> {
        let Some(mut line) = state.take_changes() else { return Ok(()) };
        line.push(b'\n');
        let result = match self.must_compact(line.len() as u64) {
            Ok(true) => self.compact(state),
            Ok(false) => self.append(&line),
            Err(e) => Err(e),
        };
        self.failed = result.is_err();
        result
    }

    fn must_compact(&self, line_len: u64) -> Result<bool, JournalError> {
        if self.failed || self.len + line_len > (GROWTH * self.snapshot_len).max(MIN_COMPACT_BYTES) {
            return Ok(true);
        }
        let len = self.file.metadata().map_err(read_error(&self.path))?.len();
        if len != self.len {
            tracing::info!(journal = %self.path.display(), "another instance wrote the simulator journal");
        }
        Ok(len != self.len)
    }

    fn append(&mut self, line: &[u8]) -> Result<(), JournalError> {
        self.file.write_all(line).map_err(write_error(&self.path))?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Writes the whole state as the new snapshot, then empties the journal.
    pub(super) fn compact(&mut self, state: &SimState) -> Result<(), JournalError> {
        let snapshot = state.snapshot();
        std::fs::write(&self.staging, &snapshot).map_err(write_error(&self.staging))?;
        std::fs::rename(&self.staging, &self.snapshot).map_err(write_error(&self.snapshot))?;
        self.file.set_len(0).map_err(write_error(&self.path))?;
        self.len = 0;
        self.snapshot_len = snapshot.len() as u64;
        Ok(())
    }
}

/// Merges every whole line of `journal` that parses; returns how many lines did not (a final
/// line without its newline counts as one).
fn replay(journal: &[u8], recovery: &mut Recovery) -> usize {
    let mut lines = journal.split(|&b| b == b'\n');
    // What follows the last newline is empty, or a line a crash cut short.
    let torn = lines.next_back().is_some_and(|tail| !tail.is_empty());
    let unreadable = lines.filter(|line| recovery.merge(line).is_err()).count();
    unreadable + usize::from(torn)
}
