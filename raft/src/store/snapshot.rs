//! Snapshots: the state machine's data as one byte string (what openraft ships to a follower
//! that fell behind the purged log) and the file that keeps the latest one on disk, so a
//! restarted node can serve it without rebuilding.
//!
//! Data: `JCSDATA1`, then per pair `u64 key length, key, u64 value length, value` (big-endian),
//! in key order. File `<dir>/current`: `JCSSNAPF`, `u64 meta length`, the JSON `SnapshotMeta`,
//! then the data.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use openraft::{LogId, SnapshotMeta};

use super::db::DbError;
use crate::{NodeId, NodeInfo};

const DATA_MAGIC: &[u8; 8] = b"JCSDATA1";
const FILE_MAGIC: &[u8; 8] = b"JCSSNAPF";
const CURRENT: &str = "current";
const TEMP: &str = "current.tmp";

pub(crate) type Meta = SnapshotMeta<NodeId, NodeInfo>;

/// Builds snapshot data pair by pair.
pub(crate) struct DataEncoder(Vec<u8>);

impl DataEncoder {
    pub(crate) fn new() -> Self {
        DataEncoder(DATA_MAGIC.to_vec())
    }

    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) {
        for part in [key, value] {
            self.0.extend_from_slice(&(part.len() as u64).to_be_bytes());
            self.0.extend_from_slice(part);
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Visits every pair of snapshot data, failing on anything malformed.
pub(crate) fn decode_data(data: &[u8], mut visit: impl FnMut(&[u8], &[u8])) -> Result<(), DbError> {
    let mut rest = data.strip_prefix(DATA_MAGIC).ok_or_else(|| DbError::corrupt("snapshot data", "bad header"))?;
    while !rest.is_empty() {
        let key = take_part(&mut rest)?;
        let value = take_part(&mut rest)?;
        visit(key, value);
    }
    Ok(())
}

fn take_part<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], DbError> {
    let truncated = || DbError::corrupt("snapshot data", "truncated pair");
    let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
    let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| truncated())?;
    if tail.len() < len {
        return Err(truncated());
    }
    let (part, tail) = tail.split_at(len);
    *rest = tail;
    Ok(part)
}

/// The snapshot file of one node.
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
    builds: AtomicU64,
    /// The `last_log_id` of the file on disk; held while the file is replaced.
    saved: Mutex<Option<Option<LogId<NodeId>>>>,
}

impl SnapshotFiles {
    pub(crate) fn open(dir: PathBuf) -> Result<Self, DbError> {
        fs::create_dir_all(&dir)?;
        let saved = match File::open(dir.join(CURRENT)) {
            Ok(file) => Some(read_meta(&mut BufReader::new(file))?.last_log_id),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(SnapshotFiles { dir, builds: AtomicU64::new(0), saved: Mutex::new(saved) })
    }

    /// A fresh snapshot id. Ids repeat across restarts only for snapshots at the same log id,
    /// which hold the same state: apply is deterministic.
    pub(crate) fn next_id(&self, last: Option<&LogId<NodeId>>) -> String {
        let n = self.builds.fetch_add(1, Ordering::Relaxed) + 1;
        match last {
            Some(id) => format!("{}-{}-{n}", id.index, id.leader_id.term),
            None => format!("empty-{n}"),
        }
    }

    /// Makes this snapshot the current one (write a temp file, fsync, rename, fsync the
    /// directory), unless the current one is newer: a build racing an install must not
    /// replace the installed snapshot with an older one.
    pub(crate) fn save(&self, meta: &Meta, data: &[u8]) -> Result<(), DbError> {
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        if saved.is_some_and(|current| current > meta.last_log_id) {
            return Ok(());
        }
        let meta_json =
            serde_json::to_vec(meta).map_err(|source| DbError::Encode { what: "snapshot meta".into(), source })?;
        let temp = self.dir.join(TEMP);
        let mut out = BufWriter::new(File::create(&temp)?);
        out.write_all(FILE_MAGIC)?;
        out.write_all(&(meta_json.len() as u64).to_be_bytes())?;
        out.write_all(&meta_json)?;
        out.write_all(data)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&temp, self.dir.join(CURRENT))?;
        File::open(&self.dir)?.sync_all()?;
        *saved = Some(meta.last_log_id);
        Ok(())
    }

    /// The current snapshot's meta and data, if one was ever saved.
    pub(crate) fn load(&self) -> Result<Option<(Meta, Vec<u8>)>, DbError> {
        let file = match File::open(self.dir.join(CURRENT)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut reader = BufReader::new(file);
        let meta = read_meta(&mut reader)?;
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Ok(Some((meta, data)))
    }
}

fn read_meta(reader: &mut impl Read) -> Result<Meta, DbError> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if &magic != FILE_MAGIC {
        return Err(DbError::corrupt("snapshot file", "bad header"));
    }
    let mut len = [0u8; 8];
    reader.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_be_bytes(len)).map_err(|e| DbError::corrupt("snapshot file", e))?;
    let mut meta = Vec::new();
    reader.take(len as u64).read_to_end(&mut meta)?;
    serde_json::from_slice(&meta).map_err(|e| DbError::corrupt("snapshot meta", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"".to_vec(), b"".to_vec()), (b"a".to_vec(), vec![0, 255, 7])];
        let mut enc = DataEncoder::new();
        for (k, v) in &pairs {
            enc.push(k, v);
        }
        let data = enc.finish();
        let mut back = Vec::new();
        decode_data(&data, |k, v| back.push((k.to_vec(), v.to_vec()))).unwrap();
        assert_eq!(back, pairs);
        assert!(decode_data(&data[..data.len() - 1], |_, _| ()).is_err());
        assert!(decode_data(b"nonsense", |_, _| ()).is_err());
    }
}
