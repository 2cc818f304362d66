//! Compiles the XDP program (`ebpf/natfw.bpf.c`) with clang into OUT_DIR, where
//! `xdp::PROGRAM` embeds it. Without clang the workspace still builds: an empty object is
//! embedded and `natfw run` refuses to start with a clear message. When the script reruns (so
//! that installing clang later is enough for a plain `cargo build`): `build/rerun.rs`.

use std::path::PathBuf;
use std::process::Command;

#[path = "build/rerun.rs"]
mod rerun;

/// The commit natfw is built from, for `natfw_build_info` (`NATFW_GIT` overrides; `unknown`
/// outside a git checkout, e.g. from a source package).
fn git_commit(manifest: &std::path::Path) -> String {
    println!("cargo:rerun-if-env-changed=NATFW_GIT");
    if let Ok(v) = std::env::var("NATFW_GIT") {
        return v;
    }
    let git = |args: &[&str]| -> Option<String> {
        let o = Command::new("git")
            .args(args)
            .current_dir(manifest)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // A new commit moves HEAD or the branch it names: rerun then.
    for r in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", r]) {
            let p = manifest.join(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
            let p = manifest.join(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("natfw.bpf.o");
    let src = manifest.join("../../ebpf/natfw.bpf.c");
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../../ebpf/natfw.h").display()
    );
    println!("cargo:rustc-env=NATFW_GIT={}", git_commit(&manifest));
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let name = std::env::var("NATFW_CLANG").unwrap_or_else(|_| "clang".into());

    let found = match rerun::find_clang(&name, &path_dirs) {
        None => {
            println!("cargo:warning={name} not found; embedding an empty XDP object: `natfw run` will not work (install clang and libbpf-dev, then build again)");
            std::fs::write(&out, b"").expect("write OUT_DIR");
            rerun::Found::NoClang
        }
        Some(clang) => {
            let status = Command::new(&clang)
                .args([
                    "-O2",
                    "-g",
                    "-Wall",
                    "-target",
                    "bpf",
                    "-I/usr/include/x86_64-linux-gnu",
                    "-c",
                ])
                .arg(&src)
                .arg("-o")
                .arg(&out)
                .status();
            let ok = match status {
                Ok(s) if s.success() => true,
                Ok(s) => {
                    println!("cargo:warning={} failed on {} ({s}); embedding an empty XDP object: `natfw run` will not work (install libbpf-dev, then build again)", clang.display(), src.display());
                    false
                }
                Err(e) => {
                    println!("cargo:warning={} not runnable ({e}); embedding an empty XDP object: `natfw run` will not work", clang.display());
                    false
                }
            };
            if !ok {
                std::fs::write(&out, b"").expect("write OUT_DIR");
            }
            rerun::Found::Clang { path: clang, ok }
        }
    };
    for line in rerun::rerun_lines(
        &src,
        &found,
        &path_dirs,
        std::path::Path::new(rerun::LIBBPF_HEADERS),
    ) {
        println!("{line}");
    }
}
