//! Compiles the XDP program (`ebpf/natfw.bpf.c`) with clang into OUT_DIR, where
//! `xdp::PROGRAM` embeds it. Without clang the workspace still builds: an empty object is
//! embedded and `natfw run` refuses to start with a clear message.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("natfw.bpf.o");
    let src = manifest.join("../../ebpf/natfw.bpf.c");
    println!("cargo:rerun-if-changed={}", src.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../../ebpf/natfw.h").display()
    );
    println!("cargo:rerun-if-env-changed=NATFW_CLANG");

    let clang = std::env::var("NATFW_CLANG").unwrap_or_else(|_| "clang".into());
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
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            println!("cargo:warning=clang failed on {} ({s}); embedding an empty XDP object: `natfw run` will not work (install clang and libbpf-dev)", src.display());
            std::fs::write(&out, b"").expect("write OUT_DIR");
        }
        Err(e) => {
            println!("cargo:warning={clang} not runnable ({e}); embedding an empty XDP object: `natfw run` will not work (install clang and libbpf-dev)");
            std::fs::write(&out, b"").expect("write OUT_DIR");
        }
    }
}
