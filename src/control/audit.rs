//! Append-only audit log: one JSON object per line, fsynced per entry.
//!
//! Readers tolerate a torn last line (a crash mid-append): it is skipped with
//! a warning, every complete line before it is kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::state::StateError;

pub const AUDIT_FILE: &str = "audit.jsonl";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// `decision` or `admin`.
    pub kind: String,
    /// The decision action or admin command.
    pub action: String,
    pub detail: serde_json::Value,
}

pub(crate) struct AuditLog {
    path: PathBuf,
    file: std::fs::File,
}

impl AuditLog {
    pub(crate) fn open(state_dir: &Path) -> Result<Self, StateError> {
        let path = state_dir.join(AUDIT_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
        let mut log = Self { path, file };
        // A crash mid-append leaves a torn last line with no newline: end it,
        // or the next entry would be glued to it and lost with it.
        if log.torn_tail().map_err(|source| StateError::Io {
            path: log.path.clone(),
            source,
        })? {
            tracing::warn!(path = %log.path.display(), "audit log: ending a torn last line");
            log.file
                .write_all(b"\n")
                .and_then(|()| log.file.sync_data())
                .map_err(|source| StateError::Io {
                    path: log.path.clone(),
                    source,
                })?;
        }
        Ok(log)
    }

    /// Whether the file is non-empty and does not end with a newline.
    fn torn_tail(&self) -> std::io::Result<bool> {
        use std::io::{Read, Seek, SeekFrom};
        if self.file.metadata()?.len() == 0 {
            return Ok(false);
        }
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::End(-1))?;
        let mut last = [0u8; 1];
        f.read_exact(&mut last)?;
        Ok(last[0] != b'\n')
    }

    pub(crate) fn append(&mut self, entry: &AuditEntry) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(entry).expect("audit entry serializes");
        line.push(b'\n');
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Reads every complete entry; returns how many torn or invalid lines were skipped.
pub fn read(state_dir: &Path) -> std::io::Result<(Vec<AuditEntry>, usize)> {
    let text = match std::fs::read(state_dir.join(AUDIT_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    let mut skipped = 0;
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice(line) {
            Ok(e) => entries.push(e),
            Err(e) => {
                skipped += 1;
                tracing::warn!(error = %e, "audit log: skipping a torn or invalid line");
            }
        }
    }
    Ok((entries, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_skips_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir.path()).unwrap();
        for i in 0..3 {
            log.append(&AuditEntry {
                at: Utc::now(),
                kind: "admin".into(),
                action: format!("a{i}"),
                detail: serde_json::json!({"i": i}),
            })
            .unwrap();
        }
        drop(log);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(AUDIT_FILE))
            .unwrap();
        f.write_all(b"{\"at\":\"2026-").unwrap();
        let (entries, skipped) = read(dir.path()).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].action, "a2");
        assert_eq!(skipped, 1);

        // Reopened after the crash: the next entry is not glued to the torn line.
        let mut log = AuditLog::open(dir.path()).unwrap();
        log.append(&AuditEntry {
            at: Utc::now(),
            kind: "admin".into(),
            action: "after".into(),
            detail: serde_json::json!({}),
        })
        .unwrap();
        let (entries, skipped) = read(dir.path()).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[3].action, "after");
        assert_eq!(skipped, 1);
    }
}
