//! A provider's `allow` and `deny`: lists of `{ methods = [...], paths = [...] }`, compiled into
//! [`Rules`] (methods upper-cased, path globs compiled once here, never per request).
//!
//! Errors: an empty list (an empty `allow` would refuse everything: say so by removing the
//! provider instead), a rule with neither `methods` nor `paths`, an empty `methods` or `paths`,
//! a method that is not an HTTP token, a glob that can't be compiled (`**` inside a segment) or
//! that holds what a request path is refused for (a `%`, `//`, a dot-segment, a `;`: such a
//! glob could never match, and a `%` in one would suggest that globs are decoded: `glob.rs`).
//! What is valid but can never match (a relative glob, a method no client sends, an allow rule
//! covered by a deny) is a warning (`warnings.rs`: `rule_warnings`), not an error.

use toml::Spanned;

use super::Ctx;
use crate::config::file::{FileProvider, FileRule, Str};
use crate::proxy::policy::{Glob, Rule, Rules};

/// The provider's rules: `Some(None)` when it has neither key, `None` after an error.
pub(super) fn rules(ctx: &mut Ctx<'_>, name: &str, fp: &FileProvider) -> Option<Option<Rules>> {
    if fp.allow.is_none() && fp.deny.is_none() {
        return Some(None);
    }
    let before = ctx.errors.len();
    let deny = list(ctx, name, "deny", &fp.deny).unwrap_or_default();
    let allow = list(ctx, name, "allow", &fp.allow);
    (ctx.errors.len() == before).then_some(Some(Rules { deny, allow }))
}

fn list(
    ctx: &mut Ctx<'_>,
    name: &str,
    which: &str,
    given: &Option<Spanned<Vec<Spanned<FileRule>>>>,
) -> Option<Vec<Rule>> {
    let given = given.as_ref()?;
    let key = format!("providers.{name}.{which}");
    if given.get_ref().is_empty() {
        ctx.err(
            given.span(),
            &key,
            format!(
                "is empty: give at least one rule, such as {which} = [{{ methods = [\"GET\"], \
                 paths = [\"/repos/acme/**\"] }}], or remove the key"
            ),
        );
        return None;
    }
    let rules: Vec<Option<Rule>> = given
        .get_ref()
        .iter()
        .enumerate()
        .map(|(i, r)| rule(ctx, &format!("{key}[{i}]"), r))
        .collect();
    rules.into_iter().collect()
}

fn rule(ctx: &mut Ctx<'_>, key: &str, r: &Spanned<FileRule>) -> Option<Rule> {
    let fr = r.get_ref();
    if fr.methods.is_none() && fr.paths.is_none() {
        ctx.err(
            r.span(),
            key,
            "has neither methods nor paths, so it would match every request: give \
             methods = [\"DELETE\"], paths = [\"/admin/**\"], or both",
        );
        return None;
    }
    let before = ctx.errors.len();
    let methods = fr.methods.as_ref().map(|ms| {
        let k = format!("{key}.methods");
        if ms.get_ref().is_empty() {
            ctx.err(
                ms.span(),
                &k,
                "is empty: name the methods (methods = [\"GET\", \"HEAD\"]), or remove the key \
                 for any method",
            );
        }
        ms.get_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, m)| method(ctx, &format!("{k}[{i}]"), m))
            .collect::<Vec<_>>()
    });
    let paths = fr.paths.as_ref().map(|ps| {
        let k = format!("{key}.paths");
        if ps.get_ref().is_empty() {
            ctx.err(
                ps.span(),
                &k,
                "is empty: give path globs (paths = [\"/repos/acme/**\"]), or remove the key \
                 for any path",
            );
        }
        ps.get_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let k = format!("{k}[{i}]");
                let text = ctx.string(p, &k)?;
                Glob::compile(&text)
                    .map_err(|e| ctx.err(p.span(), &k, e.to_string()))
                    .ok()
            })
            .collect::<Vec<_>>()
    });
    (ctx.errors.len() == before).then_some(Rule { methods, paths })
}

