//! Append-only JSON-lines logs whose every line carries `seq` and the SHA-256 of the
//! line before it (`prev`), so that an edited, removed or reordered line is detectable.
//!
//! Beside each log an anchor (`<log>.anchor`: the last sequence number and the hash of
//! that line, rewritten in place after each durable round) lets `--verify` also report
//! what a chain alone cannot: a truncated tail, a deleted log, a log rewritten from
//! scratch. Appends reach the
//! kernel at once (a process crash loses nothing) and are made durable by a flusher
//! thread that fsyncs and moves the anchor forward at most every 20 ms, one fsync for
//! all appends in between (measured in benches/sign.rs). A torn last line (a crash mid-write) is
//! cut off when the log is opened, and the chain goes on from the last whole line. A log
//! that was moved or replaced while open (logrotate, an editor) is reopened and starts a
//! new chain whose first record names the previous chain's last hash.

use crate::identity::hex;
use crate::ProtoError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain stood at its last durable append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Anchor {
    /// Sequence number of the last line made durable.
    pub seq: u64,
    /// SHA-256 of that line.
    pub hash: String,
}

pub fn anchor_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".anchor");
    PathBuf::from(s)
}

pub fn read_anchor(log: &Path) -> Option<Anchor> {
    // The flusher rewrites the anchor in place; a read that overlapped that write is
    // simply read again.
    for _ in 0..3 {
        let text = std::fs::read_to_string(anchor_path(log)).ok()?;
        if let Ok(a) = serde_json::from_str(&text) {
            return Some(a);
        }
    }
    None
}

/// The anchor file's fixed size: JSON padded with spaces, so that each round rewrites
/// it in place with one small write.
const ANCHOR_WIDTH: usize = 128;

/// Move the anchor forward. It is written in place and not fsynced: the kernel writes
/// it back within seconds, and until then it is what every reader sees. A power loss
/// can leave it behind the log (or, in a torn sector, unreadable), which only shortens
/// the tail `verify` can vouch for; it never names a line that is not on disk, because
/// it is written after the log's `fdatasync`. (Renaming a fsynced copy into place, as
/// it once was, cost two more fsyncs per durable round: most of an approval's time on
/// the signer, measured by scripts/bench.) A missing, replaced or odd-sized anchor is
/// created again the careful way.
fn write_anchor(path: &Path, a: &Anchor) -> Result<(), ProtoError> {
    use std::os::unix::fs::FileExt;
    let mut text = serde_json::to_vec(a).expect("anchor serializes");
    if text.len() >= ANCHOR_WIDTH {
        return crate::store::write_atomic(path, &text, 0o600);
    }
    text.resize(ANCHOR_WIDTH - 1, b' ');
    text.push(b'\n');
    let in_place = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|f| {
            let m = f.metadata()?;
            if !m.is_file() || m.len() != ANCHOR_WIDTH as u64 {
                return Ok(false);
            }
            f.write_all_at(&text, 0).map(|()| true)
        });
    match in_place {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => crate::store::write_atomic(path, &text, 0o600),
    }
}

struct Pending {
    /// The latest appended line's anchor, not yet durable.
    anchor: Option<Anchor>,
    file: Option<Arc<std::fs::File>>,
    stop: bool,
    /// The highest sequence number known to be on disk (fdatasync done).
    durable: Option<u64>,
    /// Why the last sync failed, while it stays failed: nothing after it is durable.
    failed: Option<String>,
    /// Callers waiting for their line to be durable: the flusher does not pause then.
    waiting: usize,
}

/// A line that was appended; [`Durable::wait`] returns once it is on disk.
pub struct Durable {
    flusher: Arc<Flusher>,
    seq: u64,
    path: PathBuf,
}

impl Durable {
    /// How this line's wait ends, once it does: on disk, or the sync failed.
    fn outcome(&self, p: &Pending) -> Option<Result<(), ProtoError>> {
        if let Some(e) = &p.failed {
            return Some(Err(ProtoError::file(
                &self.path,
                format!("not written to disk: {e}"),
            )));
        }
        p.durable.is_some_and(|d| d >= self.seq).then_some(Ok(()))
    }

    /// Wait until this line is on disk (fdatasync done); an error when the sync failed,
    /// so the caller can refuse what the line records.
    pub fn wait(self) -> Result<(), ProtoError> {
        let mut p = self.flusher.state.lock().unwrap();
        p.waiting += 1;
        self.flusher.wake.notify_one();
        let r = loop {
            if let Some(r) = self.outcome(&p) {
                break r;
            }
            p = self.flusher.done.wait(p).unwrap();
        };
        p.waiting -= 1;
        r
    }

