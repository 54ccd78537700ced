//! `vmux ssh-config HOST…`: a `Host` block that sends ssh to the vmux agent and offers
//! only the chosen keys (`IdentityFile` public halves, `IdentitiesOnly yes`), so a
//! server's `MaxAuthTries` never runs out on keys it does not know.
//!
//! vmux writes its blocks into a file of its own, `~/.ssh/config.d/vmux`, which
//! `~/.ssh/config` includes through one line vmux adds at its top once; the user's own
//! lines are never rewritten. `vmux git setup --share-connections` keeps its block there
//! too. Paths are written absolute: OpenSSH expands `~` and relative `Include`s from the
//! password database, not `$HOME`.

use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vmux_agent::state::CachedKey;
use vmux_agent::AgentHome;
use vmux_proto::identity::key_fingerprint;

#[derive(Args)]
pub struct SshConfigArgs {
    /// The host names (as typed after `ssh`, patterns allowed) the block is for.
    #[arg(required = true)]
    hosts: Vec<String>,
    /// The key to offer, by fingerprint (SHA256:…) or comment; repeat for several.
    /// Default: every enabled key the agent lists.
    #[arg(long)]
    key: Vec<String>,
    /// Write the block (and the public key files) instead of only printing it.
    #[arg(long)]
    write: bool,
    /// Remove the block written for these hosts.
    #[arg(long, conflicts_with_all = ["key", "write"])]
    remove: bool,
}

/// Where vmux keeps the blocks it writes.
pub fn managed_file() -> PathBuf {
    vmux_proto::store::home_dir().join(".ssh/config.d/vmux")
}

/// The user's own ssh config, which includes [`managed_file`].
pub fn user_config() -> PathBuf {
    vmux_proto::store::home_dir().join(".ssh/config")
}

const INCLUDE_NOTE: &str = "# Added by vmux: its Host blocks (vmux ssh-config, vmux git setup).";

fn include_line() -> String {
    format!("Include {}", managed_file().display())
}

fn begin(id: &str) -> String {
    format!("# vmux begin {id}")
}

fn end(id: &str) -> String {
    format!("# vmux end {id}")
}

/// The socket ssh should use: the running agent's (its status file), else the one the
/// agent's config names.
pub fn agent_socket(home: &AgentHome) -> anyhow::Result<PathBuf> {
    if let Ok(Some(s)) =
        vmux_proto::store::read_json::<vmux_agent::status::Status>(&home.status_file())
    {
        return Ok(PathBuf::from(s.socket));
    }
    Ok(home.socket(&home.load_config()?))
}

/// The cached keys a selector names: a fingerprint or a comment; every enabled key when
/// no selector is given.
pub fn select_keys(keys: &[CachedKey], selectors: &[String]) -> anyhow::Result<Vec<CachedKey>> {
    if keys.is_empty() {
        bail!(
            "the agent knows no keys yet: pair with a signer (`vmux agent pair`) and run \
             `vmux agent run` once so it fetches the key list"
        );
    }
    if selectors.is_empty() {
        return Ok(keys.iter().filter(|k| k.record.enabled).cloned().collect());
    }
    let mut out: Vec<CachedKey> = vec![];
    for sel in selectors {
        let found: Vec<&CachedKey> = keys
            .iter()
            .filter(|k| {
                let fp = key_fingerprint(&k.record.public_key);
                fp == *sel
                    || fp.trim_start_matches("SHA256:") == sel.trim_start_matches("SHA256:")
                    || k.record.comment == *sel
            })
            .collect();
        match found.as_slice() {
            [] => bail!("no key {sel:?}; the agent lists:\n{}", describe(keys)),
            [k] => {
                if !out
                    .iter()
                    .any(|o| o.record.public_key == k.record.public_key)
                {
                    out.push((*k).clone())
                }
            }
            _ => bail!(
                "{sel:?} names {} keys; give a fingerprint:\n{}",
                found.len(),
                describe(keys)
            ),
        }
    }
    Ok(out)
}

