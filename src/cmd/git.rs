//! `vmux git setup`: sign commits and tags with a key on the signer (git's SSH signing:
//! `gpg.format ssh`, `user.signingkey key::…`, `commit.gpgsign`, `tag.gpgsign`, an
//! allowed-signers file), saying what changed and remembering the values it replaced so
//! `--undo` puts them back exactly. `--share-connections HOST` adds OpenSSH connection
//! sharing for a git host, so a burst of fetches and pushes is one login (one approval).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Subcommand)]
pub enum GitCmd {
    /// Sign commits and tags with a signer key (approved on the signer each time); say
    /// what changed. `--undo` restores the values it replaced.
    Setup(SetupArgs),
}

#[derive(Args)]
pub struct SetupArgs {
    /// Change the user's git config (~/.gitconfig); the default.
    #[arg(long, conflicts_with = "local")]
    global: bool,
    /// Change this repository's config (.git/config) only.
    #[arg(long)]
    local: bool,
    /// The signing key, by fingerprint (SHA256:…) or comment (needed when the agent
    /// lists several).
    #[arg(long)]
    key: Option<String>,
    /// Put back every value the last setup in this scope replaced, and remove what it
    /// added (allowed-signers line, connection sharing blocks).
    #[arg(long, conflicts_with_all = ["key", "share_connections"])]
    undo: bool,
    /// Also share one SSH connection per git host (ControlMaster auto, ControlPersist
    /// 10m) for HOST, so a burst of git operations there needs one approval; repeatable.
    #[arg(long, value_name = "HOST")]
    share_connections: Vec<String>,
}

/// The settings setup writes, in the order it reports them.
const SIGNING_KEYS: [&str; 5] = [
    "gpg.format",
    "user.signingkey",
    "commit.gpgsign",
    "tag.gpgsign",
    "gpg.ssh.allowedSignersFile",
];

/// What one setup changed, so `--undo` can put it back.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Record {
    scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repo: Option<PathBuf>,
    /// Every value each key had before the first setup (empty: unset).
    previous: BTreeMap<String, Vec<String>>,
    /// What setup set (to notice later edits).
    set: BTreeMap<String, String>,
    /// A line setup appended to an existing allowed-signers file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    appended: Option<(PathBuf, String)>,
    /// The allowed-signers file setup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<PathBuf>,
    #[serde(default)]
    share_hosts: Vec<String>,
    #[serde(default)]
    include_added: bool,
}

struct Git {
    scope: &'static str,
    repo: Option<PathBuf>,
}

impl Git {
    fn cmd(&self) -> Command {
        let mut c = Command::new("git");
        if let Some(r) = &self.repo {
            c.current_dir(r);
        }
        c
    }

    fn output(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        self.cmd()
            .args(args)
            .output()
            .context("running git (is it installed?)")
    }

    /// Every value of `key` in this scope.
    fn get_all(&self, key: &str) -> anyhow::Result<Vec<String>> {
        let out = self.output(&["config", self.scope, "--get-all", key])?;
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from)
                .collect()),
            Some(1) => Ok(vec![]),
            _ => bail!(
                "git config {} --get-all {key}: {}",
                self.scope,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    /// The value git would use (any scope).
    fn effective(&self, key: &str) -> anyhow::Result<Option<String>> {
        let out = self.output(&["config", "--get", key])?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string()))
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = self.output(args)?;
        // `--unset-all` of a key that is not there exits 5: nothing to do.
        let nothing_to_unset = args.contains(&"--unset-all") && out.status.code() == Some(5);
        if !out.status.success() && !nothing_to_unset {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Make `key` hold exactly `values` in this scope.
    fn set_all(&self, key: &str, values: &[String]) -> anyhow::Result<()> {
        self.run(&["config", self.scope, "--unset-all", key])?;
        for v in values {
            self.run(&["config", self.scope, "--add", key, v])?;
        }
        Ok(())
    }
}

fn show(values: &[String]) -> String {
    match values {
        [] => "(unset)".into(),
        [v] => shorten(v),
        vs => vs.iter().map(|v| shorten(v)).collect::<Vec<_>>().join(", "),
    }
}

fn shorten(v: &str) -> String {
    if v.chars().count() > 60 {
        format!("{}…", v.chars().take(59).collect::<String>())
    } else {
        v.to_string()
    }
}