    /// The same for async code, without a thread of its own: it awaits the flusher's
    /// rounds (a blocking thread per wait cost two thread wake-ups per approval).
    pub async fn wait_async(self) -> Result<(), ProtoError> {
        /// Counted as waiting while the future lives: the flusher does not pause then.
        struct Waiting<'a>(&'a Flusher);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.state.lock().unwrap().waiting -= 1;
            }
        }
        let f = &*self.flusher;
        f.state.lock().unwrap().waiting += 1;
        f.wake.notify_one();
        let _waiting = Waiting(f);
        loop {
            let round = f.rounds.notified();
            tokio::pin!(round);
            // Registered before the check, so a round that ends in between is not missed.
            round.as_mut().enable();
            if let Some(r) = self.outcome(&f.state.lock().unwrap()) {
                return r;
            }
            round.await;
        }
    }
}

struct Flusher {
    state: Mutex<Pending>,
    wake: Condvar,
    /// Signalled after each durable round (for `sync`).
    done: Condvar,
    /// The same, for [`Durable::wait_async`].
    rounds: tokio::sync::Notify,
}

pub struct Journal {
    path: PathBuf,
    file: Arc<std::fs::File>,
    /// (device, inode) of the file we write, to notice rotation.
    ident: (u64, u64),
    seq: u64,
    prev: String,
    flusher: Arc<Flusher>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Bytes of a line whose write was cut short (a full disk) and could not be taken
    /// back yet: taken back before the next line is written.
    torn: u64,
    /// Bytes in the file we write (for rotation by size).
    size: u64,
    /// Rotate when the file reaches this many bytes, keeping this many old files
    /// (`<log>.1` the newest).
    rotate: Option<(u64, usize)>,
    /// When the path was last looked at for a log moved aside (see `follow_rotation`);
    /// `None`: look at the next append.
    looked: Option<std::time::Instant>,
}

/// A log moved aside under a running daemon is noticed within this long: looking costs
/// a `stat` of the path, which once a request was a tenth of the agent's own time.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// A line's hash, without its newline: what the next line's `prev` names.
fn line_hash(line: &str) -> String {
    hex(&Sha256::digest(line.as_bytes()))
}

/// Cut a torn last line off `path` (a crash mid-write); returns the whole lines' text.
fn repair(path: &Path, text: String) -> Result<String, ProtoError> {
    let keep = whole_len(text.as_bytes());
    if keep == text.len() {
        return Ok(text);
    }
    cut(path, text.len() - keep, keep as u64)?;
    Ok(text[..keep].to_string())
}

/// How much of `text` (a log, or its tail starting at a line boundary) is whole
/// records: up to the last newline, less a last line that is not a record.
fn whole_len(text: &[u8]) -> usize {
    let whole_end = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    // The last complete line must be a record too; a half-written one is dropped.
    let body = &text[..whole_end.saturating_sub(1)];
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = &text[start..whole_end.saturating_sub(1)];
    if whole_end > 0
        && !last.iter().all(u8::is_ascii_whitespace)
        && serde_json::from_slice::<Value>(last).is_err()
    {
        start
    } else {
        whole_end
    }
}

fn cut(path: &Path, torn: usize, keep: u64) -> Result<(), ProtoError> {
    tracing::warn!(
        "{}: cut off a torn last line ({torn} bytes) left by a crash; the chain goes on from the line before",
        path.display(),
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| ProtoError::file(path, e))?;
    f.set_len(keep)
        .and_then(|_| f.sync_all())
        .map_err(|e| ProtoError::file(path, e))
}

/// Where a log's chain goes on: `(seq, prev)` after its last whole record, cutting a
/// torn end off first. Only the log's tail is read (a few KiB, doubling until it holds
/// the last two lines), so opening a log costs the same with ten lines or a million.
fn resume(path: &Path) -> Result<(u64, String), ProtoError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS.into())),
        Err(e) => return Err(ProtoError::file(path, e)),
    };
    let len = f.metadata().map_err(|e| ProtoError::file(path, e))?.len();
    let mut want: u64 = 4 * 1024;
    let (start, buf) = loop {
        let start = len.saturating_sub(want);
        let mut buf = Vec::with_capacity((len - start) as usize);
        f.seek(SeekFrom::Start(start))
            .and_then(|_| (&mut f).take(len - start).read_to_end(&mut buf))
            .map_err(|e| ProtoError::file(path, e))?;
        // Enough when the tail holds three newlines (two whole lines and the torn
        // rest), or it is the whole file.
        if start == 0 || buf.iter().filter(|&&b| b == b'\n').count() >= 3 {
            // Begin at a line boundary.
            let skip = if start == 0 {
                0
            } else {
                buf.iter()
                    .position(|&b| b == b'\n')
                    .map_or(buf.len(), |i| i + 1)
            };
            break (start + skip as u64, buf[skip..].to_vec());
        }
        want *= 2;
    };
    let keep = whole_len(&buf);
    if keep < buf.len() {
        cut(path, buf.len() - keep, start + keep as u64)?;
    }
    let text = String::from_utf8_lossy(&buf[..keep]);
    let Some(last) = text.lines().rfind(|l| !l.trim().is_empty()) else {
        return Ok((0, GENESIS.into()));
    };
    let prev = line_hash(last);
    let seq = match serde_json::from_str::<Value>(last)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
    {
        Some(s) => s + 1,
        // Not one of ours: count its lines (the only case that reads the whole log).
        None => std::fs::read(path)
            .map(|t| t.iter().filter(|&&b| b == b'\n').count() as u64)
            .unwrap_or(0),
    };
    Ok((seq, prev))
}

