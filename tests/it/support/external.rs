//! External clients the end-to-end tests drive (Node's undici, Python's requests and httpx,
//! curl): found or installed quietly once, or `None` with a printed reason, so a test can skip
//! where a tool truly cannot be had (`.ci/run` installs them first).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// A directory with `node_modules/undici` (installed with npm into the test target's own temp
/// dir on first use), or `None` when node or npm is missing or the install failed.
pub fn undici() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if !works("node", &["--version"]) {
            eprintln!("node not installed; skipping the undici test");
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-undici");
        if dir.join("node_modules/undici/package.json").exists() {
            return Some(dir);
        }
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--silent",
                "--no-audit",
                "--no-fund",
                "undici",
            ])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("`npm install undici` failed; skipping the undici test");
            return None;
        }
        Some(dir)
    })
    .clone()
}

/// Whether `python3` can import every one of `modules`, installing them with pip once if not.
pub fn python(modules: &[&str]) -> bool {
    // One pip at a time (tests run in parallel).
    static PIP: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _one = PIP.lock();
    let import = format!("import {}", modules.join(", "));
    if works("python3", &["-c", &import]) {
        return true;
    }
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(modules)
        .status();
    if works("python3", &["-c", &import]) {
        return true;
    }
    eprintln!("python3 with {modules:?} is not available; skipping");
    false
}

/// Whether `program args` runs and exits 0.
pub fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}
