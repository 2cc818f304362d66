//! The fresh-clone-then-clang sequence of `build.rs`: a crate built with this very build script
//! first finds no compiler (empty XDP object), then a compiler appears on `PATH` and a plain
//! `cargo build` — no touch, no clean — embeds the real program.
//!
//! The compiler's name comes through `NATFW_CLANG` as a bare name looked up on `PATH` exactly
//! as `clang` is, so the test can make it appear in a directory of its own; what appears is a
//! link to the real clang.

use std::path::{Path, PathBuf};
use std::process::Command;

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn build(krate: &Path, bin: &Path) -> (bool, String) {
    let path = std::env::join_paths(
        std::iter::once(bin.to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["build", "--offline"])
        .current_dir(krate)
        .env("PATH", path)
        .env("NATFW_CLANG", "natfw-test-clang")
        .env("CARGO_TARGET_DIR", krate.join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The embedded object's first bytes, as the built test crate prints them.
fn object_head(krate: &Path) -> Vec<u8> {
    let out = Command::new(krate.join("target/debug/probe"))
        .output()
        .expect("run probe");
    assert!(out.status.success());
    out.stdout
}

#[test]
fn installing_clang_after_the_first_build_embeds_the_program() {
    let Some(clang) = which("clang") else {
        eprintln!("SKIP: clang not installed");
        return;
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = tempfile::tempdir().unwrap();
    // The same relative layout build.rs expects: crate/../../ebpf/natfw.bpf.c.
    let krate = t.path().join("dataplane/gateway");
    copy(&here.join("build.rs"), &krate.join("build.rs"));
    copy(&here.join("build/rerun.rs"), &krate.join("build/rerun.rs"));
    for f in std::fs::read_dir(here.join("../../ebpf")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            copy(&f, &t.path().join("ebpf").join(f.file_name().unwrap()));
        }
    }
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("src/main.rs"),
        "static P: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/natfw.bpf.o\"));\n\
         fn main() { use std::io::Write; std::io::stdout().write_all(&P[..P.len().min(4)]).unwrap(); }\n",
    )
    .unwrap();
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();

    let (ok, err) = build(&krate, &bin);
    assert!(ok, "{err}");
    assert!(err.contains("natfw-test-clang not found"), "{err}");
    assert_eq!(object_head(&krate), b"", "no compiler: empty object");

    // Nothing changed: nothing is rebuilt (the rule does not rerun the script every time).
    let (ok, err) = build(&krate, &bin);
    assert!(ok, "{err}");
    assert!(
        !err.contains("Compiling probe"),
        "rebuilt without a change: {err}"
    );

    // The compiler is installed; a plain build picks it up.
    std::os::unix::fs::symlink(&clang, bin.join("natfw-test-clang")).unwrap();
    let (ok, err) = build(&krate, &bin);
    assert!(ok, "{err}");
    assert_eq!(object_head(&krate), b"\x7fELF", "{err}");
}
