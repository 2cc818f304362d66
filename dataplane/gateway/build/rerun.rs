//! When cargo must run `build.rs` again: the rule, as a pure function so it can be tested (this
//! file is compiled into `build.rs` and, for its tests, into the library).
//!
//! A fresh clone built without clang embeds an empty XDP object. Installing clang later changes
//! none of the inputs cargo knew about (the C file, `NATFW_CLANG`), so the empty object would
//! stay. The rule therefore also watches where clang would appear: without clang, every
//! directory of `PATH` (adding a file changes the directory, so cargo reruns the script); with
//! clang, the clang binary itself (an upgrade rebuilds) and the libbpf headers' directory (a
//! failed compile because libbpf-dev is missing is retried once it is installed).

use std::path::{Path, PathBuf};

/// What the build script found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No runnable clang: `name` was not found on `PATH` (or the given path does not exist).
    NoClang,
    /// clang at this path compiled the program (`ok`) or failed on it (`!ok`).
    Clang { path: PathBuf, ok: bool },
}

/// The directory whose changes mean "libbpf-dev was installed or upgraded".
pub const LIBBPF_HEADERS: &str = "/usr/include/bpf";

/// Resolve the compiler the build script runs: `name` with a `/` is a path; a bare name is
/// looked up in the `PATH` directories `dirs`, as `Command::new` would.
pub fn find_clang(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `cargo:` lines that make cargo rerun the build script when an input changes. `src` is the
/// C file, `path_dirs` the directories of `PATH`, `headers` the libbpf header directory.
pub fn rerun_lines(
    src: &Path,
    found: &Found,
    path_dirs: &[PathBuf],
    headers: &Path,
) -> Vec<String> {
    let mut out = vec![
        format!("cargo:rerun-if-changed={}", src.display()),
        "cargo:rerun-if-env-changed=NATFW_CLANG".to_string(),
        "cargo:rerun-if-env-changed=PATH".to_string(),
    ];
    match found {
        Found::NoClang => {
            // Only directories that exist: cargo treats a missing path as always changed.
            for d in path_dirs.iter().filter(|d| d.is_dir()) {
                out.push(format!("cargo:rerun-if-changed={}", d.display()));
            }
        }
        Found::Clang { path, ok } => {
            out.push(format!("cargo:rerun-if-changed={}", path.display()));
            // Compiled: changes in the header directory (libbpf upgraded) rebuild. Failed: the
            // nearest existing ancestor of it, so installing libbpf-dev reruns the script.
            let mut h = headers;
            while !ok && !h.exists() {
                match h.parent() {
                    Some(p) => h = p,
                    None => break,
                }
            }
            if h.exists() {
                out.push(format!("cargo:rerun-if-changed={}", h.display()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn without_clang_every_existing_path_dir_is_watched() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        let dirs = vec![a.clone(), b.clone()];
        assert_eq!(find_clang("clang", &dirs), None);
        let lines = rerun_lines(
            Path::new("x.c"),
            &Found::NoClang,
            &dirs,
            Path::new("/nonexistent/bpf"),
        );
        assert!(lines.contains(&"cargo:rerun-if-changed=x.c".to_string()));
        assert!(lines.contains(&"cargo:rerun-if-env-changed=NATFW_CLANG".to_string()));
        assert!(lines.contains(&"cargo:rerun-if-env-changed=PATH".to_string()));
        assert!(lines.contains(&format!("cargo:rerun-if-changed={}", a.display())));
        // A missing directory would make cargo rerun on every build.
        assert!(
            !lines.iter().any(|l| l.ends_with(&*b.to_string_lossy())),
            "{lines:?}"
        );
    }

    #[test]
    fn clang_is_found_on_path_and_then_watched_itself() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        // Not executable: not a compiler.
        std::fs::write(a.join("clang"), "").unwrap();
        let c = exe(&b, "clang");
        let dirs = vec![a.clone(), b.clone()];
        assert_eq!(find_clang("clang", &dirs), Some(c.clone()));
        assert_eq!(find_clang(&c.to_string_lossy(), &[]), Some(c.clone()));
        assert_eq!(find_clang("/nonexistent/clang", &dirs), None);
        let headers = t.path().join("include/bpf");
        let found = Found::Clang {
            path: c.clone(),
            ok: true,
        };
        let lines = rerun_lines(Path::new("x.c"), &found, &dirs, &headers);
        assert!(lines.contains(&format!("cargo:rerun-if-changed={}", c.display())));
        // PATH directories are no longer watched once clang is there.
        assert!(!lines.contains(&format!("cargo:rerun-if-changed={}", a.display())));
        // Failed compile with the headers missing: the nearest existing ancestor is watched.
        let failed = Found::Clang {
            path: c.clone(),
            ok: false,
        };
        let lines = rerun_lines(Path::new("x.c"), &failed, &dirs, &headers);
        assert!(
            lines.contains(&format!("cargo:rerun-if-changed={}", t.path().display())),
            "{lines:?}"
        );
        std::fs::create_dir_all(&headers).unwrap();
        let lines = rerun_lines(Path::new("x.c"), &failed, &dirs, &headers);
        assert!(lines.contains(&format!("cargo:rerun-if-changed={}", headers.display())));
    }
}
