//! Phases 6 and 8, the head edits, defined once for both transports: which of the client's
//! fields go upstream (hop-by-hop and framing fields, `Host`, the fields the credential sets and,
//! for `forwarded` providers, `X-Forwarded-Proto` do not: credproxy writes its own), then
//! `Host`, the credential, `Forwarded` and (with `via = true`) `Via`; on the way back, hop-by-hop fields dropped and
//! `Via` added. hyper applies them to a `HeaderMap`; the fast path to the head's bytes, from the
//! same field classification (`headers.rs`: [`classify`](super::headers::classify)). A token
//! that goes in the query (`inject = { query = NAME }`) is the target's edit: the client's own
//! parameter of that name is replaced ([`put_target`], both transports).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;

use super::headers::{Field, add_forwarded, add_via, classify, strip_hop_by_hop};
use crate::credential::{Credential, QueryParam};
use crate::metrics::Metrics;

/// `Via` as the fast path writes it (RFC 9110 §7.6.3), the same as [`add_via`]'s.
pub const VIA_LINE: &[u8] = b"via: 1.1 credproxy\r\n";

/// Whether the client's field `name` (of kind `kind`) is left out of the upstream request:
/// everything credproxy writes itself or that is hop-by-hop, a field the credential sets
/// (`creds`), `X-Forwarded-Proto` for a `forwarded` provider, and a field named in the
/// request's `Connection` (`in_connection`, asked only for a field that would otherwise go),
/// and a [`look_alike`] of any of these (counted in `metrics`).
#[inline]
pub fn drops_client_field(
    kind: Field,
    name: &str,
    creds: &[(HeaderName, HeaderValue)],
    forwarded: bool,
    in_connection: impl FnOnce() -> bool,
    metrics: &Metrics,
) -> bool {
    match kind {
        Field::Other | Field::Location | Field::ContentLocation | Field::Expect => {
            if look_alike(name, creds) {
                metrics.dropped_field();
                return true;
            }
            creds
                .iter()
                .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
                || in_connection()
        }
        Field::XForwardedProto => forwarded,
        _ => true,
    }
}

/// A field name with `_` that, once `_` reads as `-`, is one credproxy treats specially
/// (framing, hop-by-hop, `Proxy-Authorization`: anything [`classify`] knows) or a field the
/// credential sets (`creds`). Such a field is dropped, as nginx
/// does with `underscores_in_headers off`: an upstream (or a server behind it: CGI, WSGI, PHP,
/// which map `-` to `_`) may read `Transfer_Encoding` as framing or `X_Api_Key` as the
/// credential, so the client could override what credproxy set or smuggle a body.
///
/// Both ways for the credential's fields: a configured `X_Api_Key` is shadowed by a client's
/// `X-Api-Key` just as a configured `X-Api-Key` is by a client's `X_Api_Key`.
pub fn look_alike(name: &str, creds: &[(HeaderName, HeaderValue)]) -> bool {
    let underscored = name.as_bytes().contains(&b'_');
    let dashed = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    let same = |other: &str| {
        other.len() == name.len()
            && other
                .bytes()
                .zip(name.bytes())
                .all(|(a, b)| dashed(a) == dashed(b))
    };
    // (`Authorization`, `Host`, `Connection`, `Upgrade`, `TE` and `Trailer` have no `-`, so no
    // look-alike: a name with `_` never equals them.)
    if creds
        .iter()
        .any(|(n, _)| (underscored || n.as_str().as_bytes().contains(&b'_')) && same(n.as_str()))
    {
        return true;
    }
    if !underscored {
        return false;
    }
    // Every name `classify` knows is at most 19 bytes long.
    let mut buf = [0u8; 24];
    let Some(buf) = buf.get_mut(..name.len()) else {
        return false;
    };
    for (d, b) in buf.iter_mut().zip(name.bytes()) {
        *d = dashed(b);
    }
    std::str::from_utf8(buf).is_ok_and(|n| classify(n) != Field::Other)
}