fn open_append(path: &Path) -> Result<(std::fs::File, (u64, u64)), ProtoError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ProtoError::file(path, e))?;
    let m = file.metadata().map_err(|e| ProtoError::file(path, e))?;
    Ok((file, (m.dev(), m.ino())))
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self, ProtoError> {
        if let Some(dir) = path.parent() {
            crate::store::ensure_dir(dir, 0o700)?;
        }
        let (seq, prev) = resume(path)?;
        let (file, ident) = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let file = Arc::new(file);
        let flusher = Arc::new(Flusher {
            state: Mutex::new(Pending {
                anchor: None,
                file: None,
                stop: false,
                durable: seq.checked_sub(1),
                failed: None,
                waiting: 0,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            rounds: tokio::sync::Notify::new(),
        });
        let thread = {
            let (f, anchor) = (flusher.clone(), anchor_path(path));
            std::thread::Builder::new()
                .name("journal-flush".into())
                .spawn(move || flush_loop(&f, &anchor))
                .map_err(|e| ProtoError::file(path, e))?
        };
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            ident,
            seq,
            prev,
            flusher,
            thread: Some(thread),
            torn: 0,
            size,
            rotate: None,
            looked: None,
        })
    }

    /// Rotate the log when it reaches `max_bytes`: it becomes `<log>.1` (older ones
    /// `.2` … `.keep`, the oldest beyond that removed) and a new chain starts at `<log>`
    /// whose first record names the last hash of the one before, so
    /// [`verify_rotated`] follows the chain across the files.
    pub fn rotate_at(mut self, max_bytes: u64, keep: usize) -> Self {
        self.rotate = Some((max_bytes.max(1), keep.max(1)));
        self
    }

    fn rotate_if_full(&mut self) -> Result<(), ProtoError> {
        let Some((max, keep)) = self.rotate else {
            return Ok(());
        };
        if self.size < max {
            return Ok(());
        }
        // Moved aside here: followed at once, not within `LOOK_EVERY`.
        self.looked = None;
        self.sync();
        let _ = std::fs::remove_file(rotated(&self.path, keep));
        for i in (1..keep).rev() {
            let _ = std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))
            .map_err(|e| ProtoError::file(&self.path, format!("rotating: {e}")))
    }

    /// Append one record (a JSON object); `seq` and `prev` are added here (any the
    /// map has are replaced). The line is in the kernel when this returns; the returned
    /// [`Durable`] waits for the disk.
    pub fn append(&mut self, mut record: Map<String, Value>) -> Result<Durable, ProtoError> {
        record.remove("seq");
        record.remove("prev");
        self.append_record(&record)
    }

    /// Append one record of any type that serialises to a JSON object with no `seq` or
    /// `prev` field of its own: a typed record is written without building a map first
    /// (the agent's per-request line; measured by scripts/bench). `seq` and `prev` end
    /// the line.
    pub fn append_record<T: Serialize + ?Sized>(
        &mut self,
        record: &T,
    ) -> Result<Durable, ProtoError> {
        self.rotate_if_full()?;
        self.follow_rotation()?;
        if let Some(e) = self.flusher.state.lock().unwrap().failed.clone() {
            // A failed sync may have lost lines the chain continues from: nothing more
            // is written until the disk works again (the flusher retries).
            return Err(ProtoError::file(&self.path, format!("not writable: {e}")));
        }
        let mut line = Vec::with_capacity(320);
        serde_json::to_writer(&mut line, record)
            .map_err(|e| ProtoError::file(&self.path, format!("a record: {e}")))?;
        if line.len() < 2 || line[0] != b'{' || line.pop() != Some(b'}') {
            return Err(ProtoError::file(
                &self.path,
                "a record must be a JSON object",
            ));
        }
        if line.len() > 1 {
            line.push(b',');
        }
        let _ = write!(line, "\"seq\":{},\"prev\":\"{}\"}}", self.seq, self.prev);
        let hash = hex(&Sha256::digest(&line));
        line.push(b'\n');
        self.write_whole(&line)?;
        self.prev = hash;
        let anchor = Anchor {
            seq: self.seq,
            hash: self.prev.clone(),
        };
        let seq = self.seq;
        self.seq += 1;
        let mut p = self.flusher.state.lock().unwrap();
        // The flusher waits only while nothing is pending: wake it on that change alone
        // (a wake is a system call; at thousands of appends a second it was one each).
        let idle = p.anchor.replace(anchor).is_none();
        if !p.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, &self.file)) {
            p.file = Some(self.file.clone());
        }
        // Woken after the lock is let go: a flusher woken under it would only wake to
        // block on it (two more context switches per durable append).
        drop(p);
        if idle {
            self.flusher.wake.notify_one();
        }
        Ok(Durable {
            flusher: self.flusher.clone(),
            seq,
            path: self.path.clone(),
        })
    }

    /// Write one whole line or nothing. A write cut short (a full disk: the kernel took
    /// part of the line, then said ENOSPC) is taken back, so that the next line does not
    /// start in the middle of this one and break the chain for good (the soak found
    /// that: a line glued to the half of another, in the middle of the log).
    fn write_whole(&mut self, bytes: &[u8]) -> Result<(), ProtoError> {
        self.take_back_torn()?;
        let mut done = 0;
        while done < bytes.len() {
            match (&*self.file).write(&bytes[done..]) {
                Ok(0) => {
                    self.size -= done as u64;
                    self.torn = done as u64;
                    let _ = self.take_back_torn();
                    return Err(ProtoError::file(&self.path, "the disk took no more bytes"));
                }
                Ok(n) => {
                    done += n;
                    self.size += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.size -= done as u64;
                    self.torn = done as u64;
                    let _ = self.take_back_torn();
                    return Err(ProtoError::file(&self.path, e));
                }
            }
        }
        Ok(())
    }

    /// Cut off the part of a line a failed write left at the end of the file.
    fn take_back_torn(&mut self) -> Result<(), ProtoError> {
        if self.torn == 0 {
            return Ok(());
        }
        let len = self
            .file
            .metadata()
            .map_err(|e| ProtoError::file(&self.path, e))?
            .len();
        self.file
            .set_len(len.saturating_sub(self.torn))
            .map_err(|e| {
                ProtoError::file(&self.path, format!("cannot take back a torn line: {e}"))
            })?;
        self.torn = 0;
        Ok(())
    }

    /// Wait until everything appended so far is durable (fsynced, anchored).
    pub fn sync(&self) {
        let mut p = self.flusher.state.lock().unwrap();
        while p.anchor.is_some() {
            p = self.flusher.done.wait(p).unwrap();
        }
    }

    /// The log at our path is no longer the file we write (moved aside, replaced):
    /// write to a fresh file there, starting a new chain that names the old one.
    fn follow_rotation(&mut self) -> Result<(), ProtoError> {
        let t = std::time::Instant::now();
        if self
            .looked
            .is_some_and(|l| t.duration_since(l) < LOOK_EVERY)
        {
            return Ok(());
        }
        self.looked = Some(t);
        let now = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if now == Some(self.ident) {
            return Ok(());
        }
        self.sync();
        let (last_seq, last_hash) = (self.seq.checked_sub(1), self.prev.clone());
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let text = if text.is_empty() {
            text
        } else {
            repair(&self.path, text)?
        };
        let (file, ident) = open_append(&self.path)?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Arc::new(file);
        self.ident = ident;
        self.torn = 0;
        match text.lines().rfind(|l| !l.trim().is_empty()) {
            // Someone put a log there: go on from its last line.
            Some(last) => {
                self.prev = line_hash(last);
                self.seq = serde_json::from_str::<Value>(last)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(Value::as_u64))
                    .map(|s| s + 1)
                    .unwrap_or(text.lines().count() as u64);
            }
            None => {
                self.seq = 0;
                self.prev = GENESIS.to_string();
            }
        }
        tracing::info!(
            "{}: the log was moved or replaced; writing a new chain there",
            self.path.display()
        );
        let mut start = Map::new();
        start.insert("time".into(), Value::from(crate::now_unix()));
        start.insert("event".into(), Value::from("chainStart"));
        start.insert(
            "previousChain".into(),
            serde_json::json!({"lastSeq": last_seq, "lastHash": last_hash}),
        );
        // Appending re-checks the file: it is ours now.
        self.append(start).map(|_| ())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        {
            let mut p = self.flusher.state.lock().unwrap();
            p.stop = true;
            self.flusher.wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flush_loop(f: &Flusher, anchor_path: &Path) {
    loop {
        let (anchor, file) = {
            let mut p = f.state.lock().unwrap();
            while p.anchor.is_none() && !p.stop {
                p = f.wake.wait(p).unwrap();
            }
            if p.anchor.is_none() && p.stop {
                return;
            }
            (p.anchor.clone(), p.file.clone())
        };
        let synced = match file {
            Some(file) => file.sync_data().map_err(|e| e.to_string()),
            None => Ok(()),
        };
        // The lines are on disk: whoever waits for them goes on now; the anchor
        // follows (see `write_anchor`).
        if synced.is_ok() {
            let mut p = f.state.lock().unwrap();
            p.durable = anchor.as_ref().map(|a| a.seq).max(p.durable);
            drop(p);
            f.done.notify_all();
            f.rounds.notify_waiters();
        }
        // The anchor moves only past lines that are on disk.
        let synced = synced.and_then(|()| match &anchor {
            Some(a) => write_anchor(anchor_path, a).map_err(|e| e.to_string()),
            None => Ok(()),
        });
        let pause = {
            let mut p = f.state.lock().unwrap();
            match synced {
                Ok(()) => {
                    if p.failed.take().is_some() {
                        tracing::info!("{}: the disk takes writes again", anchor_path.display());
                    }
                    if p.anchor == anchor {
                        p.anchor = None;
                    }
                    p.durable = anchor.as_ref().map(|a| a.seq).max(p.durable);
                }
                Err(e) => {
                    if p.failed.is_none() {
                        tracing::error!("{}: sync failed: {e}", anchor_path.display());
                    }
                    p.failed = Some(e);
                }
            }
            f.done.notify_all();
            f.rounds.notify_waiters();
            if p.stop && p.failed.is_none() {
                continue;
            }
            if p.stop {
                return;
            }
            // A failed disk is retried a little later; appends gather for a moment when
            // nobody waits for them (one fsync and one anchor for all of them).
            if p.failed.is_some() {
                Some(RETRY)
            } else if p.waiting == 0 {
                Some(GATHER)
            } else {
                None
            }
        };
        match pause {
            Some(RETRY) => std::thread::sleep(RETRY),
            // Gathering ends early when someone starts waiting: an approval must not
            // sit out the pause that appends nobody waits for get.
            Some(d) => {
                let until = std::time::Instant::now() + d;
                let mut p = f.state.lock().unwrap();
                while p.waiting == 0 && !p.stop {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    p = f.wake.wait_timeout(p, left).unwrap().0;
                }
            }
            None => {}
        }
    }
}

/// How long a failed sync waits before it is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// How long the flusher lets appends gather between durable rounds.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// What `verify` found wrong, with the 1-based line number a person should look at
/// (0: the file as a whole).
#[derive(Debug, PartialEq, Eq)]
pub struct Tampered {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Tampered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "line {}: {}", self.line, self.reason)
        }
    }
}

