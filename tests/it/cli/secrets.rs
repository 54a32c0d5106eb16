//! Issue 20 item 2: `credproxy check` runs each `{ command }` secret once, as `run` does at
//! start, and reports a failure by the program and its exit status, never its output.

use std::process::Command;

/// A config with a static provider whose token is `command`, in `dir`.
fn config(dir: &std::path::Path, command: &str) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[proxy]\nstate_dir = \"{}\"\n\n[providers.p]\npreset = \"static\"\n\
             hosts = [\"api.p.test\"]\ntoken = {{ command = {command}, ttl = \"10m\" }}\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn check(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn check_runs_each_command_once_and_a_failure_names_the_program_and_status_only() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let ok = config(
        dir.path(),
        &format!(
            "[\"sh\", \"-c\", \"echo run >> {}; echo cmd-S3CR3T-ok\"]",
            count.display()
        ),
    );
    let out = check(&ok);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&count).unwrap(),
        "run\n",
        "run exactly once"
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("S3CR3T"), "{all}");

    let failing = config(
        dir.path(),
        "[\"sh\", \"-c\", \"echo out-S3CR3T; echo err-S3CR3T >&2; exit 7\"]",
    );
    let out = check(&failing);
    assert_eq!(out.status.code(), Some(2), "a config error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("providers.p.token: the command `sh` failed (exit status: 7); run it in a terminal to see why"),
        "{stderr}"
    );
    let all = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(!all.contains("S3CR3T"), "the output is never shown: {all}");

    let missing = config(
        dir.path(),
        "[\"/nonexistent/op\", \"read\", \"op://v/i/f\"]",
    );
    let stderr = String::from_utf8_lossy(&check(&missing).stderr).into_owned();
    assert!(
        stderr.contains("the command `/nonexistent/op` can't be started"),
        "{stderr}"
    );
}

#[test]
fn a_command_secret_with_mistakes_says_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    for (command, says) in [
        ("[]", "providers.p.token.command: is empty"),
        (
            "[\"echo\", \"x\"], ttl = \"soon\"",
            "providers.p.token.ttl: must be a duration",
        ),
        ("[\"echo\", \"x\"], ttl = \"10ms\"", "shorter than 1s"),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "[proxy]\nstate_dir = \"{}\"\n[providers.p]\npreset = \"static\"\n\
                 hosts = [\"api.p.test\"]\ntoken = {{ command = {command} }}\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let out = check(&path);
        assert_eq!(out.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{command}: {stderr}");
    }
}

/// `status` and `healthcheck` only need to know where the proxy listens: they don't run a
/// secret command (a Docker `HEALTHCHECK` every 30 s must not run `op read`).
#[test]
fn status_and_healthcheck_run_no_secret_command() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let path = config(
        dir.path(),
        &format!(
            "[\"sh\", \"-c\", \"echo run >> {}; echo tok\"]",
            count.display()
        ),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    // Nothing listens on this admin port: both commands report that, after reading the config.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &path,
        text.replace(
            "[proxy]\n",
            &format!("[proxy]\nadmin_listen = \"127.0.0.1:{port}\"\n"),
        ),
    )
    .unwrap();
    for command in ["status", "healthcheck"] {
        let out = Command::new(env!("CARGO_BIN_EXE_credproxy"))
            .arg(command)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_ne!(
            out.status.code(),
            Some(2),
            "{command}: the config loads: {out:?}"
        );
    }
    assert!(!count.exists(), "a secret command ran");
    assert!(check(&path).status.success());
    assert_eq!(
        std::fs::read_to_string(&count).unwrap(),
        "run\n",
        "check runs it"
    );
}
