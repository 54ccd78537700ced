//! What `vmux ssh` reads from files and arguments: ssh_config text with a destination
//! and `-o` options (`vmux_client::config::resolve`), a known_hosts file
//! (`known_hosts::check_text`) and a `-L` spec (`forward::parse`).
//!
//! The first byte picks the parser; the rest is its input. Every call must return, never
//! panic; a known_hosts file never reports a key as known unless a line holds it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_client::config::{resolve, CommandLine};
use vmux_client::{forward, known_hosts};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 3 {
        0 => {
            // First line: destination; second: one -o option; the rest: the config.
            let mut lines = text.splitn(3, '\n');
            let cl = CommandLine {
                destination: lines.next().unwrap_or("").to_string(),
                user: None,
                port: None,
                options: lines.next().map(|o| vec![o.to_string()]).unwrap_or_default(),
            };
            if let Ok(t) = resolve(&cl, lines.next()) {
                assert!(!t.host.is_empty());
                let _ = (t.known_hosts_name(), t.host_port());
            }
        }
        1 => {
            let key = ssh_key::PublicKey::from_openssh(KEY).unwrap();
            let (name, file) = text.split_once('\n').unwrap_or(("h", &text));
            let found = known_hosts::check_text(file, name, key.key_data());
            if found == known_hosts::Found::Known {
                assert!(file.contains("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"));
            }
        }
        _ => {
            let _ = forward::parse(&text);
        }
    }
});
