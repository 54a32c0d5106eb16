//! `[callers.NAME]`: named local callers, each with its own secret (`Proxy-Authorization:
//! Basic NAME:SECRET` or `Bearer SECRET`) and the providers it may use.

use std::collections::BTreeMap;
use std::sync::Arc;

use toml::Spanned;

use super::Ctx;
use crate::config::file::FileCaller;
use crate::config::{CallerConfig, ProviderConfig};

impl Ctx<'_> {
    /// Check every `[callers.NAME]` against the providers that checked clean (`providers`) and
    /// the provider names the file has (`declared`: a provider with an error of its own is not
    /// reported again as unknown here).
    pub(in crate::config) fn callers(
        &mut self,
        callers: &BTreeMap<String, Spanned<FileCaller>>,
        providers: &[Arc<ProviderConfig>],
        declared: &[&str],
        proxy_auth: Option<&crate::secret::Live>,
    ) -> Vec<CallerConfig> {
        let mut out = Vec::new();
        for (name, fc) in callers {
            let key = format!("callers.{name}");
            if !super::super::load::valid_name(name) {
                self.err(
                    fc.span(),
                    &key,
                    "a caller name may use letters, digits, '-' and '_' only (it is the user name of Basic NAME:SECRET)",
                );
                continue;
            }
            let c = fc.get_ref();
            let secret = match &c.secret {
                Some(s) => self.live(s, &format!("{key}.secret")),
                None => {
                    self.err(
                        fc.span(),
                        &format!("{key}.secret"),
                        "is missing: give the caller a secret of its own, e.g. secret = \"${CI_PROXY_KEY}\"",
                    );
                    None
                }
            };
            if let Some(s) = &secret
                && let Some(problem) = secret_problem(s.get().expose())
            {
                let span = c.secret.as_ref().map_or(fc.span(), |s| s.span.clone());
                self.err(span, &format!("{key}.secret"), problem);
            }
            let mut names = Vec::new();
            match &c.providers {
                None => self.err(
                    fc.span(),
                    &format!("{key}.providers"),
                    "is missing: list the providers this caller may use, e.g. providers = [\"github\"]",
                ),
                Some(list) => {
                    for (i, p) in list.iter().enumerate() {
                        let pkey = format!("{key}.providers[{i}]");
                        let Some(p_name) = self.string(p, &pkey) else {
                            continue;
                        };
                        if providers.iter().any(|cfg| cfg.name == p_name) {
                            if !names.contains(&p_name) {
                                names.push(p_name);
                            }
                        } else if !declared.contains(&p_name.as_str()) {
                            let known: Vec<&str> =
                                providers.iter().map(|c| c.name.as_str()).collect();
                            self.err(
                                p.span(),
                                &pkey,
                                format!(
                                    "no provider is named `{p_name}`: use one of the configured providers ({})",
                                    if known.is_empty() {
                                        "none configured".to_owned()
                                    } else {
                                        known.join(", ")
                                    }
                                ),
                            );
                        }
                    }
                }
            }
            // Bearer carries no name: two callers with one secret could not be told apart.
            if let Some(s) = &secret
                && let Some(twin) = out
                    .iter()
                    .find(|o: &&CallerConfig| o.secret.get() == s.get())
            {
                let span = c.secret.as_ref().map_or(fc.span(), |s| s.span.clone());
                self.err(
                    span,
                    &format!("{key}.secret"),
                    format!(
                        "is the same as callers.{}.secret: give each caller a secret of its own (Bearer SECRET names no caller)",
                        twin.name
                    ),
                );
                continue;
            }
            // Basic with another user name and this secret would pass for proxy_auth's anyone,
            // who may use every provider: the caller's limits would mean nothing.
            if let Some(s) = &secret
                && proxy_auth.is_some_and(|a| a.get() == s.get())
            {
                let span = c.secret.as_ref().map_or(fc.span(), |s| s.span.clone());
                self.err(
                    span,
                    &format!("{key}.secret"),
                    "is the same as proxy.proxy_auth: proxy_auth's secret lets anyone use every provider, \
                     so give the caller a secret of its own",
                );
                continue;
            }
            if let Some(secret) = secret {
                out.push(CallerConfig {
                    name: name.clone(),
                    secret,
                    providers: names,
                });
            }
        }
        out
    }
}

/// What makes a caller secret unusable in `Proxy-Authorization`, in words that never repeat it.
fn secret_problem(v: &str) -> Option<&'static str> {
    if v.chars().any(char::is_control) {
        return Some(
            "contains a newline or control character: a Proxy-Authorization header can't carry it",
        );
    }
    if v.starts_with(' ') || v.ends_with(' ') {
        return Some("starts or ends with a space, which HTTP drops from a header value");
    }
    None
}

