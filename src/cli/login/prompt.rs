//! What `login` asks of the person at the terminal: a password (without echo) when the config
//! has none, or the URL the browser landed on (`--paste`).

use std::io::BufRead as _;
use std::time::Duration;

use crate::config::{Grant, OAuth2Config};
use crate::secret::Secret;

/// Where a grant's password comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// Not a password grant.
    NotNeeded,
    /// The config has it.
    Configured(Secret),
    /// Ask the person, without echo.
    Prompt { username: String },
}

/// Whether `login` must prompt for a password.
pub fn password_source(cfg: &OAuth2Config) -> PasswordSource {
    if cfg.grant != Grant::Password {
        return PasswordSource::NotNeeded;
    }
    match &cfg.password {
        Some(p) => PasswordSource::Configured(p.get()),
        None => PasswordSource::Prompt {
            username: cfg.username.clone().unwrap_or_default(),
        },
    }
}

/// Read a password from the terminal without echo. Fails when there is no terminal.
pub fn read_password(prompt: &str) -> std::io::Result<Secret> {
    // rpassword reads /dev/tty, not stdin: a pipe can't answer it by accident.
    let p = rpassword::prompt_password(prompt)?;
    Ok(Secret::from(p.trim_end_matches(['\r', '\n']).to_owned()))
}

/// One line from stdin, or `None` on end of input; `Err` after `timeout`.
///
/// The read runs on a thread of its own: a read blocked on a terminal can't be cancelled, and a
/// tokio blocking task would keep the runtime from shutting down after a timeout.
pub async fn read_line(timeout: Duration) -> Result<Option<String>, tokio::time::error::Elapsed> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let got = match std::io::stdin().lock().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        };
        let _ = tx.send(got);
    });
    tokio::time::timeout(timeout, async { rx.await.ok().flatten() }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(grant: Grant, password: Option<&str>) -> OAuth2Config {
        OAuth2Config {
            token_url: "https://auth.example/token".parse().unwrap(),
            grant,
            client_secret: None,
            username: Some("me@example.com".into()),
            password: password.map(crate::secret::Live::from),
            ..OAuth2Config::example()
        }
    }

    #[test]
    fn prompts_only_for_a_password_grant_without_a_password() {
        assert_eq!(
            password_source(&cfg(Grant::Password, None)),
            PasswordSource::Prompt {
                username: "me@example.com".into()
            }
        );
        assert_eq!(
            password_source(&cfg(Grant::Password, Some("pw"))),
            PasswordSource::Configured(Secret::from("pw"))
        );
        assert_eq!(
            password_source(&cfg(Grant::ClientCredentials, None)),
            PasswordSource::NotNeeded
        );
        assert_eq!(
            password_source(&cfg(Grant::AuthorizationCode, None)),
            PasswordSource::NotNeeded
        );
    }
}
