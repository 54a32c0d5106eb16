//! `${VAR}` and `${VAR:-default}` in config strings.
//!
//! Any string in the file may name environment variables. An unset variable is an error (a
//! missing secret must not become an empty header); `${VAR:-default}` supplies a default, and
//! `$${` writes a literal `${`. The lookup is passed in so tests don't touch the process env.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("environment variable {0} is not set (set it, or write ${{{0}:-default}})")]
    Unset(String),
    #[error("unterminated ${{...}}: a variable reference needs a closing brace")]
    Unterminated,
    #[error("`{0}` is not a valid variable name (letters, digits and _ only)")]
    BadName(String),
}

/// Expand `${...}` references in `input` using `lookup`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(EnvError::Unterminated)?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(EnvError::BadName(name.to_owned()));
            }
            match (lookup(name), default) {
                (Some(v), _) if !(v.is_empty() && default.is_some()) => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (Some(v), None) => out.push_str(&v),
                (None, None) => return Err(EnvError::Unset(name.to_owned())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The names `input` refers to with `${NAME}` or `${NAME:-default}` (not `$${`), in order.
pub fn names(input: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else { break };
            let inner = &body[..end];
            out.push(inner.split_once(":-").map_or(inner, |(n, _)| n));
            rest = &body[end + 1..];
        } else {
            rest = after;
        }
    }
    out
}

/// The process environment, as a lookup for [`expand`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn names_are_the_variables_referred_to() {
        assert_eq!(names("a ${A} $${B} ${C:-x}${D}"), ["A", "C", "D"]);
        assert!(names("plain $HOME").is_empty());
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(expand("x-${A}-y", &env).unwrap(), "x-alpha-y");
        assert_eq!(expand("${B:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("cost $5 $${A}", &env).unwrap(), "cost $5 ${A}");
        assert_eq!(expand("plain", &env).unwrap(), "plain");
    }

    #[test]
    fn reports_what_is_wrong() {
        assert_eq!(expand("${B}", &env), Err(EnvError::Unset("B".into())));
        assert_eq!(expand("${A", &env), Err(EnvError::Unterminated));
        assert_eq!(expand("${A B}", &env), Err(EnvError::BadName("A B".into())));
    }
}
