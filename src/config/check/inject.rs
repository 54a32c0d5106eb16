//! A provider's `inject`: where its token goes in each request. `"bearer"` (the default), or
//! `{ header = NAME, format = "... {token} ..." }`, `{ query = NAME }`,
//! `{ basic = { username = U } }`. The header must be one credproxy may set: not hop-by-hop nor
//! framing (RFC 9110 §7.6.1, §8.6, §6.1), nor a field credproxy writes itself (`Host`, `Via`...).

use http::HeaderName;
use toml::Spanned;

use super::Ctx;
use crate::config::SecretHeader;
use crate::config::file::{FileInject, FileInjectTable};
use crate::credential::Inject;
use crate::fields::{Field, classify};

/// What `{token}` stands for in `format`.
const PLACEHOLDER: &str = "{token}";

/// The provider's `inject`, or `default` (the preset's) when it has none.
pub(super) fn inject(
    ctx: &mut Ctx<'_>,
    name: &str,
    given: &Option<Spanned<FileInject>>,
    headers: &[SecretHeader],
    default: Inject,
) -> Option<Inject> {
    let key = format!("providers.{name}.inject");
    let Some(given) = given else {
        return Some(default);
    };
    let span = given.span();
    match given.get_ref() {
        FileInject::Named(n) if n == "bearer" => Some(Inject::Bearer),
        FileInject::Named(n) => {
            ctx.err(
                span,
                &key,
                format!(
                    "unknown inject `{n}`; expected \"bearer\", or a table such as \
                     {{ header = \"x-api-key\" }}, {{ query = \"key\" }} or \
                     {{ basic = {{ username = \"me\" }} }}"
                ),
            );
            None
        }
        FileInject::Table(t) => table(ctx, &key, span, t, headers),
    }
}

fn table(
    ctx: &mut Ctx<'_>,
    key: &str,
    span: std::ops::Range<usize>,
    t: &FileInjectTable,
    headers: &[SecretHeader],
) -> Option<Inject> {
    let forms = [t.header.is_some(), t.query.is_some(), t.basic.is_some()];
    if forms.iter().filter(|f| **f).count() != 1 {
        ctx.err(
            span,
            key,
            "give exactly one of header, query or basic: \
             { header = \"x-api-key\" }, { query = \"key\" } or { basic = { username = \"me\" } }",
        );
        return None;
    }
    if t.format.is_some() && t.header.is_none() {
        ctx.err(
            span,
            &format!("{key}.format"),
            "format goes with header (inject = { header = \"authorization\", format = \"token {token}\" })",
        );
        return None;
    }
    if let Some(h) = &t.header {
        let k = format!("{key}.header");
        let h = ctx.expand(h, span.clone(), &k)?;
        let name = ctx.header_name(&h, span.clone(), &k)?;
        if let Some(why) = refused(&name) {
            ctx.err(
                span,
                &k,
                format!("credproxy can't put the token in `{h}`: {why}"),
            );
            return None;
        }
        if headers.iter().any(|h| h.name == name) {
            ctx.err(
                span,
                &k,
                format!("`{h}` is also in this provider's headers; remove it from one of them"),
            );
            return None;
        }
        let (prefix, suffix) = match &t.format {
            None => (String::new(), String::new()),
            Some(f) => format(ctx, &format!("{key}.format"), span, f)?,
        };
        return Some(Inject::Header {
            name,
            prefix,
            suffix,
        });
    }
    if let Some(q) = &t.query {
        let k = format!("{key}.query");
        let q = ctx.expand(q, span.clone(), &k)?;
        if q.is_empty() {
            ctx.err(
                span,
                &k,
                "is empty: name the query parameter, e.g. query = \"key\"",
            );
            return None;
        }
        return Some(Inject::Query { name: q });
    }
    let basic = t.basic.as_ref()?;
    let k = format!("{key}.basic.username");
    let username = ctx.expand(&basic.username, span.clone(), &k)?;
    // RFC 7617 §2: the user-id can't contain a colon, nor control characters.
    if username.contains(':') || username.chars().any(char::is_control) {
        ctx.err(
            span,
            &k,
            "a Basic username can't contain `:` or control characters (RFC 7617 §2)",
        );
        return None;
    }
    Some(Inject::Basic { username })
}

/// Why the token can't go in header `name`, if it can't.
fn refused(name: &HeaderName) -> Option<&'static str> {
    // Judged as servers that map `-` to `_` (CGI, WSGI, PHP) read it too, as for `headers`.
    let dashed = name.as_str().replace('_', "-");
    let field = classify(&dashed);
    if field.is_hop_by_hop() || matches!(field, Field::ContentLength | Field::Expect) {
        return Some("it frames the message or belongs to one connection (RFC 9110 §7.6.1)");
    }
    if field != Field::Other || dashed == "via" || dashed == "forwarded" {
        return Some("credproxy manages that header itself");
    }
    None
}

