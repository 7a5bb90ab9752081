//! Small file helpers every layer uses: atomic writes and content digests.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// SHA-256 of a byte string, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename, so
/// an interrupted write never leaves a half-written file where the user's was. `mode` sets unix
/// permissions on the temporary file before anything is written (0600 for secrets).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old file is replaced, never rewritten in place: a reader that opened it before the
    /// write still reads the old bytes in full (a truncate-and-write would show it a
    /// truncated or new file), the new content appears whole, secrets get mode 0600 and no
    /// temporary file is left behind.
    #[test]
    fn writes_replace_the_file_whole_and_leave_nothing_behind() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let old = vec![7u8; 1 << 20];
        write_atomic(&path, &old, None).unwrap();
        let mut reader = std::fs::File::open(&path).unwrap();
        let new = vec![9u8; 1000];
        write_atomic(&path, &new, Some(0o600)).unwrap();
        let mut seen = Vec::new();
        reader.read_to_end(&mut seen).unwrap();
        assert_eq!(seen, old, "the open reader saw the old file change");
        assert_eq!(std::fs::read(&path).unwrap(), new);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "a temporary file was left behind");
    }
}