/// An HTTP method (RFC 9110 §9.1: a token), upper-cased: methods compare without case.
fn method(ctx: &mut Ctx<'_>, key: &str, m: &Str) -> Option<String> {
    let v = ctx.string(m, key)?;
    if v.is_empty() || http::Method::from_bytes(v.as_bytes()).is_err() {
        ctx.err(
            m.span(),
            key,
            format!("`{v}` is not an HTTP method: give a name such as \"GET\" or \"DELETE\""),
        );
        return None;
    }
    Some(v.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const GH: &str =
        "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\n";

    fn error(rules: &str) -> (usize, String, String) {
        let err = load_str(&format!("{GH}{rules}\n"), "c.toml", &no_env).unwrap_err();
        let e = &err.0[0];
        (e.line, e.key.clone(), e.message.clone())
    }

    #[test]
    fn rules_compile_with_methods_upper_cased() {
        let c = load_str(
            &format!(
                "{GH}allow = [{{ methods = [\"get\", \"Head\"], paths = [\"/repos/acme/**\"] }}]\n\
                 deny = [{{ methods = [\"DELETE\"] }}, {{ paths = [\"/admin/**\"] }}]\n"
            ),
            "c.toml",
            &no_env,
        )
        .unwrap();
        let rules = c.providers[0].rules.as_ref().unwrap();
        assert_eq!(rules.deny.len(), 2);
        let allow = rules.allow.as_ref().unwrap();
        assert_eq!(
            allow[0].methods.as_deref(),
            Some(&["GET".to_owned(), "HEAD".to_owned()][..])
        );
        let none = load_str(GH, "c.toml", &no_env).unwrap();
        assert!(none.providers[0].rules.is_none());
    }

    #[test]
    fn a_bad_rule_is_named_by_its_key_and_line() {
        let (line, key, msg) = error("deny = [{ methods = [\"DELETE\"] }, {}]");
        assert_eq!((line, key.as_str()), (5, "providers.gh.deny[1]"));
        assert!(msg.contains("neither methods nor paths"), "{msg}");

        let (line, key, msg) = error("allow = [{ methods = [] }]");
        assert_eq!((line, key.as_str()), (5, "providers.gh.allow[0].methods"));
        assert!(msg.contains("is empty"), "{msg}");

        let (_, key, _) = error("allow = [{ paths = [] }]");
        assert_eq!(key, "providers.gh.allow[0].paths");

        let (_, key, msg) = error("allow = [{ methods = [\"G ET\"] }]");
        assert_eq!(key, "providers.gh.allow[0].methods[0]");
        assert!(msg.contains("not an HTTP method"), "{msg}");

        let (_, key, msg) = error("deny = [{ paths = [\"/ok\", \"/a**\"] }]");
        assert_eq!(key, "providers.gh.deny[0].paths[1]");
        assert!(msg.contains("whole segment"), "{msg}");

        for (glob, what) in [
            ("/admin%2fusers", "has a `%`"),
            ("/repos//acme", "empty segment"),
            ("/repos/acme/../x", "`..` segment"),
            ("/admin;x/**", "has a `;`"),
        ] {
            let (line, key, msg) = error(&format!(
                "deny = [{{ methods = [\"DELETE\"] }},\n  {{ paths = [\"/ok\", \"{glob}\"] }}]"
            ));
            assert_eq!(
                (line, key.as_str()),
                (6, "providers.gh.deny[1].paths[1]"),
                "{glob}: {msg}"
            );
            assert!(msg.contains(what), "{glob}: {msg}");
        }

        let (line, key, msg) = error("allow = []");
        assert_eq!((line, key.as_str()), (5, "providers.gh.allow"));
        assert!(msg.contains("is empty"), "{msg}");
    }

    #[test]
    fn an_unknown_key_in_a_rule_is_an_error() {
        let (line, key, msg) = error("deny = [{ method = [\"DELETE\"] }]");
        assert_eq!(line, 5, "{key}: {msg}");
        assert!(key.starts_with("providers.gh.deny"), "{key}: {msg}");
        assert!(msg.contains("method"), "{msg}");
    }
}
