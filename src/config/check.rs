//! The checker's context and primitives: [`Ctx`] (the text for positions, the `${VAR}` lookup,
//! the errors so far), [`ConfigError`] with its file:line:column and key path, and the small
//! checkers every section uses (strings, secrets, URLs, durations, header names and values).
//!
//! Checking does not stop at the first problem: `credproxy check` reports all of them, each
//! with the file, line, column and key path, the value's problem and what was expected.
//! The sections' checks live beside it: `proxy.rs` for `[proxy]` and `[[routes]]`; `provider.rs`
//! for a `[providers.NAME]` table, cut by concern into `endpoints.rs`, `grant.rs`, `wire.rs`,
//! `rules.rs` (`allow` / `deny`), `timing.rs` (the oauth2 family, put together in `oauth2.rs`)
//! and `blendvision.rs`; `store.rs` for `[store]`; `clash.rs` looks across sections (listeners,
//! hosts, upstream loops) once they are checked.

mod blendvision;
mod callers;
mod clash;
mod endpoints;
mod grant;
mod inject;
mod oauth2;
mod provider;
mod proxy;
mod rules;
mod store;
mod timing;
mod wire;

pub(super) use provider::build as provider;

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use super::env;
use super::file::{FileSecret, SecretSource, Str};
use crate::secret::{Live, Origin, Secret};

/// One thing wrong with the config, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no single place (a missing file).
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `providers.bace.token_url`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// The errors in the order of the file (line, then column); placeless ones first.
    pub(super) fn sorted(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.line, e.column));
        ConfigErrors(errors)
    }

    /// Every error on its own line, then the count ("3 errors"): what `check`, `run` and a
    /// reload print.
    pub fn report(&self) -> String {
        let n = self.0.len();
        format!("{self}\n{n} error{}", if n == 1 { "" } else { "s" })
    }

    pub(super) fn single(file: &str, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: message.into(),
        }])
    }
}

/// 1-based line and column of byte `offset`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

/// Validation state: the text (for positions), the env lookup, what went wrong so far.
pub struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    pub errors: Vec<ConfigError>,
    /// Whether `{ command }` secrets are run (not for the commands that only need to know
    /// where things are: `status`, `healthcheck`).
    pub(super) run_commands: bool,
    /// The environment variables an inline secret was read from (`token = "${GITHUB_TOKEN}"`):
    /// `credproxy exec` keeps them out of the command's environment.
    pub(super) secret_vars: std::collections::BTreeSet<String>,
}

impl<'a> Ctx<'a> {
    /// A fresh context for checking `text` (named `file` in messages), variables from `lookup`.
    pub(super) fn new(
        text: &'a str,
        file: &'a str,
        lookup: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Ctx {
            text,
            file,
            lookup,
            errors: Vec::new(),
            run_commands: true,
            secret_vars: Default::default(),
        }
    }
}

