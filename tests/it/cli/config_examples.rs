//! Every example config in `config/` passes `credproxy check` with its variables set, and names
//! what is missing without them.

use std::path::Path;
use std::process::Command;

fn examples() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 6,
        "one example per seed provider and a reference: {v:?}"
    );
    v
}

/// Every `${VAR}` an example names.
fn variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let body = &rest[i + 2..];
        let end = body.find('}').unwrap();
        let name = body[..end].split(":-").next().unwrap();
        out.push(name.to_owned());
        rest = &body[end..];
    }
    out
}

#[test]
fn examples_pass_check_with_their_variables_set() {
    let bin = env!("CARGO_BIN_EXE_credproxy");
    for path in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("check").arg("--config").arg(&path);
        for var in variables(&text) {
            cmd.env(&var, format!("value-of-{var}"));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn examples_name_each_missing_variable() {
    let bin = env!("CARGO_BIN_EXE_credproxy");
    for path in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        // Only variables without a default are required.
        let required: Vec<String> = {
            let mut v = Vec::new();
            let mut rest = text.as_str();
            while let Some(i) = rest.find("${") {
                let body = &rest[i + 2..];
                let end = body.find('}').unwrap();
                let inner = &body[..end];
                let line_start = text.len() - rest.len() + i;
                let line = text[..line_start].rsplit('\n').next().unwrap_or("");
                if !inner.contains(":-") && !line.trim_start().starts_with('#') {
                    v.push(inner.to_owned());
                }
                rest = &body[end..];
            }
            v
        };
        if required.is_empty() {
            continue;
        }
        let mut cmd = Command::new(bin);
        cmd.arg("check").arg("--config").arg(&path);
        for var in &required {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", path.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        for var in &required {
            assert!(
                stderr.contains(&format!("environment variable {var} is not set")),
                "{}: {var} not named in:\n{stderr}",
                path.display()
            );
        }
    }
}

/// One unset variable is one error, on its key, naming it: not also a key the preset would have
/// built from it (Baselime's authorize URL from its client_id once asked for `authorize_url`).
#[test]
fn each_examples_variable_unset_alone_is_the_only_error() {
    let bin = env!("CARGO_BIN_EXE_credproxy");
    for path in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let all = variables(&text);
        for missing in &all {
            let line = text.lines().find(|l| {
                l.contains(&format!("${{{missing}}}")) && !l.trim_start().starts_with('#')
            });
            let Some(line) = line else {
                continue; // only with a default, or only in comments
            };
            let key = line.split('=').next().unwrap().trim();
            let mut cmd = Command::new(bin);
            cmd.arg("check").arg("--config").arg(&path);
            for var in all.iter().filter(|v| *v != missing) {
                cmd.env(var, format!("value-of-{var}"));
            }
            cmd.env_remove(missing);
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
            let errors: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains(": providers."))
                .collect();
            assert_eq!(
                errors.len(),
                1,
                "{} without {missing}:\n{stderr}",
                path.display()
            );
            assert!(
                errors[0].contains(&format!(
                    ".{key}: environment variable {missing} is not set"
                )),
                "{} without {missing}:\n{stderr}",
                path.display()
            );
            assert!(stderr.trim_end().ends_with("\n1 error"), "{stderr}");
        }
    }
}
