//! What no single section can see: two listeners on one address, two providers claiming one
//! host, an upstream that is credproxy's own listener. Run once the sections are checked, on
//! what they built, with the places taken from the file.
//!
//! Addresses are compared as sockets: `127.0.0.1:8080` and `localhost:8080` are one address,
//! and `0.0.0.0:8080` (or `[::]:8080`) takes port 8080 on every address. Hosts: an exact name
//! and a wildcard that covers it may belong to two providers (the exact one wins, then the
//! longest wildcard: `proxy::route`); that is a note, not an error.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use super::Ctx;
use super::proxy::resolve_listen;
use crate::config::file::{FileConfig, Str};
use crate::config::{HostPattern, Listen, ProviderConfig, ProxySettings, host};

/// One of credproxy's listeners, with its key and where it was written (`None`: the default).
struct Listener {
    key: String,
    listen: Listen,
    span: Option<Range<usize>>,
}

impl Ctx<'_> {
    /// The checks across sections; errors go with the others, notes are returned.
    pub(in crate::config) fn clashes(
        &mut self,
        parsed: &FileConfig,
        proxy: &ProxySettings,
        providers: &[Arc<ProviderConfig>],
    ) -> Vec<String> {
        let listeners = self.listeners(parsed, proxy);
        self.same_address(&listeners);
        self.upstream_loops(parsed, providers, &listeners);
        self.same_host(parsed, providers)
    }

    fn listeners(&mut self, parsed: &FileConfig, proxy: &ProxySettings) -> Vec<Listener> {
        let span = |s: &Option<Str>| s.as_ref().map(|s| s.span());
        let mut out = vec![Listener {
            key: "proxy.listen".into(),
            listen: proxy.listen.clone(),
            span: span(&parsed.proxy.listen),
        }];
        if let Some(admin) = &proxy.admin_listen {
            out.push(Listener {
                key: "proxy.admin_listen".into(),
                listen: admin.clone(),
                span: span(&parsed.proxy.admin_listen),
            });
        }
        for (i, r) in parsed.routes.iter().enumerate() {
            let Some(l) = &r.get_ref().listen else {
                continue;
            };
            // Already checked by `routes`: here an unusable value is simply left out.
            let value = crate::config::env::expand(l.get_ref(), self.lookup).ok();
            if let Some(listen) = value.and_then(|v| resolve_listen(&v).ok()) {
                out.push(Listener {
                    key: format!("routes[{i}].listen"),
                    listen,
                    span: Some(l.span()),
                });
            }
        }
        out
    }

    /// Two listeners on one address: the second can't bind (or, with 0.0.0.0, steals the port).
    fn same_address(&mut self, listeners: &[Listener]) {
        for (i, b) in listeners.iter().enumerate() {
            let Some(a) = listeners[..i]
                .iter()
                .find(|a| overlap(&a.listen, &b.listen))
            else {
                continue;
            };
            // Point at the one the user wrote: the later one, unless it is a default.
            let (here, there) = match (&b.span, &a.span) {
                (Some(_), _) | (None, None) => (b, a),
                (None, Some(_)) => (a, b),
            };
            let theirs = match &there.span {
                Some(s) => format!("{} (line {})", there.key, self.line_of(s.start)),
                None => format!("{} (its default)", there.key),
            };
            let message = if here.listen.to_string() == there.listen.to_string() {
                format!(
                    "{} is also {theirs}: each listener needs an address of its own",
                    here.listen
                )
            } else {
                format!(
                    "{} overlaps {} of {theirs}: each listener needs an address of its own \
                     (0.0.0.0 and [::] take the port on every address)",
                    here.listen, there.listen
                )
            };
            self.err(here.span.clone().unwrap_or(0..0), &here.key, message);
        }
    }

    /// An upstream that is one of credproxy's own listeners: every request would come back in.
    fn upstream_loops(
        &mut self,
        parsed: &FileConfig,
        providers: &[Arc<ProviderConfig>],
        listeners: &[Listener],
    ) {
        for p in providers {
            let Some(fp) = parsed.providers.get(&p.name) else {
                continue;
            };
            let Some(ip) =
                host::loopback_ip(&p.upstream.host).or_else(|| bare_ip(&p.upstream.host))
            else {
                continue;
            };
            let up = Listen::Tcp(SocketAddr::new(ip, p.upstream.port));
            let Some(own) = listeners.iter().find(|l| overlap(&l.listen, &up)) else {
                continue;
            };
            let span = fp
                .get_ref()
                .upstream
                .as_ref()
                .map_or(fp.span(), |u| u.span());
            self.err(
                span,
                &format!("providers.{}.upstream", p.name),
                format!(
                    "{} is credproxy's own {} ({}): requests would loop back into credproxy; \
                     set upstream to the provider's API",
                    p.upstream.origin(),
                    own.key,
                    own.listen
                ),
            );
        }
    }

    /// Two providers claiming one host (or one wildcard) is an error; an exact host under another
    /// provider's wildcard is allowed, and noted. Providers with other errors take part too (with
    /// the hosts that could be read), so that fixing those doesn't reveal this.
    fn same_host(&mut self, parsed: &FileConfig, providers: &[Arc<ProviderConfig>]) -> Vec<String> {
        let mut notes = Vec::new();
        let claims = self.claims(parsed, providers);
        for (n, (name, i, h, span)) in claims.iter().enumerate() {
            for (other, _, o, other_span) in claims[..n].iter().filter(|c| c.0 != *name) {
                if h.same_claim(o) {
                    let line = self.line_of(other_span.start);
                    self.err(
                        span.clone(),
                        &format!("providers.{name}.hosts[{i}]"),
                        format!(
                            "{h} is also claimed by provider {other} (line {line}): a host \
                             belongs to one provider; remove it from one of them"
                        ),
                    );
                } else if h.covered_by(o) {
                    notes.push(covered_note(h, name, o, other));
                } else if o.covered_by(h) {
                    notes.push(covered_note(o, other, h, name));
                }
            }
        }
        notes
    }

    /// Every provider's hosts with where each was written: the ones in the file, else (a
    /// preset's) the checked provider's, at its table.
    fn claims<'p>(
        &self,
        parsed: &'p FileConfig,
        providers: &[Arc<ProviderConfig>],
    ) -> Vec<(&'p str, usize, HostPattern, Range<usize>)> {
        let mut out = Vec::new();
        for (name, fp) in &parsed.providers {
            match &fp.get_ref().hosts {
                Some(list) => {
                    for (i, h) in list.iter().enumerate() {
                        let v = crate::config::env::expand(h.get_ref(), self.lookup).ok();
                        if let Some(p) = v.and_then(|v| HostPattern::parse(&v).ok()) {
                            out.push((name.as_str(), i, p, h.span()));
                        }
                    }
                }
                None => {
                    let built = providers.iter().find(|p| p.name == *name);
                    for (i, h) in built.iter().flat_map(|p| p.hosts.iter()).enumerate() {
                        out.push((name.as_str(), i, h.clone(), fp.span()));
                    }
                }
            }
        }
        out
    }

    fn line_of(&self, offset: usize) -> usize {
        super::line_col(self.text, offset).0
    }
}

/// Whether two listeners take the same address. Port 0 is a fresh port each time: never.
fn overlap(a: &Listen, b: &Listen) -> bool {
    match (a, b) {
        (Listen::Unix(a), Listen::Unix(b)) => a == b,
        (Listen::Tcp(a), Listen::Tcp(b)) => {
            a.port() == b.port()
                && a.port() != 0
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        }
        _ => false,
    }
}

fn bare_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn covered_note(
    narrow: &HostPattern,
    narrow_name: &str,
    wide: &HostPattern,
    wide_name: &str,
) -> String {
    format!(
        "{narrow} (provider {narrow_name}) is also covered by {wide} (provider {wide_name}): \
         requests for {narrow} go to {narrow_name}, the more exact claim"
    )
}
