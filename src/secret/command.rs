//! `{ command = [PROG, ARGS...], ttl = "10m" }`: a secret that a program prints (`op read`,
//! `gh auth token`, `vault kv get -field=...`, `pass show`).
//!
//! The program runs without a shell (the argument list is passed as is), with credproxy's
//! environment, no standard input, and its standard error discarded; standard output, trimmed, is
//! the value. It has [`TIMEOUT`] to finish, then it is killed. A failure is described by the
//! program's name and how it ended, never by anything it printed: a program that fails may
//! still print half a secret, or a secret in an error message.
//!
//! The child runs in real time whatever tokio's clock does: it is waited for on a thread of its
//! own, so a paused test clock can't time it out, and the async side ([`super::live`]) runs it on
//! the blocking pool.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{MAX_SECRET_FILE, Secret};

/// How long a secret command may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Run `argv` once and take its trimmed standard output as the secret, within `timeout`.
///
/// The error is a sentence naming the program and how it ended (its exit status, a signal, the
/// timeout, or why it could not start), never its output.
pub fn run(argv: &[String], timeout: Duration) -> Result<Secret, String> {
    let Some(prog) = argv.first() else {
        return Err("the command is empty: give the program and its arguments".into());
    };
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new(prog)
        .args(&argv[1..])
        // Its own process group, so a timeout stops what it started too (`sh -c 'x & y'`).
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("the command `{prog}` can't be started: {e}"))?;
    let pid = rustix::process::Pid::from_child(&child);
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    // The waiter owns the child: it reads standard output to its end (at most the cap, then
    // drains the rest so the program is not stuck writing), then reaps it.
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = (&mut stdout)
            .take(MAX_SECRET_FILE + 1)
            .read_to_end(&mut out)
            .and_then(|_| std::io::copy(&mut stdout, &mut std::io::sink()));
        drop(stdout);
        let status = child.wait();
        let _ = tx.send((out, read.and(status)));
    });
    let (out, status) = match rx.recv_timeout(timeout) {
        Ok(done) => done,
        Err(_) => {
            // Not reaped yet (the waiter reaps only after the output ends), so the pid is still
            // this child's. A program that ignores its output's end is killed all the same.
            // The whole group: a child it started may hold the output open.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            return Err(format!(
                "the command `{prog}` did not finish within {timeout:?} and was stopped"
            ));
        }
    };
    let status = status.map_err(|e| format!("the command `{prog}` could not be read: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the command `{prog}` failed ({status}); run it in a terminal to see why"
        ));
    }
    if out.len() as u64 > MAX_SECRET_FILE {
        return Err(format!(
            "the command `{prog}` printed more than 64 KiB (a secret command prints the secret alone)"
        ));
    }
    let Ok(text) = String::from_utf8(out) else {
        return Err(format!(
            "the command `{prog}` printed something that is not UTF-8 text"
        ));
    };
    let value = text.trim();
    if value.is_empty() {
        return Err(format!(
            "the command `{prog}` printed nothing on standard output"
        ));
    }
    Ok(Secret::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        ["sh", "-c", script].map(String::from).to_vec()
    }

    #[test]
    fn the_trimmed_output_is_the_secret() {
        let s = run(&sh("printf '  s3cret-value\\n\\n'"), TIMEOUT).unwrap();
        assert_eq!(s.expose(), "s3cret-value");
        // No shell: the arguments go as they are.
        let s = run(&["echo".into(), "a b;$HOME".into()], TIMEOUT).unwrap();
        assert_eq!(s.expose(), "a b;$HOME");
    }

    /// The program and how it ended, never what it printed (on either stream).
    #[test]
    fn a_failure_names_the_program_and_its_status_never_its_output() {
        let err = run(
            &sh("echo leaked-S3CR3T; echo also-S3CR3T >&2; exit 3"),
            TIMEOUT,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "the command `sh` failed (exit status: 3); run it in a terminal to see why"
        );
        let err = run(&["/nonexistent/op".into()], TIMEOUT).unwrap_err();
        assert!(
            err.starts_with("the command `/nonexistent/op` can't be started: "),
            "{err}"
        );
        let err = run(&sh("true"), TIMEOUT).unwrap_err();
        assert!(err.ends_with("printed nothing on standard output"), "{err}");
        let err = run(&sh("head -c 70000 /dev/zero | tr '\\0' x"), TIMEOUT).unwrap_err();
        assert!(err.contains("more than 64 KiB"), "{err}");
        assert!(!err.contains("xxx"));
        let err = run(&sh("printf 'caf\\351'"), TIMEOUT).unwrap_err();
        assert!(err.ends_with("is not UTF-8 text"), "{err}");
        assert!(run(&[], TIMEOUT).unwrap_err().contains("is empty"));
    }

    /// `pid` was killed: gone, or a zombie until its waiter reaps it (polled up to 2 s, for the
    /// kernel to finish the kill; no timing is asserted).
    fn stopped(pid: i32) -> bool {
        (0..200).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let dead = state.is_empty() || state.split(' ').nth(2) == Some("Z");
            if !dead {
                std::thread::sleep(Duration::from_millis(10));
            }
            dead
        })
    }

    /// A program that hangs is killed at the timeout (a short one here: the rule, not the 10 s).
    #[test]
    fn a_program_that_hangs_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pidfile.display());
        let err = run(&sh(&script), Duration::from_millis(300)).unwrap_err();
        assert_eq!(
            err,
            "the command `sh` did not finish within 300ms and was stopped"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(stopped(pid), "the hung program {pid} is still running");
    }

    /// What a hung program started (holding its output open) is stopped with it.
    #[test]
    fn a_hung_programs_children_are_stopped_too() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        run(&sh(&script), Duration::from_millis(300)).unwrap_err();
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            stopped(pid),
            "the hung program's child {pid} is still running"
        );
    }
}
