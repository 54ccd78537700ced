//! The agent socket: mode 0600 in a 0700 directory, same-uid peers only, one task per
//! connection, messages capped at 256 KiB (a larger one closes that connection).

use crate::agent::{Agent, Caller};
use crate::session::Session;
use crate::wire::{self, MAX_MESSAGE};
use crate::AgentError;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Bind the socket at `path`, refusing to take over a live agent's socket.
pub async fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    let err = |reason: String| AgentError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path
        .parent()
        .ok_or_else(|| err("has no parent directory".into()))?;
    if !dir.exists() {
        vmux_proto::store::ensure_dir(dir, 0o700)?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "directory {} is mode {mode:o}; make it 0700 (chmod 700 {})",
            dir.display(),
            dir.display()
        )));
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(err("another agent is already listening there".into()));
    }
    // Only a stale socket is replaced: `--socket` never deletes anything else.
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            return Err(err(
                "exists and is not a socket; move it away or choose another path".into(),
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(e.to_string()))?;
    Ok(listener)
}

/// At most this many client connections at once; more are closed as they arrive, so a
/// flood of idle connections cannot use up the agent's file descriptors.
pub const MAX_CONNECTIONS: usize = 512;

/// Serve connections. A failing `accept()` (out of file descriptors) is retried with
/// back-off, never fatal.
pub async fn serve(agent: Arc<Agent>, listener: UnixListener) -> std::io::Result<()> {
    let me = unsafe { libc::geteuid() };
    let open = Arc::new(Open::default());
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("agent socket: accept failed ({e}); retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                continue;
            }
        };
        backoff = std::time::Duration::from_millis(10);
        if open.len() >= MAX_CONNECTIONS && !open.close_oldest_idle() {
            tracing::warn!("agent socket: {MAX_CONNECTIONS} connections busy; closing a new one");
            continue;
        }
        let cred = stream.peer_cred().ok();
        if cred.map(|c| c.uid()) != Some(me) {
            tracing::warn!(
                "refused agent connection from uid {}",
                cred.map(|c| c.uid().to_string())
                    .unwrap_or_else(|| "unknown".into())
            );
            continue;
        }
        let pid = cred.and_then(|c| c.pid());
        let (requester, tty_nr) = crate::requester::caller(pid, 4);
        let caller = Caller {
            pid,
            requester,
            tty: crate::feedback::tty_path(tty_nr),
            ..Default::default()
        };
        let session = Session::new(agent.clone(), caller);
        let conn = open.add();
        let open = open.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection(session, stream, &conn) => {}
                _ = conn.closed.notified() => {}
            }
            open.remove(conn.id);
        });
    }
}

/// The open connections, so that a flood of idle ones makes room for new ones: when
/// the cap is reached, the connection idle the longest is closed (an idle client just
/// reconnects when it needs the agent again).
#[derive(Default)]
struct Open {
    conns: std::sync::Mutex<Vec<Arc<Conn>>>,
    next: std::sync::atomic::AtomicU64,
}

struct Conn {
    id: u64,
    /// Idle since (no request being read or answered); `None` while busy.
    idle_since: std::sync::Mutex<Option<std::time::Instant>>,
    closed: tokio::sync::Notify,
}

impl Open {
    fn len(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    fn add(&self) -> Arc<Conn> {
        let c = Arc::new(Conn {
            id: self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            idle_since: std::sync::Mutex::new(Some(std::time::Instant::now())),
            closed: tokio::sync::Notify::new(),
        });
        self.conns.lock().unwrap().push(c.clone());
        c
    }

    fn remove(&self, id: u64) {
        self.conns.lock().unwrap().retain(|c| c.id != id);
    }

    /// Close the connection idle the longest; false when none is idle.
    fn close_oldest_idle(&self) -> bool {
        let mut conns = self.conns.lock().unwrap();
        let oldest = conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.idle_since.lock().unwrap().map(|t| (t, i)))
            .min();
        let Some((_, i)) = oldest else {
            return false;
        };
        let c = conns.remove(i);
        c.closed.notify_one();
        true
    }
}

/// What a connection keeps between reads: a whole request usually arrives in one read
/// (one system call instead of two: the length, then the body).
const READ_AHEAD: usize = 4096;

/// Read into `buf` until it holds `want` bytes; false at end of stream or on an error.
async fn fill(stream: &mut UnixStream, buf: &mut Vec<u8>, want: usize) -> bool {
    while buf.len() < want {
        buf.reserve((want - buf.len()).max(READ_AHEAD));
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    true
}

async fn connection(mut session: Session, mut stream: UnixStream, conn: &Conn) {
    let mut buf = Vec::new();
    loop {
        *conn.idle_since.lock().unwrap() = Some(std::time::Instant::now());
        if !fill(&mut stream, &mut buf, 4).await {
            return;
        }
        *conn.idle_since.lock().unwrap() = None;
        let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if n > MAX_MESSAGE {
            tracing::info!("closing agent connection: message of {n} bytes is over the limit");
            return;
        }
        if !fill(&mut stream, &mut buf, 4 + n).await {
            return;
        }
        let msg = buf[4..4 + n].to_vec();
        buf.drain(..4 + n);
        // An idle connection does not keep a large request's buffer (512 of them could).
        if buf.capacity() > 4 * READ_AHEAD && buf.len() <= READ_AHEAD {
            buf.shrink_to(READ_AHEAD);
        }
        // If the client hangs up while its request waits for a person, stop waiting:
        // dropping the request future cancels it at the signer.
        // The answer first: one signed at once (the session certificate) never looks
        // at the peer (a system call saved per request).
        let resp = tokio::select! {
            biased;
            r = session.handle(&msg) => r,
            _ = peer_gone(&stream) => return,
        };
        if stream
            .write_all(&wire::encode_response(&resp))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Resolves when the peer closes its end. Clients do not pipeline agent requests; if
/// one does, its bytes stay queued (we only peek) and this waits for the answer.
async fn peer_gone(stream: &UnixStream) {
    use std::os::fd::AsRawFd;
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut b = [0u8; 1];
            // SAFETY: recv into a 1-byte stack buffer on a socket we own.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    b.as_mut_ptr().cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n)
            }
        });
        match peeked {
            Ok(0) => return,
            Ok(_) => std::future::pending::<()>().await,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}