/// `format`'s text before and after its one `{token}`.
fn format(
    ctx: &mut Ctx<'_>,
    key: &str,
    span: std::ops::Range<usize>,
    f: &str,
) -> Option<(String, String)> {
    let f = ctx.expand(f, span.clone(), key)?;
    let Some((prefix, suffix)) = f.split_once(PLACEHOLDER) else {
        ctx.err(
            span,
            key,
            format!(
                "`{f}` has no {PLACEHOLDER}: write where the token goes, e.g. \"token {{token}}\""
            ),
        );
        return None;
    };
    if suffix.contains(PLACEHOLDER) {
        ctx.err(
            span,
            key,
            format!("`{f}` has {PLACEHOLDER} more than once; give it once"),
        );
        return None;
    }
    // A header value is visible ASCII, spaces and tabs (RFC 9110 §5.5); no CR/LF can split it.
    let fits = |s: &str| {
        s.bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    };
    if !fits(prefix) || !fits(suffix) {
        ctx.err(
            span,
            key,
            "the format has characters a header can't carry (control characters or non-ASCII)",
        );
        return None;
    }
    Some((prefix.to_owned(), suffix.to_owned()))
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;
    use crate::credential::Inject;

    fn with(inject: &str) -> Result<Inject, String> {
        let text = format!(
            "[providers.p]\npreset = \"static\"\nhosts = [\"api.p.test\"]\ntoken = \"t\"\n\
             headers = {{ \"x-other\" = \"1\" }}\ninject = {inject}\n"
        );
        load_str(&text, "c.toml", &|_| Some("from-env".into()))
            .map(|c| c.providers[0].inject.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_form_is_read() {
        assert_eq!(with("\"bearer\""), Ok(Inject::Bearer));
        assert_eq!(
            with("{ header = \"X-Api-Key\" }"),
            Ok(Inject::Header {
                name: http::HeaderName::from_static("x-api-key"),
                prefix: String::new(),
                suffix: String::new(),
            })
        );
        assert_eq!(
            with("{ header = \"authorization\", format = \"token {token};v=${V}\" }"),
            Ok(Inject::Header {
                name: http::header::AUTHORIZATION,
                prefix: "token ".into(),
                suffix: ";v=from-env".into(),
            })
        );
        assert_eq!(
            with("{ query = \"key\" }"),
            Ok(Inject::Query { name: "key".into() })
        );
        assert_eq!(
            with("{ basic = { username = \"${U}\" } }"),
            Ok(Inject::Basic {
                username: "from-env".into()
            })
        );
    }

    #[test]
    fn mistakes_say_what_to_write() {
        for (inject, says) in [
            ("\"Bearer\"", "unknown inject `Bearer`"),
            (
                "{ header = \"x-a\", query = \"k\" }",
                "exactly one of header, query or basic",
            ),
            ("{ format = \"token {token}\" }", "exactly one of header"),
            (
                "{ query = \"k\", format = \"{token}\" }",
                "format goes with header",
            ),
            ("{ header = \"x-a\", format = \"token\" }", "has no {token}"),
            (
                "{ header = \"x-a\", format = \"{token}{token}\" }",
                "more than once",
            ),
            (
                "{ header = \"x-a\", format = \"a\\r\\nb: {token}\" }",
                "characters a header can't carry",
            ),
            ("{ header = \"bad name\" }", "is not a header name"),
            (
                "{ header = \"x-other\" }",
                "also in this provider's headers",
            ),
            ("{ query = \"\" }", "is empty"),
            ("{ basic = { username = \"a:b\" } }", "can't contain `:`"),
            ("{ heder = \"x\" }", "or { basic = { username"),
        ] {
            let err = with(inject).unwrap_err();
            assert!(err.contains(says), "{inject}: {err}");
        }
    }

    /// Hop-by-hop and framing fields, and the ones credproxy writes itself, can't carry it.
    #[test]
    fn the_header_must_be_one_credproxy_may_set() {
        for name in [
            "connection",
            "Transfer-Encoding",
            "content-length",
            "te",
            "trailer",
            "upgrade",
            "keep-alive",
            "proxy-authorization",
            "expect",
            "Transfer_Encoding",
            "content_length",
        ] {
            let err = with(&format!("{{ header = \"{name}\" }}")).unwrap_err();
            assert!(err.contains("frames the message"), "{name}: {err}");
        }
        for name in [
            "host",
            "HOST",
            "via",
            "forwarded",
            "x_forwarded_proto",
            "origin",
        ] {
            let err = with(&format!("{{ header = \"{name}\" }}")).unwrap_err();
            assert!(err.contains("manages that header itself"), "{name}: {err}");
        }
    }
}
