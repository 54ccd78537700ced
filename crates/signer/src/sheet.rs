//! The approval sheet: a full-screen terminal view of the queue (ratatui + crossterm).
//! It shows the head of the queue with everything a person needs to decide, a countdown,
//! how many more wait, an event line and recent decisions. `a` approves, `d` denies,
//! `?` shows details, `k` the public keys and the CA line; a pairing is approved only
//! by typing its code. Keys pressed before a request was on screen are thrown away, and
//! a request that leaves the queue leaves the sheet.
//!
//! Two or more sign requests are shown as one list once arrivals pause, and the list
//! is then frozen: one key decides exactly the requests on it (bound to the digest of
//! what was drawn); a request arriving later waits for its own turn, and a listed one
//! that changes or leaves takes the list off the screen. `l` switches to one at a time.
//! `m` denies a request and mutes its device and requester chain for a while; `u`
//! lifts every mute.
//!
//! Nothing else may draw on this screen: while the sheet runs, standard error goes to
//! a log file (log lines and anything a library prints), and the sheet shows a one-line
//! summary of the latest ones itself ([`note_event`]).

use crate::decide::{self, Decided};
use crate::queue::{Gone, PendingInfo};
use crate::signer::Signer;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmux_proto::time::{clock, duration};

/// What the terminal sends: a key (and when it was read), or a new size.
enum Input {
    Key(Instant, KeyEvent),
    Resize,
}

/// The latest log lines, summarised for the sheet's event line.
static EVENTS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static EVENTS_CHANGED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A log line happened (called by the process's log subscriber): the sheet shows the
/// latest as its event line, inert and on one line.
pub fn note_event(line: &str) {
    let one = vmux_proto::text::inert(line.trim(), 200);
    let mut e = EVENTS.lock().unwrap();
    e.push_front(format!("{}  {one}", clock(vmux_proto::now_unix())));
    e.truncate(4);
    drop(e);
    EVENTS_CHANGED.notify_waiters();
}

fn latest_event() -> Option<String> {
    EVENTS.lock().unwrap().front().cloned()
}

/// Restores the terminal and standard error on every exit path (return, error, panic
/// unwinding).
struct TerminalGuard {
    saved_stderr: Option<libc::c_int>,
}

impl TerminalGuard {
    fn enter(log: &Path) -> std::io::Result<TerminalGuard> {
        let saved_stderr = redirect_stderr(log);
        terminal::enable_raw_mode()?;
        if let Err(e) = execute!(std::io::stdout(), terminal::EnterAlternateScreen) {
            let _ = terminal::disable_raw_mode();
            return Err(e);
        }
        Ok(TerminalGuard { saved_stderr })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
        if let Some(fd) = self.saved_stderr.take() {
            // SAFETY: puts back the descriptor saved in `redirect_stderr`.
            unsafe {
                libc::dup2(fd, 2);
                libc::close(fd);
            }
        }
    }
}

/// Send standard error to `log` (appended, 0600); returns the saved descriptor.
fn redirect_stderr(log: &Path) -> Option<libc::c_int> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = log.parent() {
        let _ = vmux_proto::store::ensure_dir(dir, 0o700);
    }
    // A log that grew large is moved aside once, so it cannot fill the disk.
    if std::fs::metadata(log).is_ok_and(|m| m.len() > 16 << 20) {
        let _ = std::fs::rename(log, log.with_extension("log.1"));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .ok()?;
    // SAFETY: dup/dup2 on descriptors we own; 2 is standard error.
    unsafe {
        let saved = libc::dup(2);
        if saved < 0 {
            return None;
        }
        if libc::dup2(file.as_raw_fd(), 2) < 0 {
            libc::close(saved);
            return None;
        }
        Some(saved)
    }
}

/// Read the terminal on a thread of its own, keys stamped with their arrival time.
fn read_input() -> tokio::sync::mpsc::Receiver<Input> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(250)) {
            Ok(true) => {
                let sent = match event::read() {
                    Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                        tx.blocking_send(Input::Key(Instant::now(), k))
                    }
                    Ok(Event::Resize(..)) => tx.blocking_send(Input::Resize),
                    Ok(_) => Ok(()),
                    Err(_) => return,
                };
                if sent.is_err() {
                    return;
                }
            }
            Ok(false) if tx.is_closed() => return,
            Ok(false) => {}
            Err(_) => return,
        }
    });
    rx
}

