//! What `vmux ssh` reads from files and arguments: ssh_config text with a destination
//! and `-o` options (`vmux_client::config::resolve`, on the tree's one ssh_config parser,
//! `vmux_proto::ssh_config`), a known_hosts file (`known_hosts::check_text`), `-L`/`-R`
//! specs (`forward::parse`, `forward::parse_remote`) and ssh's command line
//! (`args::normalize`).
//!
//! The first byte picks the parser; the rest is its input. Every call must return, never
//! panic; a known_hosts file never reports a key as known unless a line holds it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_client::config::{resolve, CommandLine, Files};
use vmux_client::{args, forward, known_hosts};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 5 {
        0 => {
            // First line: destination; second: one -o option; the rest: the config.
            let mut lines = text.splitn(3, '\n');
            let cl = CommandLine {
                destination: lines.next().unwrap_or("").to_string(),
                user: None,
                port: None,
                options: lines
                    .next()
                    .map(|o| vec![o.to_string()])
                    .unwrap_or_default(),
                ..Default::default()
            };
            let files = Files::Text(lines.next().unwrap_or("").to_string());
            if let Ok(t) = resolve(&cl, &files) {
                assert!(!t.host.is_empty());
                let _ = (t.known_hosts_name(), t.host_port());
            }
        }
        1 => {
            let key = ssh_key::PublicKey::from_openssh(KEY).unwrap();
            let (name, file) = text.split_once('\n').unwrap_or(("h", &text));
            let found = known_hosts::check_text(file, name, key.key_data());
            if found == known_hosts::Found::Known {
                assert!(file.contains(
                    "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                ));
            }
        }
        2 => {
            let _ = forward::parse(&text);
            let _ = forward::parse_remote(&text);
        }
        3 => {
            // The parser alone, every line seen by a visitor, for an arbitrary host.
            let (host, config) = text.split_once('\n').unwrap_or(("h", &text));
            let c = vmux_proto::ssh_config::parse(config, "fuzz", &Default::default());
            struct V;
            impl vmux_proto::ssh_config::Visitor for V {
                fn match_host(&self) -> String {
                    "m".into()
                }
                fn match_user(&self) -> String {
                    "u".into()
                }
                fn option(
                    &mut self,
                    d: &vmux_proto::ssh_config::Directive,
                    _: bool,
                ) -> Result<(), vmux_proto::ssh_config::ConfigError> {
                    assert!(!d.args.is_empty());
                    Ok(())
                }
            }
            let lookup = vmux_proto::ssh_config::Lookup {
                host,
                local_user: "u",
            };
            let _ = vmux_proto::ssh_config::evaluate(&[&c], &lookup, &mut V);
            let _ = vmux_proto::ssh_config::glob(host, config);
        }
        _ => {
            let words: Vec<String> = text.split(' ').map(String::from).collect();
            if let Ok(out) = args::normalize(&words) {
                assert!(out.contains(&"--".to_string()));
            }
        }
    }
});
