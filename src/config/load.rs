//! Loading: find the config file, read it, parse the TOML (`parse.rs`: a syntax error is one
//! error; every wrong-typed or unknown key is reported with its file:line:column) and hand the
//! serde picture to the checker (`check.rs`), which expands `${VAR}` and collects every error,
//! then looks across sections (`check/clash.rs`). All errors come back sorted by line; the
//! warnings (`warnings.rs`) and notes come last, for a clean config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::check::{ConfigError, ConfigErrors, Ctx};
use super::{Config, check, env, parse, warnings};

/// The config file to use: `--config`, else `$CREDPROXY_CONFIG`, else `./credproxy.toml`, else
/// `$XDG_CONFIG_HOME/credproxy/config.toml`, else `/etc/credproxy/config.toml`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigErrors> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("CREDPROXY_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut tried = vec![PathBuf::from("credproxy.toml")];
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(x) = xdg {
        tried.push(x.join("credproxy/config.toml"));
    }
    tried.push(PathBuf::from("/etc/credproxy/config.toml"));
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(ConfigErrors::single(
        "credproxy",
        format!(
            "no config file found (looked for --config, $CREDPROXY_CONFIG, {}); \
             pass --config PATH, or try `credproxy demo` to see credproxy work without one",
            list.join(", ")
        ),
    ))
}

/// Read and check the file at `path`, expanding `${VAR}` from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(&name, format!("can't read the config file: {e}")))?;
    load_str(&text, &name, &env::process_env)
}

/// [`load`] for the commands that only need to know where things are (`status`,
/// `healthcheck`): `{ command }` secrets are not run (a Docker `HEALTHCHECK` must not run
/// `op read` every 30 s), so the config's secrets are not fit to serve with.
pub fn load_settings(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(&name, format!("can't read the config file: {e}")))?;
    check_str(&text, &name, &env::process_env, false)
}

/// Check config `text` (named `file` in messages), with variables from `lookup`.
pub fn load_str(
    text: &str,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    check_str(text, file, lookup, true)
}

fn check_str(
    text: &str,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    run_commands: bool,
) -> Result<Config, ConfigErrors> {
    let parse::Parsed {
        file: parsed,
        errors: type_errors,
        dropped,
    } = parse::parse(text, file).map_err(|e| ConfigErrors(vec![e]))?;
    let mut ctx = Ctx::new(text, file, lookup);
    ctx.run_commands = run_commands;
    let proxy = ctx.proxy(&parsed.proxy);
    let mut providers = Vec::new();
    for (name, fp) in &parsed.providers {
        if !valid_name(name) {
            ctx.err(
                fp.span(),
                &format!("providers.{name}"),
                "a provider name may use letters, digits, '-' and '_' only",
            );
            continue;
        }
        if let Some(p) = check::provider(&mut ctx, name, fp) {
            providers.push(Arc::new(p));
        }
    }
    let routes = ctx.routes(&parsed, &proxy);
    let declared: Vec<&str> = parsed.providers.keys().map(String::as_str).collect();
    let callers = ctx.callers(
        &parsed.callers,
        &providers,
        &declared,
        proxy.as_ref().and_then(|p| p.proxy_auth.as_ref()),
    );
    let notes = match &proxy {
        Some(proxy) => ctx.clashes(&parsed, proxy, &providers),
        None => Vec::new(),
    };
    // A key taken out for its type error would only be reported again, as "missing".
    let repeats = |e: &ConfigError| {
        dropped.iter().any(|d| {
            e.key == *d
                || e.key
                    .strip_prefix(d.as_str())
                    .is_some_and(|r| r.starts_with(['.', '[']))
        })
    };
    let store = ctx.store(parsed.store.as_ref());
    let secret_vars = std::mem::take(&mut ctx.secret_vars);
    let mut errors = type_errors;
    errors.extend(ctx.errors.into_iter().filter(|e| !repeats(e)));
    if !errors.is_empty() {
        return Err(ConfigErrors::sorted(errors));
    }
    let proxy = proxy.expect("no errors means the proxy section was built");
    let warnings = warnings::warnings(
        parsed.providers.is_empty(),
        &proxy,
        &providers,
        &routes,
        &callers,
    );
    Ok(Config {
        proxy,
        providers,
        routes,
        store,
        callers,
        warnings,
        notes,
        secret_vars,
    })
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = load_str(
            "[proxy]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
            "c.toml",
            &no_env,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.toml:3:1"), "{msg}");
        assert!(msg.contains("lisen"), "{msg}");
    }

    #[test]
    fn unset_variable_names_key_and_line() {
        let text = "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"${GH_TOKEN}\"\n";
        let err = load_str(text, "c.toml", &no_env).unwrap_err();
        let e = &err.0[0];
        assert_eq!((e.line, e.key.as_str()), (4, "providers.gh.token"));
        assert!(e.message.contains("GH_TOKEN is not set"), "{}", e.message);
    }

    #[test]
    fn collects_every_error() {
        let text = "[proxy]\nconnect_timeout = \"soon\"\nunknown_hosts = \"maybe\"\n";
        let err = load_str(text, "c.toml", &no_env).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
    }

    #[test]
    fn issuer_is_an_https_url_without_query_or_fragment() {
        let provider = |issuer: &str| {
            format!(
                "[providers.a]\npreset = \"oauth2\"\nhosts = [\"api.a.test\"]\n\
                 token_url = \"https://auth.a.test/token\"\ngrant = \"client_credentials\"\n\
                 client_id = \"c\"\nclient_secret = \"s\"\nissuer = \"{issuer}\"\n"
            )
        };
        let ok = load_str(&provider("https://auth.a.test/tenant"), "c.toml", &no_env).unwrap();
        match &ok.providers[0].auth {
            crate::config::AuthConfig::OAuth2(c) => {
                assert_eq!(c.issuer.as_deref(), Some("https://auth.a.test/tenant"))
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "http://auth.a.test",
            "https://auth.a.test/?x=1",
            "https://auth.a.test/#f",
            "auth.a.test",
        ] {
            let err = load_str(&provider(bad), "c.toml", &no_env).unwrap_err();
            let e = &err.0[0];
            assert_eq!((e.line, e.key.as_str()), (8, "providers.a.issuer"), "{bad}");
            assert!(e.message.contains("must be an https URL"), "{}", e.message);
        }
        let static_with_issuer = "[providers.s]\npreset = \"static\"\nhosts = [\"s.test\"]\n\
                                  token = \"t\"\nissuer = \"https://auth.s.test\"\n";
        let err = load_str(static_with_issuer, "c.toml", &no_env).unwrap_err();
        assert_eq!(err.0[0].key, "providers.s.issuer");
        assert!(err.0[0].message.contains("only used by preset"), "{err}");
    }
}