/// Phase 6 on a `HeaderMap`, before the credential: hop-by-hop fields gone, [`look_alike`]s of
/// those and of the credential's fields (`creds`) gone and counted, `Host` the upstream's, `Via`
/// added when `via` (`[proxy] via = true`).
///
/// `Via` is off upstream by default, as nginx, HAProxy and Envoy leave it off when proxying:
/// nginx's default `gzip_proxied off` sends an uncompressed body to any request with `Via`.
pub fn request_head(
    headers: &mut HeaderMap,
    host: &HeaderValue,
    creds: &[(HeaderName, HeaderValue)],
    metrics: &Metrics,
    via: bool,
) {
    strip_hop_by_hop(headers);
    // Rare: look for one before collecting any.
    if headers.keys().any(|n| look_alike(n.as_str(), creds)) {
        let found: Vec<HeaderName> = headers
            .keys()
            .filter(|n| look_alike(n.as_str(), creds))
            .cloned()
            .collect();
        for name in found {
            // Each value of the name is a field dropped.
            if let http::header::Entry::Occupied(e) = headers.entry(name) {
                for _ in e.remove_entry_mult().1 {
                    metrics.dropped_field();
                }
            }
        }
    }
    headers.insert(header::HOST, host.clone());
    if via {
        add_via(headers);
    }
}

/// The credential's fields *replace* the client's.
pub fn set_credential(headers: &mut HeaderMap, credential: &Credential) {
    for (name, value) in credential.headers() {
        headers.insert(name.clone(), value.clone());
    }
}

/// Phase 6's target: the upstream path and query, given in `parts` (as
/// [`path_parts`](super::route::path_parts) splits it; the query is in the last), written to
/// `out` with the credential's query parameter, if it has one, in place of the client's
/// parameters of that name (compared decoded, so `k%65y=` is `key=` too). The credential's pair
/// goes last.
pub fn put_target(out: &mut Vec<u8>, parts: [&str; 3], credential: &Credential) {
    let Some(q) = credential.query() else {
        for part in parts {
            out.extend_from_slice(part.as_bytes());
        }
        return;
    };
    let (path, query) = parts[2].split_once('?').unwrap_or((parts[2], ""));
    for part in [parts[0], parts[1], path, "?"] {
        out.extend_from_slice(part.as_bytes());
    }
    for pair in query.split('&') {
        if !pair.is_empty() && !names(pair, q) {
            out.extend_from_slice(pair.as_bytes());
            out.push(b'&');
        }
    }
    out.extend_from_slice(q.pair.as_bytes());
}

/// Whether the query's `pair` is a parameter named as the credential's: ASCII case ignored (some
/// servers read names so), and each `;`-separated part of it judged too (some servers split on
/// `;` as well as `&`, so `a=1;key=x` would carry a second `key` past us).
fn names(pair: &str, q: &QueryParam) -> bool {
    pair.split(';').any(|part| {
        let raw = part.split('=').next().unwrap_or(part);
        if raw.eq_ignore_ascii_case(&q.name) {
            return true;
        }
        // Only a name with escapes can decode to ours.
        (raw.contains('%') || raw.contains('+'))
            && form_urlencoded::parse(raw.as_bytes())
                .next()
                .is_some_and(|(name, _)| name.eq_ignore_ascii_case(&q.name))
    })
}

/// Whether a field value's raw bytes hold the credential's query value as it was sent: a
/// `Location` that can't be read as text (not ASCII, not UTF-8) can't be edited, and must not be
/// passed on with the token in it.
pub fn holds_token(value: &[u8], q: &QueryParam) -> bool {
    let token = q.pair.split_once('=').map_or("", |(_, v)| v).as_bytes();
    !token.is_empty() && value.windows(token.len()).any(|w| w == token)
}

/// Phase 8's edit for a token in the query: a `Location` the upstream built from the request's
/// URL (a trailing-slash redirect keeps the query) would hand the token to the client, so its
/// parameters of the credential's name are taken out. `None`: nothing to take out.
pub fn location_without_token(loc: &str, query: Option<&QueryParam>) -> Option<String> {
    let q = query?;
    let (before, rest) = loc.split_once('?')?;
    let (params, fragment) = match rest.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (rest, None),
    };
    if !params.split('&').any(|p| names(p, q)) {
        return None;
    }
    let kept: Vec<&str> = params
        .split('&')
        .filter(|p| !p.is_empty() && !names(p, q))
        .collect();
    let mut out = before.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// [`location_without_token`] on a `HeaderMap`: `Location` and `Content-Location`.
