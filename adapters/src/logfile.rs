//! Reading a replica's log file in chunks, for the adapters whose logs are files this node can
//! read (local processes, a Slurm cluster's shared log directory).

use std::io::{ErrorKind, SeekFrom};
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{AdapterError, LogChunk, Result};

/// Largest read one call serves, whatever `max` asks.
const MAX_LOG_READ: usize = 16 << 20;

/// Up to `max` bytes of `path` from `offset`; a file not yet written reads as empty. `ended`
/// says the replica has ended (decided before the read, so that the read sees the final file):
/// the chunk is then `complete` once it reaches the end.
pub(crate) async fn read_chunk(path: &Path, offset: u64, max: usize, ended: bool) -> Result<LogChunk> {
    let unreadable = |e: std::io::Error| AdapterError::Unavailable(format!("log {}: {e}", path.display()));
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok(LogChunk { data: Vec::new(), next_offset: offset, complete: ended });
        }
        Err(e) => return Err(unreadable(e)),
    };
    let len = file.metadata().await.map_err(unreadable)?.len();
    file.seek(SeekFrom::Start(offset)).await.map_err(unreadable)?;
    let mut data = Vec::new();
    file.take(max.min(MAX_LOG_READ) as u64).read_to_end(&mut data).await.map_err(unreadable)?;
    let next_offset = offset + data.len() as u64;
    Ok(LogChunk { data, next_offset, complete: ended && next_offset >= len })
}
