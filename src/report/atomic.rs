//! Nothing half-written: files go to a temporary name in the target folder and are renamed into
//! place; whole output folders are built under a hidden staging name and renamed when complete.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: a reader sees the old file or the whole new one.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".anodet-")
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(|e| Error::io(path, e))?;
    temp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    temp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Writes `value` as pretty JSON (with a trailing newline) atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::input(path, format!("cannot encode JSON: {e}")))?;
    text.push(b'\n');
    write_file(path, &text)
}

/// A folder that becomes `target` only on [`StagingDir::commit`]; dropped uncommitted, it is
/// removed, so a failed run leaves neither a partial folder nor a damaged previous one.
#[derive(Debug)]
pub struct StagingDir {
    staging: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Creates the hidden staging folder next to `target` (creating `target`'s parent).
    pub fn new(target: &Path) -> Result<Self> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}.staging-"))
            .tempdir_in(&parent)
            .map_err(|e| Error::io(target, e))?
            .keep();
        Ok(StagingDir { staging, target: target.to_path_buf(), committed: false })
    }

    /// Where to write the folder's content.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Replaces `target` with the staged folder and returns `target`.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            // Move the old folder aside first, so a failed rename can restore it.
            let old = self.staging.with_extension("old");
            fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
            if let Err(e) = fs::rename(&self.staging, &self.target) {
                let _ = fs::rename(&old, &self.target);
                return Err(Error::io(&self.target, e));
            }
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.staging, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_dir_replaces_or_vanishes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("run");
        fs::create_dir_all(&target).unwrap();
        fs::write(target.join("old.txt"), b"old").unwrap();
        {
            let staging = StagingDir::new(&target).unwrap();
            fs::write(staging.path().join("new.txt"), b"new").unwrap();
            // dropped without commit
        }
        assert!(target.join("old.txt").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "staging folder left behind");
        let staging = StagingDir::new(&target).unwrap();
        fs::write(staging.path().join("new.txt"), b"new").unwrap();
        staging.commit().unwrap();
        assert!(target.join("new.txt").exists() && !target.join("old.txt").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_file_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_json(&path, &serde_json::json!({"version": 1})).unwrap();
        write_json(&path, &serde_json::json!({"version": 2})).unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains('2'));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
