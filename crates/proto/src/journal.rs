//! Append-only JSON-lines logs whose every line carries `seq` and the SHA-256 of the
//! line before it (`prev`), so that an edited, removed or reordered line is detectable.

use crate::identity::hex;
use crate::ProtoError;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    seq: u64,
    prev: String,
}

fn line_hash(line: &str) -> String {
    hex(&Sha256::digest(line.as_bytes()))
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self, ProtoError> {
        if let Some(dir) = path.parent() {
            crate::store::ensure_dir(dir, 0o700)?;
        }
        let (mut seq, mut prev) = (0, GENESIS.to_string());
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Some(last) = text.lines().rfind(|l| !l.trim().is_empty()) {
                    prev = line_hash(last);
                    seq = serde_json::from_str::<Value>(last)
                        .ok()
                        .and_then(|v| v.get("seq").and_then(Value::as_u64))
                        .map(|s| s + 1)
                        .unwrap_or(text.lines().count() as u64);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ProtoError::file(path, e)),
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| ProtoError::file(path, e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            seq,
            prev,
        })
    }

    /// Append one record (a JSON object); `seq` and `prev` are added here.
    pub fn append(&mut self, mut record: Map<String, Value>) -> Result<(), ProtoError> {
        record.insert("seq".into(), Value::from(self.seq));
        record.insert("prev".into(), Value::from(self.prev.clone()));
        let line = Value::Object(record).to_string();
        let mut bytes = line.clone().into_bytes();
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .map_err(|e| ProtoError::file(&self.path, e))?;
        self.seq += 1;
        self.prev = line_hash(&line);
        Ok(())
    }
}

/// What `verify` found wrong, with the 1-based line number a person should look at.
#[derive(Debug, PartialEq, Eq)]
pub struct Tampered {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Tampered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Check the chain of a journal's text; `Ok(lines)` when every line is intact.
pub fn verify(text: &str) -> Result<usize, Tampered> {
    let mut prev_hash = GENESIS.to_string();
    let mut prev_line: Option<&str> = None;
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let v: Value = serde_json::from_str(line).map_err(|e| Tampered {
            line: lineno,
            reason: format!("not a JSON record ({e})"),
        })?;
        let seq = v.get("seq").and_then(Value::as_u64);
        if seq != Some(i as u64) {
            return Err(Tampered {
                line: lineno,
                reason: format!(
                    "sequence number {:?} where {i} was expected: a line before it is missing or lines were reordered",
                    seq
                ),
            });
        }
        if v.get("prev").and_then(Value::as_str) != Some(prev_hash.as_str()) {
            return Err(Tampered {
                line: if prev_line.is_some() {
                    lineno - 1
                } else {
                    lineno
                },
                reason:
                    "its content does not match the hash the next line recorded: it was changed"
                        .into(),
            });
        }
        prev_hash = line_hash(line);
        prev_line = Some(line);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("k".into(), Value::from(k));
        m
    }

    #[test]
    fn chain_detects_edit_delete_reorder() {
        let p = std::env::temp_dir().join(format!("vmux-journal-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&p);
        {
            let mut j = Journal::open(&p).unwrap();
            j.append(rec("a")).unwrap();
            j.append(rec("b")).unwrap();
        }
        let mut j = Journal::open(&p).unwrap();
        j.append(rec("c")).unwrap();
        j.append(rec("d")).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(verify(&text), Ok(4));
        let lines: Vec<&str> = text.lines().collect();

        let edited = text.replacen("\"k\":\"b\"", "\"k\":\"B\"", 1);
        assert_eq!(verify(&edited).unwrap_err().line, 2);
        let deleted = [lines[0], lines[2], lines[3]].join("\n");
        assert_eq!(verify(&deleted).unwrap_err().line, 2);
        let reordered = [lines[0], lines[2], lines[1], lines[3]].join("\n");
        assert_eq!(verify(&reordered).unwrap_err().line, 2);
        std::fs::remove_file(&p).unwrap();
    }
}
