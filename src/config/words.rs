//! serde's and toml's messages ("invalid type: boolean `true`, expected a string", "expected
//! i64") said in the user's words: what the key must be, with an example, and what was written
//! instead. The kind of value a key wants comes from its name (durations, URLs, addresses,
//! secrets); a secret's value is never repeated, only its type.

/// A serde message about `key` (a dotted path, empty when unknown) in the user's words.
pub(super) fn serde(raw: &str, key: &str) -> String {
    let field = key
        .rsplit('.')
        .next()
        .unwrap_or(key)
        .split('[')
        .next()
        .unwrap_or("");
    let element = key.ends_with(']');
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let want = wanted(expected, field, key, element);
        return format!("{want}, not {}", written(got, is_secret(key)));
    }
    if let Some(rest) = raw.strip_prefix("unknown field ") {
        return unknown(rest);
    }
    if let Some(rest) = raw.strip_prefix("missing field ") {
        return format!("missing: {} is required here", rest.trim_matches('`'));
    }
    if raw.starts_with("data did not match any variant of untagged enum FileMode") {
        return "must be an octal file mode such as \"0660\" or 0o660".to_owned();
    }
    if raw.starts_with("a string, or a table")
        || raw.starts_with("a string such as")
        || raw.contains("untagged enum Raw")
    {
        return secret_shape().to_owned();
    }
    if let Some(rest) = raw.strip_prefix("invalid value: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let want = wanted(expected, field, key, element);
        return format!("{want}, not {}", written(got, is_secret(key)));
    }
    raw.trim().to_owned()
}

/// A TOML syntax error, which toml already says well; only trimmed.
pub(super) fn syntax(raw: &str) -> String {
    let m = raw.trim();
    if m.starts_with("duplicate key") {
        return format!("{m}: each key may be set once per table");
    }
    m.to_owned()
}

/// "must be ..." for what serde expected, sharpened by the key's name.
fn wanted(expected: &str, field: &str, key: &str, element: bool) -> String {
    let each = if element { "each entry " } else { "" };
    let e = expected.trim();
    if e == "a string" || e == "string" {
        if element {
            return "each entry must be a string in quotes".to_owned();
        }
        if is_secret(key) {
            return secret_shape().to_owned();
        }
        return match kind(field) {
            Kind::Duration => "must be a duration such as \"90s\" (a number and a unit, in quotes)",
            Kind::Url => "must be a URL in quotes such as \"https://api.example.com\"",
            Kind::Listen => {
                "must be an address in quotes such as \"127.0.0.1:8080\" or \"unix:/path\""
            }
            Kind::Other => "must be a string (in quotes)",
        }
        .to_owned();
    }
    if e.starts_with('i') || e.starts_with('u') || e.contains("integer") {
        return format!("{each}must be a whole number such as 100");
    }
    if e == "a boolean" || e == "bool" {
        return format!("{each}must be true or false (without quotes)");
    }
    if field == "routes" {
        return "must be a list of tables: write each route as a [[routes]] section".to_owned();
    }
    if e == "a sequence" {
        return "must be a list such as [\"a\", \"b\"]".to_owned();
    }
    if e.starts_with("a string, or a table") {
        return secret_shape().to_owned();
    }
    if e == "a map" || e.starts_with("struct ") {
        return match field {
            "proxy" => "must be a table: write it as a [proxy] section".to_owned(),
            "providers" => {
                "must be a table: write each provider as a [providers.NAME] section".to_owned()
            }
            "headers" | "token_headers" => {
                "must be a table such as { \"X-Api-Key\" = \"${API_KEY}\" }".to_owned()
            }
            _ => "must be a table such as { name = \"value\" } or a [section]".to_owned(),
        };
    }
    format!("{each}must be {e}")
}

/// "the number 30", "true", "a string": what the user wrote, by type (with the value only where
/// it can't be a secret).
fn written(got: &str, secret: bool) -> String {
    let (ty, value) = match got.split_once(' ') {
        Some((t, v)) => (t, v.trim_matches('`').trim_matches('"')),
        None => (got, ""),
    };
    match ty {
        "integer" | "float" | "floating" if secret => "a number".to_owned(),
        "integer" | "float" => format!("the bare number {value}"),
        "floating" => format!(
            "the bare number {}",
            value.trim_start_matches("point ").trim_matches('`')
        ),
        "boolean" if secret => "true/false".to_owned(),
        "boolean" => value.to_owned(),
        "string" if secret => "a string".to_owned(),
        "string" => format!("the string \"{value}\""),
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        "datetime" => "a date".to_owned(),
        other => other.to_owned(),
    }
}