impl Ctx<'_> {
    pub fn err(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// A string with `${VAR}` expanded.
    pub fn string(&mut self, s: &Str, key: &str) -> Option<String> {
        self.expand(s.get_ref(), s.span(), key)
    }

    pub fn opt_string(&mut self, s: &Option<Str>, key: &str) -> Option<String> {
        s.as_ref().and_then(|s| self.string(s, key))
    }

    /// `${VAR}` expansion of a value found at `span`.
    pub fn expand(&mut self, value: &str, span: Range<usize>, key: &str) -> Option<String> {
        match env::expand(value, self.lookup) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(span, key, e.to_string());
                None
            }
        }
    }

    /// A secret: inline (with `${VAR}`), `{ file = ... }` with the trailing newline trimmed, or
    /// `{ command = [...] }` run once now (its trimmed output).
    pub fn secret(&mut self, s: &FileSecret, key: &str) -> Option<Secret> {
        self.resolve(s, key).map(|(value, _)| value)
    }

    /// A secret that may change while credproxy runs (a file it follows, a command it re-runs),
    /// for the places that read it at each use.
    pub fn live(&mut self, s: &FileSecret, key: &str) -> Option<Live> {
        self.resolve(s, key)
            .map(|(value, origin)| Live::new(key, origin, value))
    }

    pub fn opt_live(&mut self, s: &Option<FileSecret>, key: &str) -> Option<Live> {
        s.as_ref().and_then(|s| self.live(s, key))
    }

    /// A secret that goes in a header as it is (`headers`, `token_headers`, `org_id`): checked
    /// now, and each new value checked the same way before it is used.
    pub fn header_secret(&mut self, s: &FileSecret, span: Range<usize>, key: &str) -> Option<Live> {
        let (value, origin) = self.resolve(s, key)?;
        self.header_value(&value, span, key)?;
        Some(Live::checked(key, origin, value, header_value_problem))
    }

    /// A token that goes in `Authorization: Bearer` (a static `token`, BlendVision's
    /// `api_token`): checked now, and each new value checked the same way.
    pub fn token_secret(&mut self, s: &FileSecret, key: &str) -> Option<Live> {
        let (value, origin) = self.resolve(s, key)?;
        self.bearer_token(&value, s.span.clone(), key)
            .then(|| Live::checked(key, origin, value, token_value_problem))
    }

    fn resolve(&mut self, s: &FileSecret, key: &str) -> Option<(Secret, Origin)> {
        let span = s.span.clone();
        match &s.source {
            SecretSource::Value(v) => {
                self.secret_vars
                    .extend(env::names(v).into_iter().map(str::to_owned));
                let value = self.expand(v, span.clone(), key)?;
                if value.is_empty() {
                    self.err(span, key, "is empty: give the secret, or remove the key");
                    return None;
                }
                Some((Secret::from(value), Origin::Inline))
            }
            SecretSource::File(f) => {
                let path = self.expand(f, span.clone(), key)?;
                crate::secret::read_file(&path)
                    .map_err(|message| self.err(span, key, message))
                    .ok()
                    .map(|value| (value, Origin::File(path)))
            }
            SecretSource::Command { argv, ttl } => {
                let before = self.errors.len();
                let argv: Vec<String> = argv
                    .iter()
                    .filter_map(|a| self.expand(a, span.clone(), key))
                    .collect();
                let ttl = match ttl {
                    None => None,
                    Some(t) => match parse_duration(t) {
                        Ok(d) if d >= Duration::from_secs(1) => Some(d),
                        Ok(_) => {
                            self.err(span.clone(), &format!("{key}.ttl"), "is shorter than 1s: a secret command is re-run at most once a second");
                            None
                        }
                        Err(e) => {
                            self.err(span.clone(), &format!("{key}.ttl"), e);
                            None
                        }
                    },
                };
                if argv.first().is_none_or(|p| p.is_empty()) {
                    self.err(span.clone(), &format!("{key}.command"), "is empty: give the program and its arguments, e.g. command = [\"op\", \"read\", \"op://vault/item/field\"]");
                }
                if self.errors.len() > before {
                    return None;
                }
                if !self.run_commands {
                    // Never served: this config only says where things are.
                    return Some((Secret::from("not-run"), Origin::Command { argv, ttl }));
                }
                crate::secret::run_command(&argv, crate::secret::COMMAND_TIMEOUT)
                    .map_err(|message| self.err(span, key, message))
                    .ok()
                    .map(|value| (value, Origin::Command { argv, ttl }))
            }
        }
    }

    /// A [`Ctx::header_secret`], but an empty value (`"${BV_ORG_ID:-}"`) means "not given".
    pub fn header_secret_or_unset(&mut self, s: &Option<FileSecret>, key: &str) -> Option<Live> {
        let s = s.as_ref()?;
        if let SecretSource::Value(v) = &s.source {
            let value = self.expand(v, s.span.clone(), key)?;
            if value.is_empty() {
                return None;
            }
        }
        self.header_secret(s, s.span.clone(), key)
    }

    pub fn duration(&mut self, s: &Option<Str>, key: &str, default: Duration) -> Duration {
        self.opt_duration(s, key).unwrap_or(default)
    }

    pub fn opt_duration(&mut self, s: &Option<Str>, key: &str) -> Option<Duration> {
        let s = s.as_ref()?;
        let v = self.string(s, key)?;
        match parse_duration(&v) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(s.span(), key, e);
                None
            }
        }
    }

    /// An absolute http(s) URL.
    pub fn url(&mut self, s: &Str, key: &str) -> Option<Uri> {
        let v = self.string(s, key)?;
        match v.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() =>
            {
                Some(u)
            }
            _ => {
                self.err(
                    s.span(),
                    key,
                    format!("must be an absolute http(s) URL such as \"https://api.example.com/oauth/token\", not `{v}`"),
                );
                None
            }
        }
    }

    pub fn header_name(&mut self, name: &str, span: Range<usize>, key: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => Some(n),
            Err(_) if name.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                self.err(
                    span,
                    key,
                    format!(
                        "{name:?} is not a header name: it can't contain a space, newline or control \
                         character; use letters, digits and '-', such as \"X-Api-Key\""
                    ),
                );
                None
            }
            Err(_) => {
                self.err(span, key, format!("`{name}` is not a valid header name"));
                None
            }
        }
    }

    /// A header value built from a secret, marked sensitive (hpack never indexes it, Debug hides it).
    pub fn header_value(
        &mut self,
        v: &Secret,
        span: Range<usize>,
        key: &str,
    ) -> Option<HeaderValue> {
        if let Some(problem) = value_problem(v.expose(), false) {
            self.err(span, key, problem);
            return None;
        }
        match HeaderValue::from_str(v.expose()) {
            Ok(mut h) => {
                h.set_sensitive(true);
                Some(h)
            }
            Err(_) => {
                self.err(span, key, "the value has characters a header can't carry (control characters or non-ASCII)");
                None
            }
        }
    }

    /// A token sent as `Authorization: Bearer <token>`: no space, no control character. Says
    /// what is wrong, never the value.
    pub fn bearer_token(&mut self, v: &Secret, span: Range<usize>, key: &str) -> bool {
        match value_problem(v.expose(), true) {
            Some(problem) => {
                self.err(span, key, problem);
                false
            }
            None => true,
        }
    }
}