#[cfg(test)]
mod tests {
    fn load(callers: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\n{callers}"
        );
        crate::config::load_str(&text, "c.toml", &|v| {
            (v == "KEY").then(|| "k-S3CR3T".into())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_caller_has_a_secret_and_configured_providers() {
        let c = load("[callers.ci]\nsecret = \"${KEY}\"\nproviders = [\"gh\", \"gh\"]\n").unwrap();
        assert_eq!(c.callers.len(), 1);
        assert_eq!(c.callers[0].name, "ci");
        assert_eq!(c.callers[0].providers, vec!["gh"]);
        assert_eq!(c.callers[0].secret.get().expose(), "k-S3CR3T");
        assert!(!format!("{c:?}").contains("k-S3CR3T"));
    }

    /// A caller's secret may not be proxy_auth's (Basic OTHER:SECRET would pass as anyone).
    #[test]
    fn a_caller_secret_equal_to_proxy_auth_is_an_error() {
        let e = load(
            "[proxy]\nproxy_auth = \"${KEY}\"\n[callers.ci]\nsecret = \"k-S3CR3T\"\nproviders = [\"gh\"]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("callers.ci.secret") && e.contains("proxy.proxy_auth"),
            "{e}"
        );
        assert!(!e.contains("k-S3CR3T"), "{e}");
        load("[proxy]\nproxy_auth = \"other-S3CR3T\"\n[callers.ci]\nsecret = \"k-S3CR3T\"\nproviders = [\"gh\"]\n")
            .unwrap();
    }

    /// A short caller secret is a warning (not an error), naming the key, not the secret.
    #[test]
    fn a_short_caller_secret_is_warned_about() {
        let c = load("[callers.ci]\nsecret = \"k-S3CR3T\"\nproviders = [\"gh\"]\n").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("callers.ci.secret is shorter than 16")),
            "{:?}",
            c.warnings
        );
        assert!(!c.warnings.iter().any(|w| w.contains("k-S3CR3T")));
        let c = load("[callers.ci]\nsecret = \"a-long-S3CR3T-0123456\"\nproviders = [\"gh\"]\n")
            .unwrap();
        assert!(
            !c.warnings.iter().any(|w| w.contains("shorter than")),
            "{:?}",
            c.warnings
        );
    }

    /// The rules' warning (`config/warnings.rs`) is told that callers are set.
    #[test]
    fn with_callers_a_provider_allowing_everything_is_warned_about() {
        let c = load("[callers.ci]\nsecret = \"x\"\nproviders = [\"gh\"]\n").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("providers.gh allows every request while [callers]")),
            "{:?}",
            c.warnings
        );
        let c = load("").unwrap();
        assert!(
            !c.warnings.iter().any(|w| w.contains("[callers]")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn errors_name_the_key_and_never_the_secret() {
        let e = load("[callers.ci]\nsecret = \"${KEY}\"\nproviders = [\"gh\", \"nope\"]\n")
            .unwrap_err();
        assert!(
            e.contains("callers.ci.providers[1]") && e.contains("`nope`") && e.contains("gh"),
            "{e}"
        );
        let e = load("[callers.ci]\nproviders = [\"gh\"]\n").unwrap_err();
        assert!(
            e.contains("callers.ci.secret") && e.contains("missing"),
            "{e}"
        );
        let e = load("[callers.ci]\nsecret = \"x\"\n").unwrap_err();
        assert!(
            e.contains("callers.ci.providers") && e.contains("missing"),
            "{e}"
        );
        let e = load("[callers.\"c i\"]\nsecret = \"x\"\nproviders = []\n").unwrap_err();
        assert!(e.contains("caller name"), "{e}");
        let e = load("[callers.ci]\nsecret = \" k-S3CR3T\"\nproviders = [\"gh\"]\n").unwrap_err();
        assert!(e.contains("space") && !e.contains("k-S3CR3T"), "{e}");
        let e = load(
            "[callers.a]\nsecret = \"${KEY}\"\nproviders = [\"gh\"]\n\
             [callers.b]\nsecret = \"k-S3CR3T\"\nproviders = [\"gh\"]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("callers.b.secret")
                && e.contains("callers.a.secret")
                && !e.contains("k-S3CR3T"),
            "{e}"
        );
        let e = load("[callers.ci]\nsecret = \"x\"\nproviders = [\"gh\"]\nrole = \"admin\"\n")
            .unwrap_err();
        assert!(e.contains("role"), "{e}");
    }
}