fn record_path(git: &Git) -> PathBuf {
    let dir = vmux_proto::store::vmux_home().join("git");
    match &git.repo {
        None => dir.join("setup-global.json"),
        Some(r) => dir.join(format!(
            "setup-local-{}.json",
            short_hash(&r.display().to_string())
        )),
    }
}

/// A short, stable name for a repository path (FNV-1a; not a security boundary).
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `~/x` → `$HOME/x`, as git expands paths.
fn expand(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => vmux_proto::store::home_dir().join(rest),
        None => PathBuf::from(p),
    }
}

pub async fn run(cmd: GitCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        GitCmd::Setup(a) => setup(a),
    }
}

fn setup(args: SetupArgs) -> anyhow::Result<ExitCode> {
    let git = if args.local {
        let out = Command::new("git")
            .args(["rev-parse", "--show-toplevel"])
            .output()
            .context("running git (is it installed?)")?;
        if !out.status.success() {
            bail!("--local: this directory is not inside a git repository");
        }
        Git {
            scope: "--local",
            repo: Some(PathBuf::from(
                String::from_utf8_lossy(&out.stdout).trim_end(),
            )),
        }
    } else {
        Git {
            scope: "--global",
            repo: None,
        }
    };
    let path = record_path(&git);
    if args.undo {
        return undo(&git, &path);
    }

    let home = super::agent::home();
    let keys = home.load_keys()?;
    let chosen =
        super::ssh_config::select_keys(&keys, &args.key.iter().cloned().collect::<Vec<_>>())?;
    let key = match chosen.as_slice() {
        [k] => k.clone(),
        [] => bail!("every key the agent lists is disabled"),
        _ => bail!(
            "the agent lists {} keys; choose the signing key with --key:\n{}",
            chosen.len(),
            super::ssh_config::describe(&chosen)
        ),
    };
    let public = super::ssh_config::public_line(&key)?;
    let Some(email) = git.effective("user.email")?.filter(|e| !e.is_empty()) else {
        bail!(
            "git has no user.email, which the allowed-signers file needs: \
             git config {} user.email you@example.com",
            git.scope
        );
    };

    let mut record: Record = vmux_proto::store::read_json(&path)?.unwrap_or_default();
    record.scope = git.scope.trim_start_matches('-').into();
    record.repo = git.repo.clone();
    for k in SIGNING_KEYS {
        if !record.previous.contains_key(k) {
            let v = git.get_all(k)?;
            record.previous.insert(k.into(), v);
        }
    }

    // The allowed-signers file: an existing one gets a line; else vmux makes one.
    let signer_line = format!("{email} namespaces=\"git\" {public}");
    let ours = vmux_proto::store::vmux_home().join("git/allowed_signers");
    let existing = git
        .effective("gpg.ssh.allowedSignersFile")?
        .map(|p| expand(&p))
        .filter(|p| *p != ours && p.is_file());
    let signers_file = match existing {
        Some(file) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            if !text.lines().any(|l| l.trim() == signer_line) {
                let mut new = text.clone();
                if !new.is_empty() && !new.ends_with('\n') {
                    new.push('\n');
                }
                new.push_str(&signer_line);
                new.push('\n');
                write_keeping_mode(&file, &new)?;
                println!(
                    "{}: added {email} with key {}",
                    file.display(),
                    short_fp(&key)
                );
                record.appended = Some((file.clone(), signer_line.clone()));
            }
            file
        }
        None => {
            vmux_proto::store::ensure_dir(ours.parent().expect("has a parent"), 0o700)?;
            let text = std::fs::read_to_string(&ours).unwrap_or_default();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| l.split_whitespace().next() != Some(email.as_str()))
                .collect();
            let mut new = kept.join("\n");
            if !new.is_empty() {
                new.push('\n');
            }
            new.push_str(&signer_line);
            new.push('\n');
            vmux_proto::store::write_atomic(&ours, new.as_bytes(), 0o644)?;
            if text.is_empty() {
                record.created = Some(ours.clone());
            }
            println!("{}: {email} with key {}", ours.display(), short_fp(&key));
            ours
        }
    };

    let wanted: [(&str, String); 5] = [
        ("gpg.format", "ssh".into()),
        ("user.signingkey", format!("key::{public}")),
        ("commit.gpgsign", "true".into()),
        ("tag.gpgsign", "true".into()),
        (
            "gpg.ssh.allowedSignersFile",
            signers_file.display().to_string(),
        ),
    ];
    let where_ = match &git.repo {
        Some(r) => format!("{}/.git/config", r.display()),
        None => "your global git config".into(),
    };
    println!("git config ({where_}):");
    for (k, v) in &wanted {
        let before = git.get_all(k)?;
        if before.len() == 1 && before[0] == *v {
            println!("  {k} = {} (unchanged)", shorten(v));
        } else {
            git.set_all(k, std::slice::from_ref(v))?;
            println!("  {k}: {} → {}", show(&before), shorten(v));
        }
        record.set.insert((*k).into(), v.clone());
    }

    for host in &args.share_connections {
        let dir = vmux_proto::store::home_dir().join(".ssh/vmux-control");
        vmux_proto::store::ensure_dir(&dir, 0o700)?;
        let block = format!(
            "Host {host}\n    ControlMaster auto\n    ControlPath {}\n    ControlPersist 10m\n",
            super::ssh_config::quote(&dir.join("%C").display().to_string())
        );
        let added = super::ssh_config::write_block(&share_id(host), &block)?;
        record.include_added |= added;
        if !record.share_hosts.contains(host) {
            record.share_hosts.push(host.clone());
        }
        println!(
            "ssh connections to {host} are shared for 10 minutes after the last use \
             (one approval for a burst of git operations): {}",
            super::ssh_config::managed_file().display()
        );
        if added {
            println!(
                "  added an Include line at the top of {} (your own lines are unchanged)",
                super::ssh_config::user_config().display()
            );
        }
    }

    vmux_proto::store::ensure_dir(path.parent().expect("has a parent"), 0o700)?;
    vmux_proto::store::write_json(&path, &record)?;
    let socket = super::ssh_config::agent_socket(&home)?;
    if std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from) != Some(socket.clone()) {
        println!(
            "note: git signs through SSH_AUTH_SOCK; point it at vmux: export SSH_AUTH_SOCK={}",
            socket.display()
        );
    }
    println!(
        "undo: vmux git setup --undo{}",
        if args.local { " --local" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

fn share_id(host: &str) -> String {
    format!("share-connections {host}")
}

fn short_fp(k: &vmux_agent::state::CachedKey) -> String {
    vmux_proto::identity::key_fingerprint(&k.record.public_key)
}

fn write_keeping_mode(path: &Path, text: &str) -> anyhow::Result<()> {
    let mode = std::fs::metadata(path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o644);
    vmux_proto::store::write_atomic(path, text.as_bytes(), mode)?;
    Ok(())
}

fn undo(git: &Git, path: &Path) -> anyhow::Result<ExitCode> {
    let Some(record) = vmux_proto::store::read_json::<Record>(path)? else {
        bail!(
            "nothing to undo: no `vmux git setup{}` recorded here ({})",
            if git.repo.is_some() { " --local" } else { "" },
            path.display()
        );
    };
    println!("git config restored:");
    for (k, before) in &record.previous {
        let now = git.get_all(k)?;
        if now == *before {
            println!("  {k} = {} (unchanged)", show(before));
            continue;
        }
        if let Some(set) = record.set.get(k) {
            if now.len() != 1 || now[0] != *set {
                println!("  note: {k} was changed after setup; restoring it all the same");
            }
        }
        git.set_all(k, before)?;
        println!("  {k}: {} → {}", show(&now), show(before));
    }
    if let Some((file, line)) = &record.appended {
        if let Ok(text) = std::fs::read_to_string(file) {
            let kept: Vec<&str> = text.lines().filter(|l| l.trim() != line).collect();
            let mut new = kept.join("\n");
            if !new.is_empty() {
                new.push('\n');
            }
            write_keeping_mode(file, &new)?;
            println!("{}: removed the line setup added", file.display());
        }
    }
    if let Some(file) = &record.created {
        if std::fs::remove_file(file).is_ok() {
            println!("removed {}", file.display());
        }
    }
    for host in &record.share_hosts {
        if super::ssh_config::remove_block(&share_id(host), record.include_added)? {
            println!("ssh connections to {host} are no longer shared");
        }
    }
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(ExitCode::SUCCESS)
}