/// A chain that verified.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub lines: usize,
    /// Set when the chain starts where an earlier (rotated) chain ended: its last hash.
    pub continues: Option<String>,
    /// Whether an anchor confirmed the tail.
    pub anchored: bool,
}

/// Check the chain of a journal's text; `Ok(lines)` when every line is intact.
pub fn verify(text: &str) -> Result<usize, Tampered> {
    verify_chain(text).map(|v| v.lines)
}

fn verify_chain(text: &str) -> Result<Verified, Tampered> {
    let mut prev_hash = GENESIS.to_string();
    let mut prev_line: Option<&str> = None;
    let mut n = 0;
    let mut continues = None;
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
                    "sequence number {} where {i} was expected: a line before it is missing or lines were reordered",
                    seq.map(|s| s.to_string()).unwrap_or_else(|| "missing".into())
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
        if i == 0 && v.get("event").and_then(Value::as_str) == Some("chainStart") {
            continues = v
                .pointer("/previousChain/lastHash")
                .and_then(Value::as_str)
                .map(String::from);
        }
        prev_hash = line_hash(line);
        prev_line = Some(line);
        n += 1;
    }
    Ok(Verified {
        lines: n,
        continues,
        anchored: false,
    })
}

/// Verify the log at `path` against its chain and its anchor: besides edited, removed
/// or reordered lines, a cut tail, a deleted log and a full rewrite are reported.
pub fn verify_file(path: &Path) -> Result<Verified, Tampered> {
    let anchor = read_anchor(path);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match anchor {
                Some(a) => Err(Tampered {
                    line: 0,
                    reason: format!(
                        "the log is gone, but its anchor says it had {} lines: it was deleted",
                        a.seq + 1
                    ),
                }),
                None => Ok(Verified {
                    lines: 0,
                    continues: None,
                    anchored: false,
                }),
            };
        }
        Err(e) => {
            return Err(Tampered {
                line: 0,
                reason: e.to_string(),
            })
        }
    };
    let mut v = verify_chain(&text)?;
    if let Some(a) = anchor {
        let lines: Vec<&str> = text.lines().collect();
        match lines.get(a.seq as usize) {
            None => {
                return Err(Tampered {
                    line: lines.len(),
                    reason: format!(
                        "the log ends at line {} but its anchor says it had {} lines: its tail was cut off",
                        lines.len(),
                        a.seq + 1
                    ),
                })
            }
            Some(l) if line_hash(l) != a.hash => {
                return Err(Tampered {
                    line: a.seq as usize + 1,
                    reason: "this line is not the one the anchor recorded: the log was rewritten"
                        .into(),
                })
            }
            Some(_) => v.anchored = true,
        }
    }
    Ok(v)
}

