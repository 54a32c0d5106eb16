//! Phase 4b, **rules**: what a provider's credential may be used for (`allow` / `deny`).
//!
//! The whole decision is here, and both transports ask it after routing and before a credential
//! is read, so a refused request never has one attached and nothing of it goes upstream:
//! 1. no rules: allowed (one `Option` check; the fast path stays as it was);
//! 2. a request carrying a field that some servers obey in place of its method or path
//!    (`X-HTTP-Method-Override`, `X-Original-URL`, ...: [`OVERRIDES`]) is refused as ambiguous
//!    (`400 ambiguous_path`), and so is a path that is not plain: it is decoded and cut into
//!    segments, or refused (`path.rs`). A rule is only as good as the method and path it sees,
//!    so a request an upstream could read as another one is never judged;
//! 3. `deny`, in order: the first rule that matches refuses (`403 policy_denied`, naming it);
//! 4. `allow`, when set: a request no rule matches is refused.
//!
//! A rule matches when its method list (if given) has the method, without case, and one of its
//! path globs (if given) matches the path (`glob.rs`). The path checked is the one the client
//! sent, after a route's `path_prefix` is removed and before it is joined to the upstream's
//! base path: rules are written in the API's own paths (`/repos/acme/**`), whatever the
//! upstream URL. The query is not checked, nor the body: a `_method` parameter (Rails,
//! Laravel) or a GraphQL operation is not visible to the rules.
//!
//! The fast path asks [`permits`] and leaves a refusal to hyper, which asks [`check`] for the
//! answer; its connection then stays with hyper (refusals are rare, and the error is made in
//! one place).
//!
//! Fail closed on case too: `deny` globs compare letters without case (`/ADMIN` is denied by
//! `/admin/**`, for the servers that ignore case), `allow` globs compare them exactly (`/Repos`
//! is not allowed by `/repos/**`).

mod glob;
mod path;

pub use glob::{Glob, GlobError};
pub use path::Ambiguity;

use super::error::{ErrorKind, ProxyError};
use crate::config::ProviderConfig;

/// Header fields (lower case) that some frameworks obey in place of the request's method
/// (`X-HTTP-Method-Override` and its variants: ASP.NET, Express, Symfony, Google APIs) or path
/// (`X-Original-URL`, `X-Rewrite-URL`: IIS URL Rewrite, Symfony): on a provider with rules a
/// request carrying one is refused, since the rules would judge another request than the one
/// the upstream serves.
pub const OVERRIDES: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// The [`OVERRIDES`] field among `names`, if any (compared without case).
fn override_in<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    names.into_iter().find_map(|n| {
        // All start with `x-`: most fields are passed over at the first byte.
        if n.len() < 13 || !n.as_bytes()[..2].eq_ignore_ascii_case(b"x-") {
            return None;
        }
        OVERRIDES.into_iter().find(|o| o.eq_ignore_ascii_case(n))
    })
}

/// A provider's rules, compiled at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub deny: Vec<Rule>,
    /// `None`: no `allow` key, everything not denied is allowed.
    pub allow: Option<Vec<Rule>>,
}

/// One rule: methods (upper case; `None`: any) and path globs (`None`: any path). At least one
/// of the two is set (the config checker refuses a rule with neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub methods: Option<Vec<String>>,
    pub paths: Option<Vec<Glob>>,
}

impl Rule {
    fn matches(&self, method: &str, segments: &[&[u8]], fold_case: bool) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && self
                .paths
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|g| g.matches(segments, fold_case)))
    }

    /// Matches every request (no method list, and no path list or a `/**`).
    pub fn is_everything(&self) -> bool {
        self.methods.is_none()
            && self
                .paths
                .as_ref()
                .is_none_or(|ps| ps.iter().any(Glob::is_everything))
    }
}

/// Why the rules refuse a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `deny[i]` matched.
    Denied(usize),
    /// `allow` is set and none of its rules matched.
    NotAllowed,
    Ambiguous(Ambiguity),
    /// The request carries this [`OVERRIDES`] field.
    Override(&'static str),
}

