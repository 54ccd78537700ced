//! The approval sheet: a full-screen terminal view of the queue (ratatui + crossterm).
//! It shows the head of the queue with everything a person needs to decide, a countdown,
//! how many more wait, recent decisions and a status banner. `a` approves, `d` denies,
//! `?` shows details; a pairing is approved only by typing its code. Keys pressed before
//! a request was on screen are thrown away, and a request that leaves the queue leaves
//! the sheet.

use crate::approve::duration;
use crate::queue::{Decision, Gone, PendingInfo};
use crate::Signer;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{execute, terminal};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A key and when it was read.
type Key = (Instant, KeyEvent);

/// Restores the terminal on every exit path (return, error, panic unwinding).
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> std::io::Result<TerminalGuard> {
        terminal::enable_raw_mode()?;
        if let Err(e) = execute!(std::io::stdout(), terminal::EnterAlternateScreen) {
            let _ = terminal::disable_raw_mode();
            return Err(e);
        }
        Ok(TerminalGuard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Read keys on a thread of its own, stamped with their arrival time.
fn read_keys() -> tokio::sync::mpsc::Receiver<Key> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(250)) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                    if tx.blocking_send((Instant::now(), k)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            },
            Ok(false) if tx.is_closed() => return,
            Ok(false) => {}
            Err(_) => return,
        }
    });
    rx
}

struct View {
    header: Vec<String>,
    banner: (String, Color),
    recent: VecDeque<String>,
    details: bool,
    typed: String,
    /// Collecting the user-verification password (after `a` on a request that needs it).
    secret: Option<zeroize::Zeroizing<String>>,
    /// The entry on screen and when it appeared there.
    shown: Option<(PendingInfo, Instant)>,
}

/// Run the sheet until `q` or Ctrl-C. `header` lines (where the signer listens, the
/// SSH_AUTH_SOCK line of `vmux up`) stay at the top.
pub async fn run(signer: Arc<Signer>, header: Vec<String>) -> std::io::Result<()> {
    let _guard = TerminalGuard::enter()?;
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    let mut term = ratatui::Terminal::new(backend)?;
    term.clear()?;
    let mut keys = read_keys();
    let mut v = View {
        header,
        banner: ("Waiting for requests".into(), Color::Gray),
        recent: VecDeque::new(),
        details: false,
        typed: String::new(),
        secret: None,
        shown: None,
    };
    loop {
        let head = signer.queue.pending().into_iter().next();
        let depth = signer.queue.depth();
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
            while keys.try_recv().is_ok() {}
            // SAFETY: tcflush only drops queued terminal input.
            unsafe {
                libc::tcflush(0, libc::TCIFLUSH);
            }
            if v.shown.is_some() {
                print!("\x07");
                if v.banner.0 == "Waiting for requests" {
                    v.banner = ("A request waits for your decision".into(), Color::Cyan);
                }
            } else if v.banner.0 == "A request waits for your decision" {
                v.banner = ("Waiting for requests".into(), Color::Gray);
            }
        }
        term.draw(|f| draw(f, &v, depth))?;
        tokio::select! {
            k = keys.recv() => {
                let Some((at, key)) = k else { return Ok(()) };
                if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
                    return Ok(());
                }
                if key.code == KeyCode::Char('q') && v.typed.is_empty() && v.secret.is_none() {
                    return Ok(());
                }
                let Some((p, since)) = v.shown.clone() else { continue };
                if at < since {
                    continue;
                }
                if let Some(secret) = handle_key(&signer, &mut v, &p, key.code) {
                    v.banner = ("Verifying…".into(), Color::Cyan);
                    term.draw(|f| draw(f, &v, depth))?;
                    let r = crate::approve::approve_verified(&signer, &p, Some(secret)).await;
                    let failed = matches!(r, Err(crate::SignerError::VerificationFailed(_)));
                    let d = if failed { Decision::Unverified } else { Decision::Approve };
                    let r = if failed { Ok((p.clone(), true)) } else { r };
                    decided(&mut v, &p, r, d);
                }
            }
            _ = signer.queue.changed(Duration::from_secs(1)) => {}
        }
    }
}

fn note_gone(v: &mut View, p: &PendingInfo, why: Gone) {
    let (text, color) = match why {
        Gone::Approved => ("Approved elsewhere".to_string(), Color::Green),
        Gone::Denied => ("Denied elsewhere".to_string(), Color::Yellow),
        Gone::Withdrawn(w) => (format!("Request withdrawn: {w}"), Color::Yellow),
    };
    remember(v, &format!("{text}: {}", one_line(p)));
    v.banner = (text, color);
}