/// What the sheet needs besides the signer.
pub struct Options {
    /// Lines that stay at the top (where the signer listens, `SSH_AUTH_SOCK`).
    pub header: Vec<String>,
    /// Where standard error goes while the sheet runs.
    pub log: PathBuf,
    /// `q` asks this first (`vmux up`: "stop agent and signer?"); `None`: `q` quits.
    pub confirm_quit: Option<String>,
}

struct View {
    header: Vec<String>,
    banner: (String, Color),
    recent: VecDeque<String>,
    details: bool,
    keys: bool,
    typed: String,
    /// Collecting the user-verification password (after `a` on a request that needs it).
    secret: Option<zeroize::Zeroizing<String>>,
    /// The entry on screen and when it appeared there.
    shown: Option<(PendingInfo, Instant)>,
    /// `q` was pressed and the sheet asks whether to stop.
    quitting: bool,
    public: Vec<String>,
    /// Show two or more sign requests as one list (`l` toggles).
    list_mode: bool,
    /// The list on screen, frozen when drawn: its entries, digest, and when it appeared.
    list: Option<(Vec<PendingInfo>, String, Instant)>,
    /// Sign requests that could form a list, since when that number has held, and since
    /// when requests have been settling at all.
    settling: Option<(usize, Instant, Instant)>,
    /// `m` was pressed: the sheet asks for how long to mute.
    muting: bool,
}

/// How long arrivals must pause before two or more sign requests are drawn as a list
/// (`git pull` across repositories sends them a few ms apart), and the longest a steady
/// trickle of arrivals may put the list off.
const LIST_SETTLE: Duration = Duration::from_millis(700);
const LIST_SETTLE_MAX: Duration = Duration::from_secs(3);

const IDLE: &str = "Waiting for requests";
const WAITS: &str = "A request waits for your decision";