/// One line per key: fingerprint, comment, algorithm.
pub fn describe(keys: &[CachedKey]) -> String {
    keys.iter()
        .map(|k| {
            format!(
                "  {}  {}  {}",
                key_fingerprint(&k.record.public_key),
                k.record.comment,
                k.record.algorithm
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ALGORITHM BASE64 COMMENT`, as in authorized_keys.
pub fn public_line(k: &CachedKey) -> anyhow::Result<String> {
    let mut key = ssh_key::PublicKey::from_bytes(&k.record.public_key)
        .context("a cached key is not a valid SSH public key")?;
    key.set_comment(k.record.comment.as_str());
    Ok(key.to_openssh()?)
}

/// Where a key's public half is written for `IdentityFile`.
fn key_file(k: &CachedKey) -> PathBuf {
    let fp = key_fingerprint(&k.record.public_key);
    let short: String = fp
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect();
    vmux_proto::store::home_dir().join(format!(".ssh/vmux-keys/{short}.pub"))
}

/// A value for ssh_config: quoted when it holds a space.
pub fn quote(v: &str) -> String {
    if v.contains(char::is_whitespace) || v.contains('"') {
        format!("\"{}\"", v.replace('"', ""))
    } else {
        v.to_string()
    }
}

/// Put `block` (the lines between the markers) into the managed file under `id`,
/// replacing an earlier block with that id; make sure `~/.ssh/config` includes the file.
/// Returns whether the Include line was added now.
pub fn write_block(id: &str, block: &str) -> anyhow::Result<bool> {
    let path = managed_file();
    let dir = path.parent().expect("has a parent");
    vmux_proto::store::ensure_dir(&vmux_proto::store::home_dir().join(".ssh"), 0o700)?;
    vmux_proto::store::ensure_dir(dir, 0o700)?;
    let text = read_or_empty(&path)?;
    let mut kept = without_block(&text, id);
    if kept.trim().is_empty() {
        kept = "# Written by vmux (`vmux ssh-config`, `vmux git setup --share-connections`).\n\
                # vmux rewrites the blocks between its markers; put your own lines in ~/.ssh/config.\n"
            .to_string();
    }
    if !kept.ends_with('\n') {
        kept.push('\n');
    }
    let body = block.trim_end_matches('\n');
    kept.push_str(&format!("\n{}\n{body}\n{}\n", begin(id), end(id)));
    vmux_proto::store::write_atomic(&path, kept.as_bytes(), 0o600)?;
    ensure_include()
}

/// Remove the block `id`; returns whether there was one. When no block is left and
/// `drop_include` is set, the Include line vmux added is removed too.
pub fn remove_block(id: &str, drop_include: bool) -> anyhow::Result<bool> {
    let path = managed_file();
    let text = read_or_empty(&path)?;
    let kept = without_block(&text, id);
    let had = kept != text;
    if had {
        vmux_proto::store::write_atomic(&path, kept.as_bytes(), 0o600)?;
    }
    if drop_include && !kept.contains("# vmux begin ") {
        let _ = std::fs::remove_file(&path);
        remove_include()?;
    }
    Ok(had)
}

fn read_or_empty(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `text` without the lines from `# vmux begin ID` to `# vmux end ID` (and the blank
/// line before them).
fn without_block(text: &str, id: &str) -> String {
    let (b, e) = (begin(id), end(id));
    let mut out: Vec<&str> = vec![];
    let mut inside = false;
    for line in text.lines() {
        if line == b {
            inside = true;
            if out.last().is_some_and(|l| l.is_empty()) {
                out.pop();
            }
            continue;
        }
        if inside {
            if line == e {
                inside = false;
            }
            continue;
        }
        out.push(line);
    }
    let mut s = out.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// Add the Include line at the top of `~/.ssh/config` unless it is there; the rest of
/// the file is kept byte for byte (and its mode). Returns whether it was added.
pub fn ensure_include() -> anyhow::Result<bool> {
    let path = user_config();
    let text = read_or_empty(&path)?;
    let line = include_line();
    if text.lines().any(|l| l.trim() == line) {
        return Ok(false);
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| std::os::unix::fs::PermissionsExt::from_mode(0o600)),
    ) & 0o7777;
    // At the top: an Include after a `Host` line would only apply inside that block,
    // and ssh takes the first value it reads for each option.
    let new = format!("{INCLUDE_NOTE}\n{line}\n\n{text}");
    vmux_proto::store::write_atomic(&path, new.as_bytes(), mode)?;
    Ok(true)
}

/// Remove the two lines [`ensure_include`] added (and the blank line after them).
pub fn remove_include() -> anyhow::Result<()> {
    let path = user_config();
    let text = read_or_empty(&path)?;
    let line = include_line();
    let ours = format!("{INCLUDE_NOTE}\n{line}\n\n");
    let new = if let Some(rest) = text.strip_prefix(&ours) {
        rest.to_string()
    } else {
        text.replace(&format!("{INCLUDE_NOTE}\n{line}\n"), "")
    };
    if new != text {
        let mode = std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o600);
        if new.is_empty() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        } else {
            vmux_proto::store::write_atomic(&path, new.as_bytes(), mode)?;
        }
    }
    Ok(())
}

pub async fn run(args: SshConfigArgs) -> anyhow::Result<ExitCode> {
    let home = super::agent::home();
    let id = format!("ssh-config {}", args.hosts.join(" "));
    if args.remove {
        if remove_block(&id, true)? {
            println!(
                "removed the block for {} from {}",
                args.hosts.join(" "),
                managed_file().display()
            );
        } else {
            println!(
                "no block for {} in {}",
                args.hosts.join(" "),
                managed_file().display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let keys = select_keys(&home.load_keys()?, &args.key)?;
    if keys.is_empty() {
        bail!("every key the agent lists is disabled");
    }
    let socket = agent_socket(&home)?;
    let mut block = format!(
        "Host {}\n    IdentityAgent {}\n",
        args.hosts.join(" "),
        quote(&socket.display().to_string())
    );
    for k in &keys {
        block.push_str(&format!(
            "    IdentityFile {}\n",
            quote(&key_file(k).display().to_string())
        ));
    }
    block.push_str("    IdentitiesOnly yes\n");
    print!("{block}");
    if keys.len() > 6 {
        eprintln!(
            "note: {} keys is more than sshd's default MaxAuthTries (6); name fewer with --key",
            keys.len()
        );
    }
    if !args.write {
        eprintln!(
            "(not written: add --write to put it into {}, included from {})",
            managed_file().display(),
            user_config().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for k in &keys {
        let f = key_file(k);
        vmux_proto::store::ensure_dir(f.parent().expect("has a parent"), 0o700)?;
        vmux_proto::store::write_atomic(&f, format!("{}\n", public_line(k)?).as_bytes(), 0o644)?;
        println!("wrote {}", f.display());
    }
    let added = write_block(&id, &block)?;
    println!("wrote the block to {}", managed_file().display());
    if added {
        println!(
            "added `{}` at the top of {} (your own lines are unchanged)",
            include_line(),
            user_config().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_replaced_and_removed_whole() {
        let text = "# head\n\n# vmux begin a\nHost a\n# vmux end a\n\n# vmux begin b\nHost b\n# vmux end b\n";
        assert_eq!(
            without_block(text, "a"),
            "# head\n\n# vmux begin b\nHost b\n# vmux end b\n"
        );
        assert_eq!(
            without_block(text, "b"),
            "# head\n\n# vmux begin a\nHost a\n# vmux end a\n"
        );
        assert_eq!(without_block(text, "c"), text);
    }

    #[test]
    fn values_with_spaces_are_quoted() {
        assert_eq!(quote("/a b/c"), "\"/a b/c\"");
        assert_eq!(quote("/a/c"), "/a/c");
    }
}
