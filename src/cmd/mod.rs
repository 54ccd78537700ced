pub mod agent;
pub mod client;
pub mod doctor;
pub mod git;
pub mod reach;
pub mod service;
pub mod signer;
pub mod ssh_config;
pub mod status;
pub mod stores;
pub mod up;
pub mod upstream;

use anyhow::Context;
use std::io::IsTerminal;
use zeroize::Zeroizing;

static PASSPHRASE: std::sync::OnceLock<Zeroizing<String>> = std::sync::OnceLock::new();
static PIN: std::sync::OnceLock<Zeroizing<String>> = std::sync::OnceLock::new();

/// Read `VMUX_PASSPHRASE` and `VMUX_PIN` once, keep them in memory, and remove them
/// from the environment including the original bytes (which `/proc/PID/environ` shows
/// even after `remove_var`). Call before any thread starts.
pub fn take_secrets_from_env() {
    take_from_env("VMUX_PASSPHRASE", &PASSPHRASE);
    take_from_env("VMUX_PIN", &PIN);
}

/// `VMUX_PIN` as it was at start.
pub fn env_pin() -> Option<Zeroizing<String>> {
    PIN.get().cloned()
}

fn take_from_env(name: &str, cell: &std::sync::OnceLock<Zeroizing<String>>) {
    let Some(value) = std::env::var_os(name) else {
        return;
    };
    let _ = cell.set(Zeroizing::new(value.to_string_lossy().into_owned()));
    let prefix = format!("{name}=");
    extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: single-threaded at this point; `environ` is a NULL-terminated array of
    // NUL-terminated strings; we overwrite the value bytes in place, within each string.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let s = *p;
            let len = libc::strlen(s);
            let bytes = std::slice::from_raw_parts_mut(s as *mut u8, len);
            if bytes.starts_with(prefix.as_bytes()) {
                for b in &mut bytes[prefix.len()..] {
                    std::ptr::write_volatile(b, b'*');
                }
            }
            p = p.add(1);
        }
    }
    std::env::remove_var(name);
}

/// Daemons keep secrets in memory: no core dumps, no ptrace or /proc/PID/mem by other
/// processes of the same user (PR_SET_DUMPABLE=0), key memory locked when the limits
/// allow it, and enough file descriptors for their caps to matter before the OS's.
pub fn harden_daemon() {
    // SAFETY: prctl/setrlimit/mlockall with constant arguments on this process.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        #[cfg(target_os = "linux")]
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            tracing::warn!("could not make this process non-dumpable");
        }
        // Locking all memory with a small RLIMIT_MEMLOCK would make allocations fail:
        // only when the limit is generous.
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut l) == 0
            && (l.rlim_cur == libc::RLIM_INFINITY || l.rlim_cur >= 1 << 30)
        {
            libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE);
        }
    }
    vmux_signer::guard::raise_nofile_limit();
}

/// The keystore passphrase: `VMUX_PASSPHRASE` (taken at start), else asked on the
/// terminal, else none.
pub fn passphrase(prompt: &str, confirm: bool) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(p) = PASSPHRASE.get() {
        return Ok(Some(p.clone()));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let p = Zeroizing::new(rpassword::prompt_password(prompt).context("reading passphrase")?);
    if confirm {
        let again =
            Zeroizing::new(rpassword::prompt_password("Again: ").context("reading passphrase")?);
        anyhow::ensure!(*p == *again, "the passphrases differ; nothing was written");
    }
    Ok(Some(p))
}

pub use vmux_proto::time::{local_time, parse_duration};

/// Wait for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Forwards each log line, summarised, to the sheet's event line (`vmux up`, `vmux
/// signer run`): while the sheet owns the terminal, the lines themselves go to a file.
pub struct SheetEvents;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SheetEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                if f.name() == "message" {
                    self.0 = v.to_string();
                }
            }
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        let level = *event.metadata().level();
        let prefix = match level {
            tracing::Level::ERROR => "error: ",
            tracing::Level::WARN => "warning: ",
            _ => "",
        };
        vmux_signer::sheet::note_event(&format!("{prefix}{}", m.0));
    }
}
