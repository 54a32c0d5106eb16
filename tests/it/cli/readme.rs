//! The README's commands, run as written (issue 15 item 1): the demo block against a real
//! `credproxy demo`, and no proxy example that curl would silently ignore.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const README: &str = include_str!("../../../README.md");

/// The ```sh blocks of the README, each as its lines.
fn shell_blocks(text: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => current = Some(Vec::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some(b), l) => b.push(l),
            (None, _) => {}
        }
    }
    blocks
}

/// The command part of a line (what follows ` # ` is a comment).
fn command(line: &str) -> &str {
    line.split(" # ").next().unwrap_or("").trim()
}

/// The demo block: `cargo run --release -- demo --listen ADDR`, then commands run in "another
/// terminal". The demo runs from the test's own build of the binary (the `cargo run --release --`
/// prefix is what builds it), on a free port in place of the README's, so the test can't collide.
#[test]
fn the_readme_demo_block_works_as_written() {
    let block = shell_blocks(README)
        .into_iter()
        .find(|b| b.iter().any(|l| l.contains("-- demo --listen")))
        .expect("the README has a demo block with a fixed --listen");
    let demo = command(block[0]);
    let args = demo
        .strip_prefix("cargo run --release -- ")
        .expect("the block starts the demo");
    let readme_addr = args
        .split_whitespace()
        .skip_while(|a| *a != "--listen")
        .nth(1)
        .unwrap()
        .to_owned();
    let port = crate::support::server::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(args.replace(&readme_addr, &addr).split_whitespace())
        .env("CREDPROXY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The demo prints its banner once credproxy holds its first token.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("Call the API") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the demo ended before its banner"
        );
    }
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let curl_ok = Command::new("curl").arg("--version").output().is_ok();
    let mut checked = 0;
    for l in &block[1..] {
        let cmd = command(l).replace(&readme_addr, &addr);
        if cmd.is_empty() || cmd.starts_with('#') {
            continue;
        }
        if cmd.starts_with("curl") && !curl_ok {
            eprintln!("curl is not installed: skipping `{cmd}`");
            continue;
        }
        let out = Command::new("sh")
            .args(["-c", &format!("timeout 20 {cmd}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "`{cmd}`: {out:?}");
        // What the README says it prints.
        if let Some(said) = l.split("# in another: ").nth(1) {
            let expected = said.split(",...").next().unwrap();
            assert!(text.contains(expected), "`{cmd}` printed {text}");
            checked += 1;
        }
        eprintln!("ran `{cmd}`: {text}");
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(checked > 0 || !curl_ok, "no command's output was checked");
}

/// curl ignores an uppercase `HTTP_PROXY` (only `HTTPS_PROXY`/`ALL_PROXY` are read in either
/// case), so an example `HTTP_PROXY=... curl` would reach the API directly, without the credential.
#[test]
fn no_example_sets_an_uppercase_http_proxy_for_curl() {
    let mut files = vec![("README.md".to_owned(), README.to_owned())];
    for dir in ["config", "docs"] {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(root).unwrap().flatten() {
            let path = entry.path();
            if let Ok(text) = std::fs::read_to_string(&path) {
                files.push((path.display().to_string(), text));
            }
        }
    }
    for (name, text) in files {
        for (n, line) in text.lines().enumerate() {
            let uses = line.contains("HTTP_PROXY=") && line.contains("curl");
            assert!(!uses, "{name}:{}: curl ignores HTTP_PROXY: {line}", n + 1);
        }
    }
}

/// Every `credproxy ...` line of the README's "Use it from any program" section names a real
/// command with options it takes: each is parsed by the binary (up to `--` or the end of the
/// shell words), with `--help` added so nothing runs.
#[test]
fn the_any_program_section_uses_real_commands_and_options() {
    let section = README
        .split("## Use it from any program")
        .nth(1)
        .expect("the README has the section")
        .split("\n## ")
        .next()
        .unwrap();
    assert!(
        section
            .trim_start()
            .starts_with("```sh\ncredproxy exec -- your-command"),
        "the section opens with credproxy exec"
    );
    let mut checked = 0;
    for block in shell_blocks(section) {
        for line in block {
            for part in command(line).split(['|', ';']) {
                let part = part.trim();
                let part = part
                    .strip_prefix("eval \"$(")
                    .map_or(part, |p| p.trim_end_matches(")\""));
                let Some(rest) = part.strip_prefix("credproxy ") else {
                    continue;
                };
                let words: Vec<&str> = rest.split_whitespace().take_while(|w| *w != "--").collect();
                let out = Command::new(env!("CARGO_BIN_EXE_credproxy"))
                    .args(&words)
                    .arg("--help")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "`credproxy {}`: {}",
                    words.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} commands found");
}
