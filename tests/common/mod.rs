//! Shared helpers for integration tests. Include with `mod common;`.
#![allow(dead_code)]

pub mod hw;
pub mod netns;
pub mod pam;
pub mod peer;
pub mod proc;
pub mod sshd;
pub mod tmux;
pub mod vmux;
