//! A test that needs the process to itself, in a binary whose tests share one.

/// Set in the child process [`own_process`] starts: the full name of the test it runs.
const ALONE: &str = "CREDPROXY_IT_ALONE";

/// Whether this is the process where the test `test` (its function name) of `module` (its
/// `module_path!()`) may run: the tests of this binary share one process, so a test that installs
/// the global subscriber ([`super::logs::capture_trace`]) runs alone in a child process of this binary.
///
/// In that child: true. Otherwise this runs the child (the test alone, by its exact name),
/// panics with the child's output if it failed, and answers false: the caller returns.
pub fn own_process(module: &str, test: &str) -> bool {
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    let name = format!("{module}::{test}");
    if std::env::var_os(ALONE).is_some_and(|v| v == name.as_str()) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--test-threads=1"])
        .env(ALONE, &name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} alone: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