/// "unknown field `lisen`, expected one of `listen`, `admin_listen`" → with the nearest key.
fn unknown(rest: &str) -> String {
    let (name, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
    let name = name.trim_matches('`');
    let allowed: Vec<&str> = expected
        .trim_start_matches("one of ")
        .split(", ")
        .map(|s| s.trim_matches('`'))
        .filter(|s| !s.is_empty() && !s.contains(' '))
        .collect();
    let near = allowed
        .iter()
        .map(|a| (distance(name, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min();
    let mut out = format!("unknown key `{name}`");
    if let Some((_, a)) = near {
        out.push_str(&format!(": did you mean `{a}`?"));
    }
    if !allowed.is_empty() {
        out.push_str(&format!(" (keys allowed here: {})", allowed.join(", ")));
    }
    out
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn secret_shape() -> &'static str {
    "must be a string such as \"${MY_SECRET}\", a table { file = \"/run/secrets/name\" }, or a table \
     { command = [\"op\", \"read\", \"op://vault/item/field\"], ttl = \"10m\" }"
}

enum Kind {
    Duration,
    Url,
    Listen,
    Other,
}

fn kind(field: &str) -> Kind {
    if field.ends_with("_timeout")
        || field.ends_with("_grace")
        || field.ends_with("_lifetime")
        || matches!(field, "refresh_before" | "wait_for_token")
    {
        Kind::Duration
    } else if field.ends_with("_url") || matches!(field, "upstream" | "redirect_uri") {
        Kind::Url
    } else if field == "listen" || field == "admin_listen" {
        Kind::Listen
    } else {
        Kind::Other
    }
}

/// Keys whose values are credentials: their values are never repeated in a message.
fn is_secret(key: &str) -> bool {
    let field = key.rsplit('.').next().unwrap_or(key);
    matches!(
        field,
        "token" | "api_token" | "org_id" | "client_secret" | "password" | "proxy_auth" | "secret"
    ) || key.contains(".headers.")
        || key.contains(".token_headers.")
        // Extra form fields: they can carry a client_assertion or an api_key.
        || key.contains(".token_params.")
        || key.contains(".authorize_params.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_say_what_the_key_must_be() {
        let m = serde(
            "invalid type: integer `30`, expected a string",
            "proxy.connect_timeout",
        );
        assert!(m.contains("must be a duration such as \"90s\""), "{m}");
        assert!(m.contains("not the bare number 30"), "{m}");
        let m = serde(
            "invalid type: boolean `true`, expected a string",
            "providers.a.client_id",
        );
        assert_eq!(m, "must be a string (in quotes), not true");
        let m = serde(
            "invalid type: string \"many\", expected i64",
            "proxy.max_connections",
        );
        assert!(m.contains("must be a whole number"), "{m}");
        assert!(!m.contains("i64"), "{m}");
        let m = serde(
            "invalid type: string \"yes\", expected a boolean",
            "proxy.allow_remote",
        );
        assert!(m.starts_with("must be true or false"), "{m}");
        let m = serde(
            "invalid type: integer `12345`, expected a string, or a table { file = \"/path\" }",
            "providers.gh.token",
        );
        assert!(m.contains("${MY_SECRET}") && !m.contains("12345"), "{m}");
    }

    /// Review finding: `token_params` and `authorize_params` values can be credentials
    /// (`client_assertion`, `api_key`): never repeated in a message.
    #[test]
    fn extra_form_fields_are_never_repeated() {
        for key in [
            "providers.a.token_params.client_assertion",
            "providers.a.authorize_params.api_key",
        ] {
            for raw in [
                "invalid type: integer `12345`, expected a string",
                "invalid value: integer `12345`, expected a string",
            ] {
                let m = serde(raw, key);
                assert!(!m.contains("12345"), "{key}: {m}");
            }
        }
    }

    #[test]
    fn an_unknown_key_names_the_nearest_one() {
        let m = serde(
            "unknown field `lisen`, expected one of `listen`, `admin_listen`",
            "proxy.lisen",
        );
        assert!(
            m.starts_with("unknown key `lisen`: did you mean `listen`?"),
            "{m}"
        );
    }
}