fn remember(v: &mut View, line: &str) {
    let now = crate::approve::clock(vmux_proto::now_unix());
    v.recent.push_front(format!("{now}  {line}"));
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
fn handle_key(
    signer: &Signer,
    v: &mut View,
    p: &PendingInfo,
    code: KeyCode,
) -> Option<zeroize::Zeroizing<String>> {
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
    if p.kind == "pair" {
        match code {
            KeyCode::Char(c) if c.is_ascii_digit() && v.typed.len() < 12 => v.typed.push(c),
            KeyCode::Backspace => {
                v.typed.pop();
            }
            KeyCode::Enter if !v.typed.is_empty() => {
                // One guess per pairing: a wrong code denies it.
                if p.code.as_deref() == Some(v.typed.as_str()) {
                    decided(v, p, signer.queue.approve_code(&v.typed), Decision::Approve);
                } else {
                    let r = signer.queue.decide(&p.id, &p.digest, Decision::Deny);
                    decided(v, p, r, Decision::Deny);
                    v.banner = (
                        "Wrong code: pairing denied (start it again on the other device)".into(),
                        Color::Red,
                    );
                }
            }
            KeyCode::Esc | KeyCode::Char('d') => {
                let r = signer.queue.decide(&p.id, &p.digest, Decision::Deny);
                decided(v, p, r, Decision::Deny);
            }
            KeyCode::Char('?') => v.details = !v.details,
            _ => {}
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
            let r = signer.queue.decide(&p.id, &p.digest, Decision::Approve);
            decided(v, p, r, Decision::Approve);
        }
        KeyCode::Char('d') => {
            let r = signer.queue.decide(&p.id, &p.digest, Decision::Deny);
            decided(v, p, r, Decision::Deny);
        }
        KeyCode::Char('?') => v.details = !v.details,
        _ => {}
    }
    None
}

fn decided(
    v: &mut View,
    p: &PendingInfo,
    r: Result<(PendingInfo, bool), crate::SignerError>,
    d: Decision,
) {
    let (text, color) = match (r, d) {
        (Err(_), _) => (
            "That request is no longer pending".to_string(),
            Color::Yellow,
        ),
        (Ok((_, false)), _) => (
            "Delivery failed: the requester was gone".to_string(),
            Color::Red,
        ),
        (Ok(_), Decision::Approve) if p.kind == "pair" => {
            (format!("Paired with {}", p.from), Color::Green)
        }
        (Ok(_), Decision::Approve) if p.kind == "cert" => {
            ("Approved session certificate".to_string(), Color::Green)
        }
        (Ok(_), Decision::Approve) => ("Approved remote sign request".to_string(), Color::Green),
        (Ok(_), Decision::Deny) => ("Denied".to_string(), Color::Yellow),
        (Ok(_), Decision::Unverified) => (
            "Verification failed: refused (presenceFailed)".to_string(),
            Color::Red,
        ),
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

fn draw(f: &mut ratatui::Frame, v: &View, depth: usize) {
    let areas = Layout::vertical([
        Constraint::Length(v.header.len() as u16 + 2),
        Constraint::Length(3),
        Constraint::Min(12),
        Constraint::Length(10),
    ])
    .split(f.area());
    let header: Vec<Line> = v.header.iter().map(|h| Line::from(h.as_str())).collect();
    f.render_widget(
        Paragraph::new(header).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" vmux signer "),
        ),
        areas[0],
    );
    let waiting = match depth {
        0 => String::new(),
        1 => String::new(),
        n => format!("   ({} more waiting)", n - 1),
    };
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                v.banner.0.clone(),
                Style::default().fg(v.banner.1).add_modifier(Modifier::BOLD),
            ),
            Span::raw(waiting),
        ]))
        .block(Block::default().borders(Borders::ALL).title(" status ")),
        areas[1],
    );
    let body = match &v.shown {
        None => vec![Line::from(
            "Nothing waiting. Requests appear here as they arrive.",
        )],
        Some((p, _)) => request_lines(p, v, depth),
    };
    let title = match v.shown.as_ref().map(|(p, _)| p.kind.as_str()) {
        Some("pair") => " Pairing request ",
        Some("cert") => " Session certificate request ",
        Some(_) => " SSH Sign Request ",
        None => " queue ",
    };
    f.render_widget(
        Paragraph::new(body)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(title)),
        areas[2],
    );
    let recent: Vec<Line> = v.recent.iter().map(|r| Line::from(r.as_str())).collect();
    f.render_widget(
        Paragraph::new(recent).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" recent decisions "),
        ),
        areas[3],
    );
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
        "pair" => {
            l.push(field(
                "Code",
                p.code.clone().unwrap_or_default(),
                bold.fg(Color::Cyan),
            ));
            l.push(Line::from(""));
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
    l.push(field("Expires in", duration(left), plain));
    if depth > 1 {
        l.push(field("Queue", format!("{} more waiting", depth - 1), plain));
    }
    if v.details {
        l.push(Line::from(""));
        l.push(field("Request id", p.id.clone(), plain));
        if let Some(label) = &p.label {
            l.push(field("Device's id", label.clone(), plain));
        }
        if let Some(d) = &p.data_digest {
            l.push(field("Data SHA-256", d.clone(), plain));
        }
        l.push(field("Shown digest", p.digest.clone(), plain));
    }
    l.push(Line::from(""));
    l.push(Line::from(Span::styled(
        if p.kind == "pair" {
            "[digits] code  [Enter] pair  [Esc] deny  [?] details  [q] quit"
        } else {
            "[a] approve  [d] deny  [?] details  [q] quit   (y / n work too)"
        },
        Style::default().fg(Color::DarkGray),
    )));
    l
}