/// `<log>.n`: the n-th newest rotated file.
pub fn rotated(log: &Path, n: usize) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Verify the log at `path` with the files rotated out of it (`<log>.N` … `<log>.1`),
/// oldest first: each file's chain, the anchor of the current one, and that each file
/// starts where the one before it ended. Returns every file checked with its result
/// (the oldest kept file may continue one removed by rotation: that is not an error).
pub fn verify_rotated(path: &Path) -> Result<Vec<(PathBuf, Verified)>, (PathBuf, Tampered)> {
    // Every `<log>.n` there is; one missing below the highest is a removed file.
    let name = path.file_name().map(|n| n.to_string_lossy().to_string());
    let highest = std::fs::read_dir(path.parent().unwrap_or(Path::new(".")))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().to_string();
            f.strip_prefix(&format!("{}.", name.as_deref()?))?
                .parse::<usize>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let mut files = vec![];
    for n in (1..=highest).rev() {
        let f = rotated(path, n);
        if !f.exists() {
            return Err((
                f,
                Tampered {
                    line: 0,
                    reason: format!(
                        "this rotated log is missing, but older ones (up to .{highest}) are there: it was removed"
                    ),
                },
            ));
        }
        files.push(f);
    }
    let mut out = vec![];
    let mut last_hash: Option<String> = None;
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| {
            (
                f.clone(),
                Tampered {
                    line: 0,
                    reason: e.to_string(),
                },
            )
        })?;
        let v = verify_chain(&text).map_err(|t| (f.clone(), t))?;
        linked(f, &v, last_hash.as_deref())?;
        last_hash = text.lines().last().map(line_hash);
        out.push((f.clone(), v));
    }
    let v = verify_file(path).map_err(|t| (path.to_path_buf(), t))?;
    if v.lines > 0 {
        linked(path, &v, last_hash.as_deref())?;
    }
    out.push((path.to_path_buf(), v));
    Ok(out)
}