/// Run the sheet until `q` (confirmed where `opts` says) or Ctrl-C.
pub async fn run(signer: Arc<Signer>, opts: Options) -> std::io::Result<()> {
    let _guard = TerminalGuard::enter(&opts.log)?;
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    let mut term = ratatui::Terminal::new(backend)?;
    term.clear()?;
    let mut input = read_input();
    let mut v = View {
        header: opts.header,
        banner: (IDLE.into(), Color::Gray),
        recent: VecDeque::new(),
        details: false,
        keys: false,
        typed: String::new(),
        secret: None,
        shown: None,
        quitting: false,
        public: public_lines(&signer),
        list_mode: true,
        list: None,
        settling: None,
        muting: false,
    };
    v.header.push(format!("log: {}", opts.log.display()));
    loop {
        let pending = signer.queue.pending();
        let depth = pending.len();
        if update_list(&signer, &mut v, &pending) {
            v.typed.clear();
            v.secret = None;
            v.muting = false;
            while input.try_recv().is_ok() {}
            // SAFETY: tcflush only drops queued terminal input.
            unsafe {
                libc::tcflush(0, libc::TCIFLUSH);
            }
        }
        let head = match v.list {
            Some(_) => None,
            None => pending.into_iter().next(),
        };
        // What is on screen changed: note when, and throw away what was typed before.
        let changed = match (&v.shown, &head) {
            (Some((a, _)), Some(b)) => a.id != b.id,
            (None, None) => false,
            _ => true,
        };
        if changed {
            if let Some((gone, _)) = v.shown.clone() {
                if head.as_ref().map(|h| &h.id) != Some(&gone.id) {
                    if let Some(why) = signer.queue.outcome(&gone.id) {
                        note_gone(&mut v, &gone, why);
                    }
                }
            }
            v.typed.clear();
            v.secret = None;
            v.details = false;
            v.shown = head.clone().map(|h| (h, Instant::now()));
            while input.try_recv().is_ok() {}
            // SAFETY: tcflush only drops queued terminal input.
            unsafe {
                libc::tcflush(0, libc::TCIFLUSH);
            }
            if v.shown.is_some() {
                print!("\x07");
                if v.banner.0 == IDLE {
                    v.banner = (WAITS.into(), Color::Cyan);
                }
            } else if v.banner.0 == WAITS && v.list.is_none() {
                v.banner = (IDLE.into(), Color::Gray);
            }
        }
        term.draw(|f| draw(f, &v, depth, &signer))?;
        // While arrivals may still join a list, look again soon.
        let wait = if v.settling.is_some() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        let key = tokio::select! {
            i = input.recv() => match i {
                None => return Ok(()),
                Some(Input::Resize) => {
                    term.autoresize()?;
                    term.clear()?;
                    continue;
                }
                Some(Input::Key(at, key)) => (at, key),
            },
            _ = signer.queue.changed(wait) => continue,
            _ = EVENTS_CHANGED.notified() => continue,
        };
        let (at, key) = key;
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Ok(());
        }
        if v.quitting {
            v.quitting = false;
            if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                return Ok(());
            }
            v.banner = ("Not stopped".into(), Color::Gray);
            continue;
        }
        let typing = !v.typed.is_empty() || v.secret.is_some();
        if key.code == KeyCode::Char('q') && !typing {
            match &opts.confirm_quit {
                None => return Ok(()),
                Some(q) => {
                    v.quitting = true;
                    v.banner = (format!("{q} y/N"), Color::Yellow);
                    continue;
                }
            }
        }
        if key.code == KeyCode::Char('k') && !typing {
            v.keys = !v.keys;
            continue;
        }
        if key.code == KeyCode::Char('l') && !typing && !v.muting {
            v.list_mode = !v.list_mode;
            v.banner = (
                if v.list_mode {
                    "Two or more sign requests are shown as one list"
                } else {
                    "Requests are shown one at a time"
                }
                .into(),
                Color::Gray,
            );
            continue;
        }
        if key.code == KeyCode::Char('u') && !typing && !v.muting {
            let n = signer.mutes.clear();
            if n > 0 {
                signer.record(crate::signer::obj(
                    serde_json::json!({"event": "mutesCleared", "count": n}),
                ));
            }
            v.banner = (format!("Lifted {n} mutes"), Color::Gray);
            continue;
        }
        if let Some((ids, digest, since)) = v.list.as_ref().map(|(l, d, t)| {
            (
                l.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
                d.clone(),
                *t,
            )
        }) {
            let approve = match key.code {
                KeyCode::Char('a' | 'y') => true,
                KeyCode::Char('d' | 'n') => false,
                KeyCode::Char('?') => {
                    v.details = !v.details;
                    continue;
                }
                _ => continue,
            };
            if at < since + crate::decide::SETTLE {
                if at >= since {
                    v.banner = (
                        "Key ignored: the list just appeared; read it, then decide".into(),
                        Color::Yellow,
                    );
                }
                continue;
            }
            let r = decide::list(&signer, &ids, &digest, approve);
            list_decided(&mut v, r, approve);
            continue;
        }
        let Some((p, since)) = v.shown.clone() else {
            continue;
        };
        // A key counts only once the request has been on screen for a second: a swap
        // just before a keypress (people react in 200–400 ms) decides nothing.
        let decides = !matches!(key.code, KeyCode::Char('?'));
        if decides && at < since + crate::decide::SETTLE && v.secret.is_none() {
            if at >= since {
                v.banner = (
                    "Key ignored: the request just appeared; read it, then decide".into(),
                    Color::Yellow,
                );
            }
            continue;
        }
        if let Some(secret) = handle_key(&signer, &mut v, &p, key.code).await {
            v.banner = ("Verifying…".into(), Color::Cyan);
            term.draw(|f| draw(f, &v, depth, &signer))?;
            let shown = p.compute_digest();
            let r = if p.kind == "pair" {
                let typed = std::mem::take(&mut v.typed);
                decide::pair_shown(&signer, &p.id, &shown, &typed, Some(secret)).await
            } else {
                decide::approve(&signer, &p.id, &shown, Some(secret)).await
            };
            decided(&mut v, &p, r, "approve");
        }
    }
}

