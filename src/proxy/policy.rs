//! Phase 4b, **rules**: what a provider's credential may be used for (`allow` / `deny`).
//!
//! The whole decision is here, and both transports ask it after routing and before a credential
//! is read, so a refused request never has one attached and nothing of it goes upstream:
//! 1. no rules: allowed (one `Option` check; the fast path stays as it was);
//! 2. the path is decoded and cut into segments, or refused as ambiguous (`400 ambiguous_path`,
//!    `path.rs`): a rule is only as good as the path it sees, so a path an upstream could read
//!    as another one is never judged;
//! 3. `deny`, in order: the first rule that matches refuses (`403 policy_denied`, naming it);
//! 4. `allow`, when set: a request no rule matches is refused.
//!
//! A rule matches when its method list (if given) has the method, without case, and one of its
//! path globs (if given) matches the path (`glob.rs`). The path checked is the one the client
//! sent, after a route's `path_prefix` is removed and before it is joined to the upstream's
//! base path: rules are written in the API's own paths (`/repos/acme/**`), whatever the
//! upstream URL. The query is not checked.
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

/// What the rules say about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Denied(usize),
    NotAllowed,
    Ambiguous(Ambiguity),
}

impl Rules {
    fn verdict(&self, method: &str, path: &str) -> Verdict {
        let judged = path::with_segments(path, |segs| {
            if let Some(i) = self.deny.iter().position(|r| r.matches(method, segs, true)) {
                return Verdict::Denied(i);
            }
            match &self.allow {
                Some(allow) if !allow.iter().any(|r| r.matches(method, segs, false)) => {
                    Verdict::NotAllowed
                }
                _ => Verdict::Allowed,
            }
        });
        judged.unwrap_or_else(Verdict::Ambiguous)
    }
}

/// Phase 4b for `provider`: `Ok` when its rules let `method` on `path_and_query` (the client's
/// part, as routed) through, else the 403 or 400 that says which rule, or what in the path.
pub fn check(
    provider: &ProviderConfig,
    method: &str,
    path_and_query: &str,
) -> Result<(), ProxyError> {
    let Some(rules) = &provider.rules else {
        return Ok(());
    };
    let path = path::path_of(path_and_query);
    match rules.verdict(method, path) {
        Verdict::Allowed => Ok(()),
        verdict => Err(refusal(&provider.name, verdict, method, path)),
    }
}

/// The same decision as [`check`], as a yes or no: the fast path serves what is allowed and
/// leaves a refusal to hyper, which asks [`check`] for the answer.
#[inline]
pub fn permits(provider: &ProviderConfig, method: &str, path_and_query: &str) -> bool {
    match &provider.rules {
        None => true,
        Some(rules) => rules.verdict(method, path::path_of(path_and_query)) == Verdict::Allowed,
    }
}

#[cold]
fn refusal(name: &str, verdict: Verdict, method: &str, path: &str) -> ProxyError {
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
    let e = match verdict {
        Verdict::Denied(i) => ProxyError::new(
            ErrorKind::PolicyDenied,
            format!("{method} {shown} is refused by providers.{name}.deny[{i}]"),
        ),
        Verdict::NotAllowed => ProxyError::new(
            ErrorKind::PolicyDenied,
            format!(
                "no allow rule matched {method} {shown}: providers.{name}.allow lists what this \
                 provider's credential may be used for"
            ),
        ),
        Verdict::Ambiguous(why) => ProxyError::new(
            ErrorKind::AmbiguousPath,
            format!(
                "the path {shown} has {}, which servers may read as another path; provider \
                 {name} has rules, so only a plain path is accepted: send it without dot-segments, \
                 encoded separators or `//`",
                why.describe()
            ),
        ),
        Verdict::Allowed => unreachable!("an allowed request is not refused"),
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
        assert_eq!(r.verdict("GET", "/repos/acme/x"), Verdict::Allowed);
        assert_eq!(r.verdict("get", "/repos/acme/x"), Verdict::Allowed);
        assert_eq!(r.verdict("DELETE", "/repos/acme/x"), Verdict::Denied(0));
        assert_eq!(r.verdict("delete", "/repos/acme/x"), Verdict::Denied(0));
        assert_eq!(r.verdict("GET", "/admin"), Verdict::Denied(1));
        assert_eq!(r.verdict("GET", "/ADMIN/x"), Verdict::Denied(1));
        assert_eq!(r.verdict("GET", "/%61dmin/x"), Verdict::Denied(1));
        assert_eq!(r.verdict("POST", "/repos/acme/x"), Verdict::NotAllowed);
        assert_eq!(r.verdict("GET", "/repos/other"), Verdict::NotAllowed);
        assert_eq!(r.verdict("GET", "/Repos/acme/x"), Verdict::NotAllowed);
        assert_eq!(
            r.verdict("GET", "/repos/acme/../other"),
            Verdict::Ambiguous(Ambiguity::DotSegment)
        );
    }

    #[test]
    fn without_allow_everything_not_denied_passes() {
        let r = Rules {
            deny: vec![rule(&["DELETE"], &[])],
            allow: None,
        };
        assert_eq!(r.verdict("PATCH", "/anything"), Verdict::Allowed);
        assert_eq!(r.verdict("DELETE", "/anything"), Verdict::Denied(0));
    }

    #[test]
    fn refusals_name_the_rule_and_never_the_query() {
        let e = refusal("gh", Verdict::Denied(1), "GET", "/admin/x");
        assert_eq!(e.kind, ErrorKind::PolicyDenied);
        assert!(e.message.contains("providers.gh.deny[1]"), "{}", e.message);
        let e = refusal("gh", Verdict::NotAllowed, "POST", "/x");
        assert!(
            e.message.contains("no allow rule matched POST /x"),
            "{}",
            e.message
        );
        let e = refusal(
            "gh",
            Verdict::Ambiguous(Ambiguity::EncodedSlash),
            "GET",
            "/a%2fb",
        );
        assert_eq!(e.kind, ErrorKind::AmbiguousPath);
        let long = format!("/{}", "é".repeat(300));
        let e = refusal("gh", Verdict::NotAllowed, "GET", &long);
        assert!(e.message.len() < 400);
    }

    #[test]
    fn a_rule_for_everything_is_recognised() {
        assert!(rule(&[], &["/**"]).is_everything());
        assert!(!rule(&["GET"], &["/**"]).is_everything());
        assert!(!rule(&[], &["/a/**"]).is_everything());
    }
}
