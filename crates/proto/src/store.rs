//! Where state lives, and writing it so that a crash never leaves half a file.

use crate::ProtoError;
use serde::{de::DeserializeOwned, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The root of all vmux state: `$VMUX_HOME`, else `$XDG_DATA_HOME/vmux`, else
/// `~/.local/share/vmux`.
pub fn vmux_home() -> PathBuf {
    if let Some(h) = std::env::var_os("VMUX_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("vmux");
    }
    home_dir().join(".local/share/vmux")
}

pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Create `dir` (and parents) and make it mode `mode`.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), ProtoError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| ProtoError::file(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ProtoError::file(dir, e))
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename,
/// fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ProtoError> {
    replace(path, bytes, mode, true)
}

/// Write a file that only shows what a running daemon is doing (the agent's status),
/// rewritten many times a second under load: readers see the old or the new file,
/// never half of one, but nothing is fsynced (two fsyncs each time cost the agent more
/// than its signatures, and stalled the disk the signer's decision log syncs to). The
/// daemon writes it again when it starts, so a power loss costs nothing.
pub fn write_json_shown<T: Serialize>(path: &Path, value: &T) -> Result<(), ProtoError> {
    replace(path, &json_bytes(value), 0o600, false)
}

/// A state file's text: pretty JSON and a final newline.
fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(value).expect("state serializes");
    b.push(b'\n');
    b
}

fn replace(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<(), ProtoError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir, 0o700)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| ProtoError::file(path, e))
}

/// Read a JSON state file; `None` when it does not exist. A file that exists but does
/// not parse is an error naming the file: never silently replaced.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ProtoError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            ProtoError::file(
                path,
                format!("corrupt state file ({e}); fix or move it away"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProtoError::file(path, e)),
    }
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ProtoError> {
    write_atomic(path, &json_bytes(value), 0o600)
}

/// Read a TOML config file; `T::default()` when it does not exist. An error names the
/// file, line and column (`config.toml:7:1: …`), and a key that is unknown where it
/// stands names the table it landed in.
pub fn read_toml<T: DeserializeOwned + Default>(path: &Path) -> Result<T, ProtoError> {
    match std::fs::read_to_string(path) {
        Ok(s) => toml::from_str(&s).map_err(|e| config_error(path, &s, &e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(ProtoError::file(path, e)),
    }
}

/// `PATH:LINE:COL: message`, with the table a misplaced key landed in.
fn config_error(path: &Path, text: &str, e: &toml::de::Error) -> ProtoError {
    let message = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return ProtoError::file(path, format!("bad config: {message}"));
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    let mut why = message.clone();
    if message.starts_with("unknown field") {
        let table = before.lines().rev().find_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && l.ends_with(']')).then(|| l.to_string())
        });
        if let Some(t) = table {
            why += &format!(
                "; this key is inside table {t}: a top-level key must stand above the first [table] line"
            );
        }
    }
    ProtoError::File {
        path: PathBuf::from(format!("{}:{line}:{col}", path.display())),
        reason: format!("bad config: {}", why.lines().collect::<Vec<_>>().join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_corrupt_read() {
        let d = std::env::temp_dir().join(format!("vmux-store-{}", std::process::id()));
        let p = d.join("x.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2, 3]));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&p, b"{nope").unwrap();
        let err = read_json::<Vec<u32>>(&p).unwrap_err().to_string();
        assert!(err.contains("x.json") && err.contains("corrupt"), "{err}");
        assert_eq!(read_json::<Vec<u32>>(&d.join("missing")).unwrap(), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(default, deny_unknown_fields)]
    #[allow(dead_code)]
    struct Conf {
        name: String,
        ca: Ca,
    }
    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(default, deny_unknown_fields)]
    #[allow(dead_code)]
    struct Ca {
        issue: bool,
    }

    #[test]
    fn config_errors_name_line_column_and_table() {
        let d = std::env::temp_dir().join(format!("vmux-toml-{}", std::process::id()));
        let p = d.join("config.toml");
        ensure_dir(&d, 0o700).unwrap();
        std::fs::write(&p, "# c\n\n\n\n\n\nnmae = \"x\"\n").unwrap();
        let e = read_toml::<Conf>(&p).unwrap_err().to_string();
        assert!(e.contains("config.toml:7:1:") && e.contains("nmae"), "{e}");
        std::fs::write(&p, "[ca]\nissue = true\nname = \"x\"\n").unwrap();
        let e = read_toml::<Conf>(&p).unwrap_err().to_string();
        assert!(
            e.contains(":3:1:") && e.contains("inside table [ca]"),
            "{e}"
        );
        std::fs::write(&p, "name = 3\n").unwrap();
        let e = read_toml::<Conf>(&p).unwrap_err().to_string();
        assert!(e.contains(":1:8:"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