/// Keep the list on screen true: take it off when a listed request changed or left (or
/// list mode is off), and draw a new one once two or more sign requests wait and no
/// new one arrived for [`LIST_SETTLE`]. Returns whether a list was drawn or taken off.
fn update_list(signer: &Signer, v: &mut View, pending: &[PendingInfo]) -> bool {
    if let Some((listed, ..)) = &v.list {
        let intact = listed
            .iter()
            .all(|e| pending.iter().any(|p| p.id == e.id && p.digest == e.digest));
        if intact && v.list_mode {
            return false;
        }
        if !intact {
            v.banner = (
                "The list changed (a request on it left or changed): nothing decided".into(),
                Color::Yellow,
            );
        }
        v.list = None;
        v.settling = None;
        return true;
    }
    let n = match signer.queue.list() {
        Some(l) if v.list_mode && !v.muting && v.secret.is_none() => l.len(),
        _ => {
            v.settling = None;
            return false;
        }
    };
    match v.settling {
        Some((m, since, first))
            if (m == n && since.elapsed() >= LIST_SETTLE) || first.elapsed() >= LIST_SETTLE_MAX =>
        {
            // Drawn from the queue as it is now: the digest covers exactly these.
            let Some(listed) = signer.queue.list() else {
                return false;
            };
            let digest = crate::queue::list_digest(&listed);
            v.banner = (
                format!(
                    "{} sign requests wait: read the list, then decide",
                    listed.len()
                ),
                Color::Cyan,
            );
            v.list = Some((listed, digest, Instant::now()));
            v.settling = None;
            v.shown = None;
            print!("\x07");
            true
        }
        Some((m, ..)) if m == n => false,
        Some((_, _, first)) => {
            v.settling = Some((n, Instant::now(), first));
            false
        }
        None => {
            let now = Instant::now();
            v.settling = Some((n, now, now));
            false
        }
    }
}

fn list_decided(v: &mut View, r: Result<Vec<Decided>, crate::SignerError>, approve: bool) {
    let (text, color) = match &r {
        Err(_) => (
            "The list changed before the key was read: nothing decided".to_string(),
            Color::Yellow,
        ),
        Ok(d) if d.iter().any(|d| !d.delivered) => (
            format!(
                "{} {} requests; {} requesters were gone (delivery failed)",
                if approve { "Approved" } else { "Denied" },
                d.len(),
                d.iter().filter(|d| !d.delivered).count()
            ),
            Color::Red,
        ),
        Ok(d) if approve => (
            format!("Approved {} remote sign requests", d.len()),
            Color::Green,
        ),
        Ok(d) => (format!("Denied {} requests", d.len()), Color::Yellow),
    };
    if let Ok(d) = &r {
        for d in d.iter().rev() {
            let what = if approve {
                "Approved (list)"
            } else {
                "Denied (list)"
            };
            remember(v, &format!("{what}: {}", one_line(&d.info)));
        }
    }
    v.banner = (text, color);
    v.list = None;
    v.settling = None;
}

/// The signing keys and the CA as OpenSSH lines (what `k` shows).
fn public_lines(signer: &Signer) -> Vec<String> {
    use ssh_key::encoding::Decode;
    let mut lines: Vec<String> = signer
        .keystore
        .listed()
        .into_iter()
        .filter_map(|k| {
            let data = ssh_key::public::KeyData::decode(&mut k.public_key.as_slice()).ok()?;
            ssh_key::PublicKey::new(data, k.comment).to_openssh().ok()
        })
        .collect();
    if let Some(ca) = signer.ca.as_deref().and_then(crate::ca::ca_line) {
        lines.push(format!("CA (TrustedUserCAKeys): {ca}"));
    }
    lines
}