/// What makes `v` unfit for a header value, in words that never repeat it: a [`Live::checked`]
/// secret's check.
fn header_value_problem(v: &str) -> Option<&'static str> {
    value_problem(v, false).or_else(|| {
        HeaderValue::from_str(v)
            .is_err()
            .then_some("has characters a header can't carry (control characters or non-ASCII)")
    })
}

/// What makes `v` unfit for `Authorization: Bearer`: a [`Live::checked`] token's check.
fn token_value_problem(v: &str) -> Option<&'static str> {
    value_problem(v, true).or_else(|| {
        (v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()))
            .then_some("is empty or has characters other than visible ASCII, which a token can't")
    })
}

/// What makes `v` unfit for a header (for a bearer `token`, a space too), in words that never
/// repeat the value.
fn value_problem(v: &str, token: bool) -> Option<&'static str> {
    if v.contains(['\r', '\n']) {
        return Some(
            "contains a newline: a header can't carry it (it would end the header and start \
             another); check the value or the secret file",
        );
    }
    if v.chars().any(char::is_control) {
        return Some(
            "contains a control character (a tab, or an invisible character from a paste): a \
             header can't carry it",
        );
    }
    // Compared as bytes: slicing the `str` could cut a multi-byte character.
    if token
        && v.as_bytes()
            .get(..7)
            .is_some_and(|b| b.eq_ignore_ascii_case(b"bearer "))
    {
        return Some(
            "starts with \"Bearer \": give the token alone, credproxy sends \"Bearer\" itself",
        );
    }
    if token && v.contains(' ') {
        return Some("contains a space, which a bearer token can't: check for a stray space");
    }
    if v.starts_with(' ') || v.ends_with(' ') {
        return Some("starts or ends with a space, which HTTP drops from a header value");
    }
    None
}

/// `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"30d"`, or several (`"1h30m"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = || {
        format!(
            "must be a duration such as \"90s\": a number and a unit (ms, s, m, h, d), as in \"500ms\", \
             \"5m\", \"1h30m\"; not `{s}`"
        )
    };
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(expected());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(expected)?;
        if digits == 0 {
            return Err(expected());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        let one = match unit {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(expected()),
        };
        // Checked: `+=` panics once the terms ("4294967295d4294967295d…") pass u64::MAX seconds.
        let term = one
            .checked_mul(u32::try_from(n).map_err(|_| expected())?)
            .ok_or_else(expected)?;
        total = total.checked_add(term).ok_or_else(expected)?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("five minutes").is_err());
    }

    #[test]
    fn a_token_with_multi_byte_characters_is_judged_not_sliced() {
        assert_eq!(value_problem("ééééé", true), None);
        assert!(value_problem("BEARER abc", true).is_some_and(|m| m.contains("Bearer")));
        assert!(value_problem("a\u{7f}b", false).is_some());
        assert_eq!(value_problem("Basic abc", false), None);
    }

    #[test]
    fn a_duration_too_long_for_duration_is_an_error_not_a_panic() {
        // Each term fits (u32::MAX days); 50,000 of them pass u64::MAX seconds.
        let long = "4294967295d".repeat(50_000);
        assert!(parse_duration(&long).is_err());
        assert!(parse_duration(&"4294967295d".repeat(2)).is_ok());
    }
}