fn linked(f: &Path, v: &Verified, before: Option<&str>) -> Result<(), (PathBuf, Tampered)> {
    match (before, v.continues.as_deref()) {
        (Some(b), Some(c)) if b != c => Err((
            f.to_path_buf(),
            Tampered {
                line: 1,
                reason: "this chain does not start where the rotated log before it ended: \
                         a rotated file was changed, replaced or removed"
                    .into(),
            },
        )),
        (Some(_), None) => Err((
            f.to_path_buf(),
            Tampered {
                line: 1,
                reason: "this log starts a new chain although a rotated log comes before it: \
                         it was rewritten from scratch"
                    .into(),
            },
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("k".into(), Value::from(k));
        m
    }

    /// The chain of the log at `p`, verified.
    fn verify_at(p: &Path) -> Result<usize, Tampered> {
        verify(&std::fs::read_to_string(p).unwrap())
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmux-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("x.log")
    }

    #[test]
    fn rotation_by_size_keeps_one_chain_across_files() {
        let p = tmp("by-size");
        {
            let mut j = Journal::open(&p).unwrap().rotate_at(400, 3);
            for i in 0..40 {
                let mut r = Map::new();
                r.insert("event".into(), Value::from("sign"));
                r.insert("n".into(), Value::from(i));
                j.append(r).unwrap().wait().unwrap();
            }
        }
        assert!(rotated(&p, 3).exists() && !rotated(&p, 4).exists());
        assert!(std::fs::metadata(&p).unwrap().len() < 800);
        let v = verify_rotated(&p).unwrap();
        assert_eq!(v.len(), 4);
        assert!(v.last().unwrap().1.anchored);
        // The oldest kept file continues one rotation removed: not an error.
        assert!(v[0].1.continues.is_some());
        // A rotated file edited, or removed from the middle: found, and named.
        let mid = rotated(&p, 2);
        let text = std::fs::read_to_string(&mid).unwrap();
        std::fs::write(&mid, text.replacen("sign", "sigN", 1)).unwrap();
        let (f, t) = verify_rotated(&p).unwrap_err();
        assert_eq!(f, mid, "{t}");
        std::fs::write(&mid, &text).unwrap();
        assert!(verify_rotated(&p).is_ok());
        std::fs::remove_file(&mid).unwrap();
        let (f, t) = verify_rotated(&p).unwrap_err();
        assert!(f == mid && t.to_string().contains("removed"), "{f:?} {t}");
    }

    #[test]
    fn chain_detects_edit_delete_reorder() {
        let p = tmp("chain");
        {
            let mut j = Journal::open(&p).unwrap();
            j.append(rec("a")).unwrap();
            j.append(rec("b")).unwrap();
        }
        let mut j = Journal::open(&p).unwrap();
        j.append(rec("c")).unwrap();
        j.append(rec("d")).unwrap();
        j.sync();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(verify(&text), Ok(4));
        assert!(verify_file(&p).unwrap().anchored);
        let lines: Vec<&str> = text.lines().collect();

        let edited = text.replacen("\"k\":\"b\"", "\"k\":\"B\"", 1);
        assert_eq!(verify(&edited).unwrap_err().line, 2);
        let deleted = [lines[0], lines[2], lines[3]].join("\n");
        assert_eq!(verify(&deleted).unwrap_err().line, 2);
        let reordered = [lines[0], lines[2], lines[1], lines[3]].join("\n");
        assert_eq!(verify(&reordered).unwrap_err().line, 2);
    }

    #[test]
    fn the_anchor_moves_in_place_and_comes_back_when_removed_or_replaced() {
        let p = tmp("in-place");
        let a = anchor_path(&p);
        let mut j = Journal::open(&p).unwrap();
        j.append(rec("a")).unwrap().wait().unwrap();
        j.sync();
        let ino = std::fs::metadata(&a).unwrap().ino();
        assert_eq!(std::fs::metadata(&a).unwrap().len(), ANCHOR_WIDTH as u64);
        j.append(rec("b")).unwrap().wait().unwrap();
        j.sync();
        assert_eq!(
            std::fs::metadata(&a).unwrap().ino(),
            ino,
            "rewritten in place"
        );
        assert_eq!(read_anchor(&p).unwrap().seq, 1);
        // Removed: written again on the next round.
        std::fs::remove_file(&a).unwrap();
        j.append(rec("c")).unwrap().wait().unwrap();
        j.sync();
        assert_eq!(read_anchor(&p).unwrap().seq, 2);
        // Replaced by a link to another file: that file is left alone, the link replaced.
        let elsewhere = p.with_file_name("elsewhere");
        std::fs::write(&elsewhere, " ".repeat(ANCHOR_WIDTH)).unwrap();
        std::fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &a).unwrap();
        j.append(rec("d")).unwrap().wait().unwrap();
        j.sync();
        assert_eq!(
            std::fs::read_to_string(&elsewhere).unwrap(),
            " ".repeat(ANCHOR_WIDTH)
        );
        assert!(!std::fs::symlink_metadata(&a)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(read_anchor(&p).unwrap().seq, 3);
        drop(j);
        assert!(verify_file(&p).unwrap().anchored);
    }

    #[test]
    fn anchor_reports_truncation_rewrite_and_deletion() {
        let p = tmp("anchor");
        let mut j = Journal::open(&p).unwrap();
        for k in ["a", "b", "c"] {
            j.append(rec(k)).unwrap();
        }
        j.sync();
        drop(j);
        let text = std::fs::read_to_string(&p).unwrap();
        let two: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        std::fs::write(&p, &two).unwrap();
        assert!(verify_file(&p)
            .unwrap_err()
            .reason
            .contains("tail was cut off"));
        // A whole new, self-consistent chain.
        std::fs::remove_file(&p).unwrap();
        let anchor = std::fs::read(anchor_path(&p)).unwrap();
        {
            let mut j = Journal::open(&p).unwrap();
            for k in ["x", "y", "z"] {
                j.append(rec(k)).unwrap();
            }
            j.sync();
        }
        std::fs::write(anchor_path(&p), &anchor).unwrap();
        assert!(verify_file(&p).unwrap_err().reason.contains("rewritten"));
        std::fs::remove_file(&p).unwrap();
        assert!(verify_file(&p).unwrap_err().reason.contains("deleted"));
    }

    #[test]
    fn a_long_log_resumes_from_its_tail() {
        let p = tmp("long");
        {
            let mut j = Journal::open(&p).unwrap();
            for i in 0..2000 {
                j.append(rec(&format!("r{i}"))).unwrap();
            }
        }
        // A torn line and a half-written one before it, far past the first 16 KiB.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"k\":\"x\",\"seq\":20\n{\"k\":\"c\",\"se")
            .unwrap();
        drop(f);
        let mut j = Journal::open(&p).unwrap();
        j.append(rec("after")).unwrap();
        j.sync();
        assert_eq!(verify_at(&p), Ok(2001));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_the_chain_goes_on() {
        let p = tmp("torn");
        {
            let mut j = Journal::open(&p).unwrap();
            j.append(rec("a")).unwrap();
            j.append(rec("b")).unwrap();
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"k\":\"c\",\"se").unwrap();
        drop(f);
        let mut j = Journal::open(&p).unwrap();
        j.append(rec("c")).unwrap();
        j.sync();
        assert_eq!(verify_at(&p), Ok(3));
    }

    #[test]
    fn durable_appends_and_a_long_log_opens_from_its_tail() {
        let p = tmp("durable");
        let mut j = Journal::open(&p).unwrap();
        for i in 0..2000 {
            let d = j.append(rec(&format!("{i}{}", "x".repeat(100)))).unwrap();
            if i % 500 == 0 {
                d.wait().unwrap();
            }
        }
        j.append(rec("last")).unwrap().wait().unwrap();
        drop(j);
        let mut j = Journal::open(&p).unwrap();
        j.append(rec("after")).unwrap().wait().unwrap();
        drop(j);
        let v = verify_file(&p).unwrap();
        assert_eq!(v.lines, 2002);
        assert!(v.anchored);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn async_waits_end_on_disk_and_a_dropped_wait_leaves_no_waiter() {
        let p = tmp("async");
        let mut j = Journal::open(&p).unwrap();
        for i in 0..50 {
            let d = j.append(rec(&i.to_string())).unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(10), d.wait_async())
                .await
                .expect("an async wait ends")
                .unwrap();
            assert!(j.flusher.state.lock().unwrap().durable >= Some(i));
        }
        // A wait given up half-way (its request was cancelled) stops counting.
        let d = j.append(rec("dropped")).unwrap();
        let mut w = Box::pin(d.wait_async());
        let _ = futures_poll_once(w.as_mut());
        drop(w);
        assert_eq!(j.flusher.state.lock().unwrap().waiting, 0);
        j.sync();
        assert_eq!(verify_file(&p).unwrap().lines, 51);
    }

    /// Poll a future once (no executor needed for that).
    fn futures_poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        f.poll(&mut cx).is_ready()
    }

    #[test]
    fn a_moved_log_starts_a_new_chain_naming_the_old_one() {
        let p = tmp("rotate");
        let mut j = Journal::open(&p).unwrap();
        j.append(rec("a")).unwrap();
        j.sync();
        std::fs::rename(&p, p.with_extension("log.1")).unwrap();
        std::thread::sleep(LOOK_EVERY * 2);
        j.append(rec("b")).unwrap();
        j.sync();
        let v = verify_file(&p).unwrap();
        assert_eq!(v.lines, 2);
        assert!(v.continues.is_some());
        assert_eq!(verify_at(&p.with_extension("log.1")), Ok(1));
    }

    #[test]
    fn typed_records_chain_like_maps_and_a_non_object_is_refused() {
        #[derive(Serialize)]
        struct Typed<'a> {
            k: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            n: Option<u64>,
        }
        #[derive(Serialize)]
        struct Empty {}
        let p = tmp("typed");
        let mut j = Journal::open(&p).unwrap();
        j.append(rec("a")).unwrap();
        j.append_record(&Typed { k: "b", n: None }).unwrap();
        j.append_record(&Typed { k: "c", n: Some(7) }).unwrap();
        j.append_record(&Empty {}).unwrap();
        // A map's own `seq` or `prev` cannot fake the chain: they are replaced.
        let mut lying = rec("d");
        lying.insert("seq".into(), Value::from(0));
        lying.insert("prev".into(), Value::from(GENESIS));
        j.append(lying).unwrap();
        for bad in [
            serde_json::json!([1, 2]),
            serde_json::json!("{}"),
            Value::Null,
        ] {
            let Err(e) = j.append_record(&bad) else {
                panic!("{bad} was logged")
            };
            let e = e.to_string();
            assert!(e.contains("must be a JSON object"), "{e}");
        }
        j.sync();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(verify(&text), Ok(5), "{text}");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[2]["n"], 7);
        assert_eq!(lines[3].as_object().unwrap().len(), 2, "{}", lines[3]);
        assert_eq!(lines[4]["seq"], 4);
        // Resumed from a typed line's tail.
        drop(j);
        let mut j = Journal::open(&p).unwrap();
        j.append_record(&Typed { k: "e", n: None }).unwrap();
        j.sync();
        assert_eq!(verify_at(&p), Ok(6));
    }

    #[test]
    fn a_log_moved_under_steady_appends_is_followed_within_the_bound() {
        let p = tmp("steady");
        let mut j = Journal::open(&p).unwrap();
        j.append(rec("a")).unwrap();
        std::fs::rename(&p, p.with_extension("log.1")).unwrap();
        let moved = std::time::Instant::now();
        let mut i = 0;
        while !p.exists() {
            j.append(rec(&format!("r{i}"))).unwrap();
            i += 1;
            assert!(
                moved.elapsed() < LOOK_EVERY * 50,
                "not followed after {i} appends"
            );
        }
        j.sync();
        assert!(verify_file(&p).unwrap().continues.is_some());
        assert!(verify_rotated(&p).is_ok());
    }
}