fn note_gone(v: &mut View, p: &PendingInfo, why: Gone) {
    let (text, color) = match why {
        Gone::Approved => ("Approved elsewhere".to_string(), Color::Green),
        Gone::Denied => ("Denied elsewhere".to_string(), Color::Yellow),
        Gone::Withdrawn(w) if w.starts_with("paired with") => (capitalize(&w), Color::Green),
        Gone::Withdrawn(w) => (format!("Request withdrawn: {w}"), Color::Yellow),
    };
    remember(v, &format!("{text}: {}", one_line(p)));
    v.banner = (text, color);
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn remember(v: &mut View, line: &str) {
    v.recent
        .push_front(format!("{}  {line}", clock(vmux_proto::now_unix())));
    v.recent.truncate(8);
}

fn one_line(p: &PendingInfo) -> String {
    format!(
        "{} from {}{}",
        p.purpose.as_deref().unwrap_or(&p.kind),
        p.from,
        p.destination
            .as_deref()
            .map(|d| format!(" → {d}"))
            .unwrap_or_default()
    )
}

/// Act on a key; returns the collected password when a request that needs user
/// verification was approved (the caller runs the verification).
async fn handle_key(
    signer: &Signer,
    v: &mut View,
    p: &PendingInfo,
    code: KeyCode,
) -> Option<zeroize::Zeroizing<String>> {
    // The digest of exactly what this sheet shows.
    let shown = p.compute_digest();
    if let Some(secret) = v.secret.as_mut() {
        match code {
            KeyCode::Char(c) if secret.len() < 512 => secret.push(c),
            KeyCode::Backspace => {
                secret.pop();
            }
            KeyCode::Enter => return v.secret.take(),
            KeyCode::Esc => {
                v.secret = None;
                v.banner = (
                    "Verification cancelled: nothing decided".into(),
                    Color::Yellow,
                );
            }
            _ => {}
        }
        return None;
    }
    if p.kind == "pair" && p.signer_code.is_some() {
        // The pairing's last step is typed on the other device: here it can only be
        // cancelled.
        match code {
            KeyCode::Esc | KeyCode::Char('d') => {
                let r = decide::deny(signer, &p.id, &shown);
                decided(v, p, r, "deny");
            }
            KeyCode::Char('?') => v.details = !v.details,
            _ => {}
        }
        return None;
    }
    if p.kind == "pair" {
        match code {
            KeyCode::Char(c) if c.is_ascii_digit() && v.typed.len() < 12 => v.typed.push(c),
            KeyCode::Enter if !v.typed.is_empty() && p.verify.is_some() => {
                v.secret = Some(zeroize::Zeroizing::new(String::new()));
                v.banner = (
                    "User verification before pairing: type your password, Enter (Esc cancels)"
                        .into(),
                    Color::Cyan,
                );
            }
            KeyCode::Backspace => {
                v.typed.pop();
            }
            KeyCode::Enter if !v.typed.is_empty() => {
                // One guess per pairing: a wrong code denies it.
                match decide::pair_shown(signer, &p.id, &shown, &v.typed, None).await {
                    Err(crate::SignerError::NoPairingWithCode) => {
                        decided(v, p, Err(crate::SignerError::NoPairingWithCode), "deny");
                        v.banner = (
                            "Wrong code: pairing denied (start it again on the other device)"
                                .into(),
                            Color::Red,
                        );
                    }
                    r => decided(v, p, r, "approve"),
                }
            }
            KeyCode::Esc | KeyCode::Char('d') => {
                let r = decide::deny(signer, &p.id, &shown);
                decided(v, p, r, "deny");
            }
            KeyCode::Char('?') => v.details = !v.details,
            _ => {}
        }
        return None;
    }
    if v.muting {
        v.muting = false;
        let choice = match code {
            KeyCode::Char(c @ '1'..='3') => decide::MUTE_CHOICES[(c as u8 - b'1') as usize],
            _ => {
                v.banner = ("Not muted: nothing decided".into(), Color::Gray);
                return None;
            }
        };
        match decide::deny_and_mute(signer, &p.id, &shown, choice.1) {
            Ok((d, more)) => {
                decided(v, p, Ok(d), "deny");
                v.banner = (
                    format!(
                        "Denied, and muted {} ← {} for {}{}",
                        p.from,
                        p.requester
                            .as_deref()
                            .map_or("(no requester named)".into(), crate::mute::chain),
                        choice.0,
                        if more > 0 {
                            format!("; {more} more waiting from it denied")
                        } else {
                            String::new()
                        }
                    ),
                    Color::Yellow,
                );
            }
            Err(e) => decided(v, p, Err(e), "deny"),
        }
        return None;
    }
    // `a`/`d`, and `y`/`n` as the line prompt of `vmux up --no-ui` takes them.
    let code = match code {
        KeyCode::Char('y') => KeyCode::Char('a'),
        KeyCode::Char('n') => KeyCode::Char('d'),
        c => c,
    };
    match code {
        KeyCode::Char('a') if p.verify.is_some() => {
            v.secret = Some(zeroize::Zeroizing::new(String::new()));
            v.banner = (
                "User verification: type your password, Enter (Esc cancels)".into(),
                Color::Cyan,
            );
        }
        KeyCode::Char('a') => {
            let r = decide::approve(signer, &p.id, &shown, None).await;
            decided(v, p, r, "approve");
        }
        KeyCode::Char('d') => {
            let r = decide::deny(signer, &p.id, &shown);
            decided(v, p, r, "deny");
        }
        KeyCode::Char('m') if p.kind == "sign" => {
            v.muting = true;
            let [a, b, c] = decide::MUTE_CHOICES.map(|m| m.0);
            v.banner = (
                format!("Deny, and mute this device and requester for: [1] {a}  [2] {b}  [3] {c}  (other key: cancel)"),
                Color::Yellow,
            );
        }
        KeyCode::Char('?') => v.details = !v.details,
        _ => {}
    }
    None
}

fn decided(v: &mut View, p: &PendingInfo, r: Result<Decided, crate::SignerError>, what: &str) {
    let (text, color) = match (r, what) {
        (Err(crate::SignerError::VerificationFailed(_)), _) => (
            "Verification failed: refused (presenceFailed)".to_string(),
            Color::Red,
        ),
        (Err(_), _) => (
            "That request is no longer pending".to_string(),
            Color::Yellow,
        ),
        (Ok(d), _) if !d.delivered => (
            "Delivery failed: the requester was gone".to_string(),
            Color::Red,
        ),
        (Ok(_), "approve") if p.kind == "pair" => (
            format!("Code accepted: type the signer's code on {}", p.from),
            Color::Green,
        ),
        (Ok(_), "approve") if p.kind == "cert" => {
            ("Approved session certificate".to_string(), Color::Green)
        }
        (Ok(_), "approve") => ("Approved remote sign request".to_string(), Color::Green),
        (Ok(_), _) => ("Denied".to_string(), Color::Yellow),
    };
    remember(v, &format!("{text}: {}", one_line(p)));
    v.banner = (text, color);
    // Nothing on screen until the queue is read again: no key can fall through.
    v.shown = None;
    v.typed.clear();
}

fn field<'a>(name: &'a str, value: String, style: Style) -> Line<'a> {
    Line::from(vec![
        Span::styled(format!("{name:<13}"), Style::default().fg(Color::DarkGray)),
        Span::styled(value, style),
    ])
}

