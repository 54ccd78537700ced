//! Link flags for the `vmux` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/hot-symbols.txt");
    let var = |name| std::env::var(name).unwrap_or_default();
    // Relative relocations packed (DT_RELR, glibc 2.36+, binutils 2.38+): a
    // position-independent binary's ~0.7 MB of `.rela.dyn` shrinks to a bitmap, which
    // is less to read and less to map at every start (README, benchmarks). Only GNU ld
    // and lld on glibc know the flag; an older ld ignores it with a warning.
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // Identical code folding: generic code instantiated for types of the same layout
    // is byte-for-byte the same function many times over; lld keeps one (0.14 MB).
    // Rust promises nothing about function-pointer identity, so `all` is sound; `safe`
    // folds nothing, as rustc writes no address-significance tables. Only lld has the
    // flag, and rustc (1.90+) links with its own lld on x86_64 Linux unless told
    // otherwise; GNU ld would stop at it.
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let own_linker = [
        "link-self-contained",
        "linker-flavor",
        "fuse-ld",
        "linker-features",
    ]
    .iter()
    .any(|f| flags.contains(f));
    // Release builds without debug info only: a folded function answers to one of its
    // names, which would mislead a backtrace or a profile.
    let shipped = var("PROFILE") == "release" && var("DEBUG") == "false";
    if var("TARGET") == "x86_64-unknown-linux-gnu" && !own_linker && shipped {
        println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
        // The functions the daemons run while serving, placed together at the start of
        // the text (written by scripts/hot-code). The kernel maps up to 64 KB of the
        // file around each page of code that faults in, so the 0.7 MB that serving runs,
        // scattered, kept megabytes mapped (README, benchmarks). A name that no longer
        // exists (another toolchain, a dependency update) is skipped.
        let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("link/hot-symbols.txt");
        // `-Wl,` splits its argument at commas: a path with one is left out.
        if order.is_file() && !order.to_string_lossy().contains(',') {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}
