//! Checkpoints in the `--state` directory: what a re-run must not send again — per file and
//! mapping for `connect file` (`files/`), per database source and mapping for `connect sql`
//! (`sql/`).
//!
//! Promise: a checkpoint is written whole or not at all (a temporary file, synced, renamed
//! over the old one, the directory synced), so a crash leaves the previous checkpoint; and a
//! checkpoint that does not parse is an error naming its file, never a fresh start that would
//! send everything again.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("state {path}: {message}")]
pub struct StateError {
    pub path: String,
    pub message: String,
}

impl StateError {
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        StateError {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// How far the import of one file (by content) with one mapping (by content) has come.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCheckpoint {
    /// The file's SHA-256.
    pub sha256: String,
    /// The mapping's SHA-256: another mapping makes other leads, so it starts over.
    pub mapping_sha256: String,
    /// The name the file had when last imported (for people; not part of its identity).
    pub input: String,
    /// Every row up to this one is done: accepted, replayed, skipped or rejected.
    pub through_row: u64,
    /// The rows up to `through_row` that were rejected: a re-run reads them again.
    pub rejected_rows: BTreeSet<u64>,
    pub updated_at: String,
}

impl FileCheckpoint {
    /// The row needs nothing more: it was accepted, replayed or skipped before.
    pub fn is_done(&self, row: u64) -> bool {
        row <= self.through_row && !self.rejected_rows.contains(&row)
    }
}

/// How far `connect sql` has read one source (a database URL without its password) with one
/// mapping (by content): every row up to (`watermark`, `key`) in (watermark, key) order was
/// answered — accepted, replayed or rejected — and is not read again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheckpoint {
    /// SHA-256 of the mapping's SHA-256 and the URL without its password: the file's name.
    pub source: String,
    /// The URL without its password (for people; part of `source`).
    pub url: String,
    pub mapping_sha256: String,
    /// The last position answered, as the database's own text of the watermark and key
    /// values; both absent before the first answered row.
    pub watermark: Option<String>,
    pub key: Option<String>,
    /// Rows rejected over all runs (they are behind the position, so not read again).
    pub rejected: u64,
    pub updated_at: String,
}

/// The `--state` directory.
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        for sub in ["files", "sql"] {
            let sub = dir.join(sub);
            std::fs::create_dir_all(&sub)
                .map_err(|error| StateError::new(&sub, format!("cannot create: {error}")))?;
        }
        Ok(StateDir {
            dir: dir.to_owned(),
        })
    }

    fn path_of(&self, sha256: &str, mapping_sha256: &str) -> PathBuf {
        self.dir.join("files").join(format!(
            "{sha256}.{}.json",
            &mapping_sha256[..16.min(mapping_sha256.len())]
        ))
    }

    /// The checkpoint of a file and mapping; an empty one when there is none yet.
    pub fn load(&self, sha256: &str, mapping_sha256: &str) -> Result<FileCheckpoint, StateError> {
        let path = self.path_of(sha256, mapping_sha256);
        let Some(checkpoint) = read_json::<FileCheckpoint>(&path)? else {
            return Ok(FileCheckpoint {
                sha256: sha256.to_owned(),
                mapping_sha256: mapping_sha256.to_owned(),
                ..FileCheckpoint::default()
            });
        };
        if checkpoint.sha256 != sha256 || checkpoint.mapping_sha256 != mapping_sha256 {
            return Err(StateError::new(
                &path,
                "belongs to another file or mapping than its name says",
            ));
        }
        Ok(checkpoint)
    }

    pub fn save(&self, checkpoint: &FileCheckpoint) -> Result<(), StateError> {
        let path = self.path_of(&checkpoint.sha256, &checkpoint.mapping_sha256);
        write_json(&self.dir.join("files"), &path, checkpoint)
    }

    /// Where the checkpoint of a SQL source is kept.
    pub fn sql_path(&self, source: &str) -> PathBuf {
        self.dir.join("sql").join(format!("{source}.json"))
    }

    /// The checkpoint of a SQL source (see [`SqlCheckpoint::source`]); an empty one, at the
    /// start, when there is none yet.
    pub fn load_sql(
        &self,
        source: &str,
        url: &str,
        mapping_sha256: &str,
    ) -> Result<SqlCheckpoint, StateError> {
        let path = self.sql_path(source);
        let Some(checkpoint) = read_json::<SqlCheckpoint>(&path)? else {
            return Ok(SqlCheckpoint {
                source: source.to_owned(),
                url: url.to_owned(),
                mapping_sha256: mapping_sha256.to_owned(),
                ..SqlCheckpoint::default()
            });
        };
        if checkpoint.source != source || checkpoint.mapping_sha256 != mapping_sha256 {
            return Err(StateError::new(
                &path,
                "belongs to another source or mapping than its name says",
            ));
        }
        if checkpoint.watermark.is_some() != checkpoint.key.is_some() {
            return Err(StateError::new(
                &path,
                "holds a watermark without a key or a key without a watermark",
            ));
        }
        Ok(checkpoint)
    }

    pub fn save_sql(&self, checkpoint: &SqlCheckpoint) -> Result<(), StateError> {
        let path = self.sql_path(&checkpoint.source);
        write_json(&self.dir.join("sql"), &path, checkpoint)
    }
}