/// Rows `lines` take in a box of inner width `width`, wrapped.
fn rows(lines: &[Line], width: u16) -> u16 {
    let w = width.max(1) as usize;
    lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(w) as u16)
        .sum()
}

fn draw(f: &mut ratatui::Frame, v: &View, depth: usize, signer: &Signer) {
    let area = f.area();
    let inner = area.width.saturating_sub(2);
    let header: Vec<Line> = v.header.iter().map(|h| Line::from(h.as_str())).collect();
    let on_screen = v.list.as_ref().map_or(1, |(l, ..)| l.len());
    let mut waiting = match depth.saturating_sub(on_screen) {
        0 => String::new(),
        n => format!("   ({n} more waiting)"),
    };
    let mutes = signer.mutes.list();
    if !mutes.is_empty() {
        waiting += &format!(
            "   muted: {} requesters, {} requests denied  [u] unmute all",
            mutes.len(),
            mutes.iter().map(|m| m.denied).sum::<u64>()
        );
    }
    let mut status = vec![Line::from(vec![
        Span::styled(
            v.banner.0.clone(),
            Style::default().fg(v.banner.1).add_modifier(Modifier::BOLD),
        ),
        Span::raw(waiting),
    ])];
    if let Some(e) = latest_event() {
        status.push(Line::from(Span::styled(
            e,
            Style::default().fg(Color::DarkGray),
        )));
    }
    let body = match (&v.shown, v.keys) {
        (_, true) => key_lines(v),
        (_, false) if v.list.is_some() => list_lines(v, depth),
        (None, false) => vec![Line::from(
            "Nothing waiting. Requests appear here as they arrive.   [k] public keys  [q] quit",
        )],
        (Some((p, _)), false) => request_lines(p, v, depth),
    };
    // The request gets the room it needs; the header and the recent decisions give
    // way on a small terminal, the status line never overlaps anything.
    let status_h = status.len() as u16 + 2;
    let body_h = rows(&body, inner) + 2;
    let mut header_h = (rows(&header, inner) + 2).min(area.height / 3).max(3);
    let left = area.height.saturating_sub(status_h + body_h);
    if left < header_h {
        header_h = left.max(if area.height >= 20 { 3 } else { 0 });
    }
    let recent_h = area
        .height
        .saturating_sub(header_h + status_h + body_h)
        .min(v.recent.len() as u16 + 2);
    let areas = Layout::vertical([
        Constraint::Length(header_h),
        Constraint::Length(status_h),
        Constraint::Min(3),
        Constraint::Length(if recent_h >= 3 { recent_h } else { 0 }),
    ])
    .split(area);
    boxed(f, areas[0], header, " vmux signer ");
    boxed(f, areas[1], status, " status ");
    let title = if v.keys {
        " Public keys (k closes) ".to_string()
    } else if let Some((l, ..)) = &v.list {
        format!(" {} SSH Sign Requests, as one list ", l.len())
    } else {
        match v.shown.as_ref().map(|(p, _)| p.kind.as_str()) {
            Some("pair") => " Pairing request ",
            Some("cert") => " Session certificate request ",
            Some(_) => " SSH Sign Request ",
            None => " queue ",
        }
        .to_string()
    };
    boxed(f, areas[2], body, &title);
    if areas[3].height >= 3 {
        let recent: Vec<Line> = v.recent.iter().map(|r| Line::from(r.as_str())).collect();
        boxed(f, areas[3], recent, " recent decisions ");
    }
}

