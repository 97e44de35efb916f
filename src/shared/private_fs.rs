//! Files and directories that only the hub's own user may read.
//!
//! The embedded default keeps names and ID numbers (its SQLite databases) and private keys
//! (its development PKI) in the data directory. Promise: what is made through these functions
//! is created owner-only from the first byte (directories 0700, files 0600) — never created
//! with the umask's wider mode and narrowed afterwards — and an existing one with a wider mode
//! is narrowed, with a warning, since an earlier version or a copy may have left it open.
//! On non-Unix systems the modes do not apply and only creation is done.

use std::io::Write;
use std::path::Path;

/// Creates `dir` (and its parents) if missing, and makes `dir` itself 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    narrow(dir, 0o700)
}

/// Writes `contents` to `path`, created 0600 (an existing file is narrowed to 0600 first).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if path.exists() {
        narrow(path, 0o600)?;
    }
    let mut file = open_private(path, true)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes sure `path` exists as an owner-only file, creating it empty if missing (SQLite takes an
/// empty file as a new database), so the database and the journals SQLite derives its mode
/// from are never readable by others.
pub fn ensure_private_file(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return narrow(path, 0o600);
    }
    open_private(path, false).map(drop)
}

fn open_private(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Removes every permission bit beyond `mode` from an existing path.
fn narrow(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if current & !mode != 0 {
            tracing::warn!(path = %path.display(), from = format!("{current:o}"), to = format!("{mode:o}"), "Narrowing permissions of a private path.");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_paths_are_owner_only_even_when_they_existed_wider() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing wide directory is narrowed");

        let key = dir.join("x.key");
        write_private(&key, b"secret").unwrap();
        assert_eq!(mode(&key), 0o600);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&key, b"secret 2").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::read(&key).unwrap(), b"secret 2");

        let db = dir.join("x.db");
        ensure_private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
    }
}