pub fn strip_token_from_location(headers: &mut HeaderMap, credential: &Credential) {
    let Some(q) = credential.query() else { return };
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = headers.get(&name) else {
            continue;
        };
        let edited = value
            .to_str()
            .ok()
            .and_then(|loc| location_without_token(loc, Some(q)))
            .map(|new| HeaderValue::from_str(&new));
        match edited {
            Some(Ok(v)) => {
                headers.insert(name, v);
            }
            // Not text, or not editable: it goes only if the token is not in it.
            None | Some(Err(_)) if holds_token(headers[&name].as_bytes(), q) => {
                headers.remove(&name);
            }
            _ => {}
        }
    }
}

/// [`put_target`] on hyper's side: `pq` as it goes upstream with `credential`.
pub fn target(pq: &PathAndQuery, credential: &Credential) -> PathAndQuery {
    if credential.query().is_none() {
        return pq.clone();
    }
    let mut out = Vec::with_capacity(pq.as_str().len() + 64);
    put_target(&mut out, ["", "", pq.as_str()], credential);
    // The parts were a valid target and the pair is percent-encoded: the result is valid too.
    PathAndQuery::from_maybe_shared(bytes::Bytes::from(out)).unwrap_or_else(|_| pq.clone())
}

/// `Forwarded` and friends, for a provider that asks (`forwarded = true`) and a known client.
pub fn set_forwarded(headers: &mut HeaderMap, forwarded: bool, peer: Option<std::net::IpAddr>) {
    if forwarded && let Some(ip) = peer {
        add_forwarded(headers, ip);
    }
}

/// Phase 8 on a `HeaderMap`: hop-by-hop fields gone, `Via` added.
pub fn response_head(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    add_via(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_of_special_and_credential_fields() {
        let creds = [(
            HeaderName::from_static("x-bv-org-id"),
            HeaderValue::from_static("1"),
        )];
        for name in [
            "Transfer_Encoding",
            "content_length",
            "x_bv_org_id",
            "X_BV-Org_Id",
            "Proxy_Authorization",
            "Keep_Alive",
            "Proxy_Connection",
            "X_Forwarded_Proto",
        ] {
            assert!(look_alike(name, &creds), "{name}");
        }
        for name in [
            "x_custom",
            "authorization",
            "Transfer-Encoding",
            "x-bv-org-id",
            "a_very_long_field_name_over_the_buffer",
        ] {
            assert!(!look_alike(name, &creds), "{name}");
        }
        // A configured name with `_` is shadowed by the client's `-` spelling, too.
        let creds = [(
            HeaderName::from_static("x_api_key"),
            HeaderValue::from_static("1"),
        )];
        for name in ["X-Api-Key", "x-api_key", "X_API_KEY"] {
            assert!(look_alike(name, &creds), "{name}");
        }
        for name in ["x-api-keys", "x-custom", "authorization"] {
            assert!(!look_alike(name, &creds), "{name}");
        }
    }

    #[test]
    fn a_clients_own_query_parameter_is_found_in_any_case_and_behind_a_semicolon() {
        let q = QueryParam {
            name: "key".into(),
            pair: "key=T0KEN-VALUE".into(),
        };
        for pair in ["key=x", "KEY=x", "Key", "k%65y=x", "a=1;key=x", "a=1;KEY"] {
            assert!(names(pair, &q), "{pair}");
        }
        for pair in ["keys=x", "a=key", "monkey=1", "a=1;b=2"] {
            assert!(!names(pair, &q), "{pair}");
        }
        // A Location that can't be edited as text goes only without the token in it.
        assert!(holds_token(b"/caf\xe9/?key=T0KEN-VALUE", &q));
        assert!(!holds_token(b"/caf\xe9/?a=1", &q));
    }
}