fn boxed(f: &mut ratatui::Frame, area: Rect, lines: Vec<Line>, title: &str) {
    if area.height == 0 {
        return;
    }
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(title.to_string()),
        ),
        area,
    );
}

fn key_lines(v: &View) -> Vec<Line<'static>> {
    let mut l: Vec<Line> = vec![Line::from(
        "authorized_keys lines (the keys this signer offers), then the CA line for sshd's TrustedUserCAKeys:",
    )];
    for k in &v.public {
        l.push(Line::from(k.clone()));
    }
    if v.public.is_empty() {
        l.push(Line::from("(no keys)"));
    }
    l
}

/// The frozen list: one line per request, what a decision covers, and what arrived
/// after it was drawn.
fn list_lines(v: &View, depth: usize) -> Vec<Line<'static>> {
    let Some((list, digest, _)) = &v.list else {
        return vec![];
    };
    let mut l = vec![Line::from(Span::styled(
        format!(
            "{} sign requests; one key decides exactly these:",
            list.len()
        ),
        Style::default().add_modifier(Modifier::BOLD),
    ))];
    for (i, p) in list.iter().enumerate() {
        let style = match p.warning {
            Some(_) => Style::default().fg(Color::Red),
            None => Style::default(),
        };
        l.push(Line::from(Span::styled(
            crate::describe::list_line(i + 1, p),
            style,
        )));
    }
    l.push(Line::from(Span::styled(
        "Requesters are claimed by the device; purposes and destinations are parsed by this signer.",
        Style::default().fg(Color::DarkGray),
    )));
    let soonest = list.iter().map(|p| p.expires).min().unwrap_or(0);
    l.push(field(
        "Expires in",
        duration(soonest.saturating_sub(vmux_proto::now_unix())),
        Style::default(),
    ));
    let later = depth.saturating_sub(list.len());
    if later > 0 {
        l.push(Line::from(format!(
            "{later} more arrived after this list was drawn: not on it, asked after it"
        )));
    }
    if v.details {
        l.push(field(
            "List digest",
            format!("{digest} (what the decision is bound to)"),
            Style::default(),
        ));
    }
    l.push(Line::from(Span::styled(
        format!(
            "[a] approve all {n}  [d] deny all {n}  [l] one at a time  [?] digest  [k] keys  [q] quit",
            n = list.len()
        ),
        Style::default().fg(Color::DarkGray),
    )));
    l
}