impl Rules {
    /// The decision for `method` on `path` (without the query), sent with header fields
    /// `names`.
    fn judge<'a>(
        &self,
        method: &str,
        path: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Refusal> {
        if let Some(field) = override_in(names) {
            return Err(Refusal::Override(field));
        }
        path::with_segments(path, |segs| {
            if let Some(i) = self.deny.iter().position(|r| r.matches(method, segs, true)) {
                return Err(Refusal::Denied(i));
            }
            match &self.allow {
                Some(allow) if !allow.iter().any(|r| r.matches(method, segs, false)) => {
                    Err(Refusal::NotAllowed)
                }
                _ => Ok(()),
            }
        })
        .unwrap_or_else(|why| Err(Refusal::Ambiguous(why)))
    }
}

/// Phase 4b for `provider`: `Ok` when its rules let `method` on `path_and_query` (the client's
/// part, as routed), with header fields `names`, through; else the 403 or 400 that says which
/// rule, or what in the request.
pub fn check<'a>(
    provider: &ProviderConfig,
    method: &str,
    path_and_query: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), ProxyError> {
    let Some(rules) = &provider.rules else {
        return Ok(());
    };
    let path = path::path_of(path_and_query);
    rules
        .judge(method, path, names)
        .map_err(|why| refusal(&provider.name, why, method, path))
}

/// The same decision as [`check`], as a yes or no: the fast path serves what is allowed and
/// leaves a refusal to hyper, which asks [`check`] for the answer.
#[inline]
pub fn permits<'a>(
    provider: &ProviderConfig,
    method: &str,
    path_and_query: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> bool {
    provider.rules.as_ref().is_none_or(|rules| {
        rules
            .judge(method, path::path_of(path_and_query), names)
            .is_ok()
    })
}

