//! The built-in centers' [`Storage`]: files under the local center's work dir, bytes in memory
//! for the simulated center. Both take the same `/`-separated relative paths, checked here once
//! so that no path can leave the storage root.

use std::collections::BTreeMap;
use std::io::{ErrorKind, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{AdapterError, Result, Storage};

/// Largest read one `get` serves, whatever `max` asks.
const MAX_READ: usize = 64 << 20;

/// Splits a storage path into its segments; rejects empty, absolute and `.`/`..` paths, empty
/// segments and NUL bytes.
fn segments(path: &str) -> Result<Vec<&str>> {
    let reject = |why: &str| Err(AdapterError::Rejected(format!("storage path '{path}' {why}")));
    if path.is_empty() {
        return reject("is empty");
    }
    if path.starts_with('/') {
        return reject("is absolute; paths are relative to the center's storage root");
    }
    if path.contains('\0') {
        return reject("contains a NUL byte");
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|s| s.is_empty()) {
        return reject("has an empty segment");
    }
    if parts.iter().any(|s| *s == "." || *s == "..") {
        return reject("has a '.' or '..' segment");
    }
    Ok(parts)
}

/// A `list` prefix: empty (everything), or a path optionally ending in `/`.
fn check_prefix(prefix: &str) -> Result<()> {
    match prefix.strip_suffix('/').unwrap_or(prefix) {
        "" if prefix.is_empty() => Ok(()),
        rest => segments(rest).map(|_| ()),
    }
}

/// Files under a directory (the local center's `storage/`). Writes land in a sibling temporary
/// directory first and are renamed into place, so a reader never sees half a file.
pub(crate) struct FsStorage {
    root: PathBuf,
    tmp: PathBuf,
}

/// Numbers temporary files, process-wide: instances on one root never share one.
static TMP_FILES: AtomicU64 = AtomicU64::new(0);

impl FsStorage {
    pub(crate) fn new(root: PathBuf, tmp: PathBuf) -> Self {
        FsStorage { root, tmp }
    }

    fn resolve(&self, path: &str) -> Result<PathBuf> {
        Ok(segments(path)?.iter().fold(self.root.clone(), |p, s| p.join(s)))
    }
}

/// Maps an I/O error on `path` to the adapter's vocabulary.
fn io_error(path: &str, e: std::io::Error) -> AdapterError {
    match e.kind() {
        ErrorKind::NotFound => AdapterError::NotFound(path.to_string()),
        ErrorKind::AlreadyExists | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
            AdapterError::Rejected(format!("storage path '{path}': {e}"))
        }
        _ => AdapterError::Unavailable(format!("storage path '{path}': {e}")),
    }
}

#[async_trait]
impl Storage for FsStorage {
    async fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        let target = self.resolve(path)?;
        let parent = target.parent().expect("a resolved path is below the root");
        tokio::fs::create_dir_all(parent).await.map_err(|e| io_error(path, e))?;
        tokio::fs::create_dir_all(&self.tmp).await.map_err(|e| io_error(path, e))?;
        let n = TMP_FILES.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}", std::process::id()));
        tokio::fs::write(&tmp, data).await.map_err(|e| io_error(path, e))?;
        if let Err(e) = tokio::fs::rename(&tmp, &target).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io_error(path, e));
        }
        Ok(())
    }

    async fn get(&self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>> {
        let mut file = tokio::fs::File::open(self.resolve(path)?).await.map_err(|e| io_error(path, e))?;
        if file.metadata().await.map_err(|e| io_error(path, e))?.is_dir() {
            return Err(AdapterError::NotFound(path.to_string()));
        }
        file.seek(SeekFrom::Start(offset)).await.map_err(|e| io_error(path, e))?;
        let mut data = Vec::new();
        file.take(max.min(MAX_READ) as u64).read_to_end(&mut data).await.map_err(|e| io_error(path, e))?;
        Ok(data)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        check_prefix(prefix)?;
        // Walk only the deepest directory the prefix names in full.
        let base = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if base.is_empty() { self.root.clone() } else { self.resolve(base)? };
        let mut found = Vec::new();
        let mut dirs = vec![(start, base.to_string())];
        while let Some((dir, rel)) = dirs.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => continue,
                Err(e) => return Err(io_error(prefix, e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| io_error(prefix, e))? {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
                let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                let meta = entry.metadata().await.map_err(|e| io_error(&path, e))?;
                if meta.is_dir() {
                    dirs.push((entry.path(), path));
                } else if path.starts_with(prefix) {
                    found.push((path, meta.len()));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let target = self.resolve(path)?;
        match tokio::fs::remove_file(&target).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(path, e)),
        }
        // Drop directories the delete left empty (remove_dir refuses non-empty ones).
        let mut dir = target.parent();
        while let Some(d) = dir.filter(|d| *d != self.root.as_path()) {
            if tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// Bytes in memory (the simulated center's storage; lost when the process ends).
#[derive(Default)]
pub(crate) struct MemStorage {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemStorage {
    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Storage for MemStorage {
    async fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        segments(path)?;
        self.files().insert(path.to_string(), data.to_vec());
        Ok(())
    }

    async fn get(&self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>> {
        segments(path)?;
        let files = self.files();
        let data = files.get(path).ok_or_else(|| AdapterError::NotFound(path.to_string()))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(max.min(MAX_READ)).min(data.len());
        Ok(data[start..end].to_vec())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        check_prefix(prefix)?;
        let files = self.files();
        Ok(files
            .range(prefix.to_string()..)
            .take_while(|(path, _)| path.starts_with(prefix))
            .map(|(path, data)| (path.clone(), data.len() as u64))
            .collect())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        segments(path)?;
        self.files().remove(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        for bad in ["", "/etc/passwd", "a//b", "a/", "../x", "a/../../x", "./a", "a\0b"] {
            assert!(matches!(segments(bad), Err(AdapterError::Rejected(_))), "{bad:?} accepted");
        }
        assert_eq!(segments("a/b.txt").unwrap(), vec!["a", "b.txt"]);
        assert!(check_prefix("").is_ok() && check_prefix("a/").is_ok() && check_prefix("a/b").is_ok());
        assert!(check_prefix("/").is_err() && check_prefix("../").is_err() && check_prefix("a//").is_err());
        let fs = FsStorage::new(PathBuf::from("/srv/root"), PathBuf::from("/srv/tmp"));
        assert_eq!(fs.resolve("x/y").unwrap(), PathBuf::from("/srv/root/x/y"));
    }

    #[tokio::test]
    async fn fs_storage_rejects_a_file_used_as_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::new(dir.path().join("s"), dir.path().join("t"));
        fs.put("a", b"1").await.unwrap();
        assert!(matches!(fs.put("a/b", b"2").await, Err(AdapterError::Rejected(_))));
        assert!(matches!(fs.get("nope", 0, 1).await, Err(AdapterError::NotFound(_))));
        fs.put("d/e/f", b"xyz").await.unwrap();
        fs.delete("d/e/f").await.unwrap();
        assert!(!dir.path().join("s/d").exists(), "emptied directories are removed");
        assert_eq!(fs.list("").await.unwrap(), vec![("a".to_string(), 1)]);
    }
}