fn request_lines<'a>(p: &'a PendingInfo, v: &View, depth: usize) -> Vec<Line<'a>> {
    let plain = Style::default();
    let bold = plain.add_modifier(Modifier::BOLD);
    let claimed = Style::default().fg(Color::Yellow);
    let mut l = vec![];
    if let Some(w) = &p.warning {
        l.push(field(
            "WARNING",
            w.clone(),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    l.push(field(
        "From device",
        format!(
            "{} ({}, {})",
            p.from,
            p.from_id,
            p.origin.as_deref().unwrap_or("agent")
        ),
        bold,
    ));
    match p.kind.as_str() {
        "pair" if p.signer_code.is_some() => {
            l.push(field(
                "Signer's code",
                p.signer_code.clone().unwrap_or_default(),
                bold.fg(Color::Cyan),
            ));
            l.push(Line::from(format!(
                "Its code matched. Type this code on {} to finish the pairing.",
                p.from
            )));
        }
        "pair" => {
            l.push(field(
                "Code",
                p.code.clone().unwrap_or_default(),
                bold.fg(Color::Cyan),
            ));
            l.push(Line::from(
                "Approve only if the other device shows this same code: type it and press Enter.",
            ));
            l.push(field("Typed", v.typed.clone(), bold));
        }
        "cert" => {
            l.push(field("Grants", p.grants.clone().unwrap_or_default(), bold));
            l.push(field(
                "Principals",
                p.principals.clone().unwrap_or_default().join(", "),
                plain,
            ));
            l.push(field(
                "Validity",
                duration(p.validity_secs.unwrap_or(0)),
                plain,
            ));
        }
        _ => {
            l.push(field(
                "Purpose",
                p.purpose.clone().unwrap_or_default(),
                bold,
            ));
            if let Some(u) = &p.user {
                l.push(field("User", u.clone(), bold));
            }
            let dest_style = match p.destination_quality.as_deref() {
                Some("verified") => Style::default().fg(Color::Green),
                Some("changed") => Style::default().fg(Color::Red),
                _ => claimed,
            };
            if let Some(d) = &p.destination {
                l.push(field("Destination", d.clone(), dest_style));
            }
            if let Some(r) = &p.requester {
                l.push(field("Requester", format!("{r}  (claimed)"), claimed));
            }
        }
    }
    if let Some(k) = &p.key {
        l.push(field(
            "Key",
            format!(
                "{} {} [{}]",
                p.key_comment.as_deref().unwrap_or(""),
                k,
                p.key_store.as_deref().unwrap_or("software")
            ),
            plain,
        ));
    }
    if let Some(verify) = &p.verify {
        l.push(field(
            "Verify",
            format!("{verify}, after you approve"),
            plain,
        ));
    }
    if let Some(secret) = &v.secret {
        l.push(field("Password", "*".repeat(secret.chars().count()), bold));
    }
    let left = p.expires.saturating_sub(vmux_proto::now_unix());
    let mut expires = duration(left);
    if depth > 1 {
        expires += &format!("   ({} more waiting)", depth - 1);
    }
    l.push(field("Expires in", expires, plain));
    if v.details {
        l.push(field(
            "Request id",
            format!("{} (this signer's id for the request)", p.id),
            plain,
        ));
        if let Some(label) = &p.label {
            l.push(field(
                "Device's id",
                format!("{label} (the requesting device's own id for it)"),
                plain,
            ));
        }
        l.push(field(
            "Device id",
            format!("{} (the requesting device)", p.from_id),
            plain,
        ));
        if let Some(d) = &p.data_digest {
            l.push(field("Data SHA-256", d.clone(), plain));
        }
        l.push(field(
            "Shown digest",
            format!("{} (what a decision is bound to)", p.digest),
            plain,
        ));
    }
    l.push(Line::from(Span::styled(
        if p.signer_code.is_some() {
            "[Esc] cancel the pairing  [?] details  [k] keys  [q] quit"
        } else if p.kind == "pair" {
            "[digits] code  [Enter] pair  [Esc] deny  [?] details  [k] keys  [q] quit"
        } else {
            if p.kind == "sign" {
                "[a] approve  [d] deny  [m] deny & mute  [?] details  [k] keys  [l] lists on/off  [q] quit   (y / n work too)"
            } else {
                "[a] approve  [d] deny  [?] details  [k] keys  [q] quit   (y / n work too)"
            }
        },
        Style::default().fg(Color::DarkGray),
    )));
    l
}