#[cold]
fn refusal(name: &str, why: Refusal, method: &str, path: &str) -> ProxyError {
    // The path as sent, cut short (a message, not a copy of the request); the query never.
    let mut shown = path;
    if shown.len() > 200 {
        let mut end = 200;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown = &shown[..end];
    }
    let method: String = method.chars().take(32).collect();
    let e = match why {
        Refusal::Denied(i) => ProxyError::new(
            ErrorKind::PolicyDenied,
            format!("{method} {shown} is refused by providers.{name}.deny[{i}]"),
        ),
        Refusal::NotAllowed => ProxyError::new(
            ErrorKind::PolicyDenied,
            format!(
                "no allow rule matched {method} {shown}: providers.{name}.allow lists what this \
                 provider's credential may be used for"
            ),
        ),
        Refusal::Ambiguous(why) => ProxyError::new(
            ErrorKind::AmbiguousPath,
            format!(
                "the path {shown} has {}, which servers may read as another path; provider \
                 {name} has rules, so only a plain path is accepted: send it without dot-segments, \
                 `;`, encoded separators, dots or `%`, or `//`",
                why.describe()
            ),
        ),
        // 400 `ambiguous_path` rather than 403 `policy_denied`: no rule refused the request,
        // its meaning is unclear (the upstream may serve another method or path than the one
        // judged), as with an ambiguous path; and the client fixes it the same way, by sending
        // the request plainly.
        Refusal::Override(field) => ProxyError::new(
            ErrorKind::AmbiguousPath,
            format!(
                "{method} {shown} carries {field}, which some servers obey in place of the                  request's method or path; provider {name} has rules, which judge the method and                  path as sent, so such a field is refused: send the request without it, with the                  method and path it means"
            ),
        ),
    };
    e.provider(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(methods: &[&str], paths: &[&str]) -> Rule {
        Rule {
            methods: (!methods.is_empty()).then(|| methods.iter().map(|m| m.to_string()).collect()),
            paths: (!paths.is_empty())
                .then(|| paths.iter().map(|p| Glob::compile(p).unwrap()).collect()),
        }
    }

    fn rules() -> Rules {
        Rules {
            deny: vec![rule(&["DELETE"], &[]), rule(&[], &["/admin/**"])],
            allow: Some(vec![rule(&["GET", "HEAD"], &["/repos/acme/**"])]),
        }
    }

    #[test]
    fn deny_first_then_allow() {
        let r = rules();
        assert_eq!(r.judge("GET", "/repos/acme/x", []), Ok(()));
        assert_eq!(r.judge("get", "/repos/acme/x", []), Ok(()));
        assert_eq!(
            r.judge("DELETE", "/repos/acme/x", []),
            Err(Refusal::Denied(0))
        );
        assert_eq!(
            r.judge("delete", "/repos/acme/x", []),
            Err(Refusal::Denied(0))
        );
        assert_eq!(r.judge("GET", "/admin", []), Err(Refusal::Denied(1)));
        assert_eq!(r.judge("GET", "/ADMIN/x", []), Err(Refusal::Denied(1)));
        assert_eq!(r.judge("GET", "/%61dmin/x", []), Err(Refusal::Denied(1)));
        assert_eq!(
            r.judge("POST", "/repos/acme/x", []),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(r.judge("GET", "/repos/other", []), Err(Refusal::NotAllowed));
        assert_eq!(
            r.judge("GET", "/Repos/acme/x", []),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            r.judge("GET", "/repos/acme/../other", []),
            Err(Refusal::Ambiguous(Ambiguity::DotSegment))
        );
    }

    #[test]
    fn a_field_that_overrides_the_method_or_path_is_refused_before_anything_else() {
        let r = rules();
        for field in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
            "x-original-url",
            "X-Rewrite-URL",
        ] {
            assert_eq!(
                r.judge("GET", "/repos/acme/x", ["accept", field]),
                Err(Refusal::Override(
                    OVERRIDES
                        .into_iter()
                        .find(|o| o.eq_ignore_ascii_case(field))
                        .unwrap()
                )),
                "{field}"
            );
        }
        assert_eq!(
            r.judge(
                "GET",
                "/repos/acme/x",
                ["x-http-method-overrid", "x-original", "x-forwarded-for"]
            ),
            Ok(())
        );
        let e = refusal(
            "gh",
            Refusal::Override("x-http-method"),
            "GET",
            "/repos/acme/x",
        );
        assert_eq!(e.kind, ErrorKind::AmbiguousPath);
        assert!(e.message.contains("carries x-http-method"), "{}", e.message);
    }

    #[test]
    fn without_allow_everything_not_denied_passes() {
        let r = Rules {
            deny: vec![rule(&["DELETE"], &[])],
            allow: None,
        };
        assert_eq!(r.judge("PATCH", "/anything", []), Ok(()));
        assert_eq!(r.judge("DELETE", "/anything", []), Err(Refusal::Denied(0)));
    }

    #[test]
    fn refusals_name_the_rule_and_never_the_query() {
        let e = refusal("gh", Refusal::Denied(1), "GET", "/admin/x");
        assert_eq!(e.kind, ErrorKind::PolicyDenied);
        assert!(e.message.contains("providers.gh.deny[1]"), "{}", e.message);
        let e = refusal("gh", Refusal::NotAllowed, "POST", "/x");
        assert!(
            e.message.contains("no allow rule matched POST /x"),
            "{}",
            e.message
        );
        let e = refusal(
            "gh",
            Refusal::Ambiguous(Ambiguity::EncodedSlash),
            "GET",
            "/a%2fb",
        );
        assert_eq!(e.kind, ErrorKind::AmbiguousPath);
        let long = format!("/{}", "é".repeat(300));
        let e = refusal("gh", Refusal::NotAllowed, "GET", &long);
        assert!(e.message.len() < 400);
    }

    #[test]
    fn a_rule_for_everything_is_recognised() {
        assert!(rule(&[], &["/**"]).is_everything());
        assert!(!rule(&["GET"], &["/**"]).is_everything());
        assert!(!rule(&[], &["/a/**"]).is_everything());
    }
}