/// A checkpoint file's content; `None` when there is no such file.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StateError::new(path, format!("cannot read: {error}"))),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|error| {
        StateError::new(
            path,
            format!("does not parse ({error}); move it away only if the data is to be sent again"),
        )
    })
}

/// Writes `value` to `path` whole or not at all: a temporary file, synced, renamed over the old
/// one, then `dir` (the file's directory) synced.
fn write_json<T: Serialize>(dir: &Path, path: &Path, value: &T) -> Result<(), StateError> {
    let temporary = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).expect("a checkpoint serialises");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|error| StateError::new(path, format!("cannot write: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_survives_a_reopen_and_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let fresh = state.load("aa", "bbbb").unwrap();
        assert_eq!(fresh.through_row, 0);
        let mut checkpoint = fresh;
        checkpoint.through_row = 41;
        checkpoint.rejected_rows.insert(7);
        state.save(&checkpoint).unwrap();
        let again = StateDir::open(dir.path())
            .unwrap()
            .load("aa", "bbbb")
            .unwrap();
        assert_eq!(again, checkpoint);
        assert!(again.is_done(41) && !again.is_done(7) && !again.is_done(42));
        assert_eq!(
            state.load("aa", "cccc").unwrap().through_row,
            0,
            "another mapping starts over"
        );
        std::fs::write(
            state.path_of("aa", "bbbb"),
            b"{\"sha256\": \"aa\", \"through",
        )
        .unwrap();
        let error = state.load("aa", "bbbb").unwrap_err().to_string();
        assert!(error.contains("does not parse"), "{error}");
    }

    #[test]
    fn a_sql_checkpoint_survives_a_reopen_and_a_half_position_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut checkpoint = state.load_sql("s1", "postgres://u@h/db", "m1").unwrap();
        assert_eq!(checkpoint.watermark, None);
        checkpoint.watermark = Some("2026-12-01T00:00:00.000001Z".into());
        checkpoint.key = Some("42".into());
        state.save_sql(&checkpoint).unwrap();
        let again = StateDir::open(dir.path())
            .unwrap()
            .load_sql("s1", "postgres://u@h/db", "m1")
            .unwrap();
        assert_eq!(again, checkpoint);
        let error = state.load_sql("s1", "x", "m2").unwrap_err().to_string();
        assert!(error.contains("another source or mapping"), "{error}");
        checkpoint.key = None;
        state.save_sql(&checkpoint).unwrap();
        let error = state.load_sql("s1", "x", "m1").unwrap_err().to_string();
        assert!(error.contains("without a key"), "{error}");
        std::fs::write(state.sql_path("s1"), b"{\"source\": ").unwrap();
        let error = state.load_sql("s1", "x", "m1").unwrap_err().to_string();
        assert!(
            error.contains("does not parse") && error.contains("s1.json"),
            "{error}"
        );
    }
}
