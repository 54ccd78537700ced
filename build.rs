//! Link flags for the `vmux` binary.

fn main() {
    // Relative relocations packed (DT_RELR, glibc 2.36+, binutils 2.38+): a
    // position-independent binary's ~0.7 MB of `.rela.dyn` shrinks to a bitmap, which
    // is less to read and less to map at every start (README, benchmarks). Only GNU ld
    // and lld on glibc know the flag; an older ld ignores it with a warning.
    let var = |name| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
