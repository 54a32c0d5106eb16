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

/// A response field other than `Location` that carries URLs the upstream may have built from
/// the request's URL, and so may echo a query token: `Link` (RFC 8288 §3: each target is a
/// `<URI-Reference>`; a paginated API's `rel="next"` keeps the query) and `Refresh` (HTML's
/// `delay; url=URL`, as a header too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    Link,
    Refresh,
}

impl Echo {
    /// The kind of field `name` is, if it is one of these (ASCII case ignored).
    pub fn of(name: &str) -> Option<Echo> {
        if name.eq_ignore_ascii_case("link") {
            Some(Echo::Link)
        } else if name.eq_ignore_ascii_case("refresh") {
            Some(Echo::Refresh)
        } else {
            None
        }
    }

    fn header(self) -> HeaderName {
        match self {
            Echo::Link => header::LINK,
            Echo::Refresh => header::REFRESH,
        }
    }
}

/// What becomes of an [`Echo`] field for a token in the query.
#[derive(Debug, PartialEq, Eq)]
pub enum EchoEdit {
    /// The token is not in it: it goes as it came.
    Keep,
    /// Its URLs without the credential's parameter.
    Replace(String),
    /// It can't be edited (not UTF-8, not a valid value once edited, the token still in it
    /// somewhere else, such as a quoted `anchor`): it doesn't go at all.
    Drop,
}

/// Phase 8's edit of an [`Echo`] field `value` for the credential's query parameter `q`: each
/// URL in it loses its parameters of that name, as [`location_without_token`] does.
pub fn echo_without_token(kind: Echo, value: &[u8], q: &QueryParam) -> EchoEdit {
    let edited = std::str::from_utf8(value).ok().and_then(|v| match kind {
        Echo::Link => link_without_token(v, q),
        Echo::Refresh => refresh_without_token(v, q),
    });
    match edited {
        Some(new) if HeaderValue::from_str(&new).is_ok() && !holds_token(new.as_bytes(), q) => {
            EchoEdit::Replace(new)
        }
        Some(_) => EchoEdit::Drop,
        None if holds_token(value, q) => EchoEdit::Drop,
        None => EchoEdit::Keep,
    }
}

/// `Link`: every `<URI-Reference>` edited; the parameters (`; rel="next"`) kept as they are.
fn link_without_token(v: &str, q: &QueryParam) -> Option<String> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    let mut changed = false;
    while let Some(open) = rest.find('<') {
        let Some(len) = rest[open..].find('>') else {
            break;
        };
        let uri = &rest[open + 1..open + len];
        out.push_str(&rest[..=open]);
        match location_without_token(uri, Some(q)) {
            Some(new) => {
                out.push_str(&new);
                changed = true;
            }
            None => out.push_str(uri),
        }
        out.push('>');
        rest = &rest[open + len + 1..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// `Refresh`: `delay`, then `;` or `,`, then the URL, perhaps after `url=` and in quotes
/// (HTML's "shared declarative refresh steps").
fn refresh_without_token(v: &str, q: &QueryParam) -> Option<String> {
    let sep = v.find([';', ','])?;
    let after = v[sep + 1..].trim_start();
    let mut start = v.len() - after.len();
    if after
        .get(..3)
        .is_some_and(|u| u.eq_ignore_ascii_case("url"))
    {
        let r = after[3..].trim_start();
        if let Some(r) = r.strip_prefix('=') {
            start = v.len() - r.trim_start().len();
        }
    }
    let mut end = start + v[start..].trim_end().len();
    if let Some(quote) = v[start..]
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\''))
    {
        start += 1;
        end = v[start..].find(quote).map_or(end, |e| start + e);
    }
    let new = location_without_token(&v[start..end], Some(q))?;
    Some(format!("{}{new}{}", &v[..start], &v[end..]))
}

/// [`location_without_token`] and [`echo_without_token`] on a `HeaderMap`: `Location`,
/// `Content-Location`, every `Link` and `Refresh`.
pub fn strip_token_from_response(headers: &mut HeaderMap, credential: &Credential) {
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
    for (name, kind) in [(header::LINK, Echo::Link), (header::REFRESH, Echo::Refresh)] {
        let edits: Vec<EchoEdit> = headers
            .get_all(&name)
            .iter()
            .map(|v| echo_without_token(kind, v.as_bytes(), q))
            .collect();
        if edits.iter().all(|e| *e == EchoEdit::Keep) {
            continue;
        }
        // Rare: rebuilt in order, each value kept, replaced or left out.
        let old: Vec<HeaderValue> = match headers.entry(name) {
            header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
            header::Entry::Vacant(_) => continue,
        };
        for (value, edit) in old.into_iter().zip(edits) {
            let value = match edit {
                EchoEdit::Keep => value,
                EchoEdit::Replace(new) => match HeaderValue::from_str(&new) {
                    Ok(v) => v,
                    Err(_) => continue,
                },
                EchoEdit::Drop => continue,
            };
            headers.append(kind.header(), value);
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

    /// Issue 20 item 1: an upstream echoing the request's URL, the token in it, into `Link` and
    /// `Refresh` hands the client neither the token nor a broken field; the rest stays as it was.
    #[test]
    fn link_and_refresh_lose_the_query_token() {
        let q = QueryParam {
            name: "key".into(),
            pair: "key=T0KEN-VALUE".into(),
        };
        let edit = |kind, v: &str| echo_without_token(kind, v.as_bytes(), &q);
        let replaced = |s: &str| EchoEdit::Replace(s.to_owned());
        assert_eq!(
            edit(
                Echo::Link,
                "<https://api.example/items?page=2&key=T0KEN-VALUE>; rel=\"next\", \
                 </items?key=T0KEN-VALUE>; rel=\"first\", <https://docs.example/a>; rel=\"help\""
            ),
            replaced(
                "<https://api.example/items?page=2>; rel=\"next\", </items>; rel=\"first\", \
                 <https://docs.example/a>; rel=\"help\""
            )
        );
        for (given, want) in [
            ("0; url=/x?KEY=T0KEN-VALUE&a=1", "0; url=/x?a=1"),
            ("5;URL='/x?a=1&key=T0KEN-VALUE#f'", "5;URL='/x?a=1#f'"),
            ("1, url = \"/y?key=T0KEN-VALUE\"", "1, url = \"/y\""),
            ("3; /z?key=T0KEN-VALUE", "3; /z"),
        ] {
            assert_eq!(edit(Echo::Refresh, given), replaced(want), "{given}");
        }
        // Nothing to take out: the field goes as it came.
        assert_eq!(
            edit(Echo::Link, "</p?page=2>; rel=\"next\""),
            EchoEdit::Keep
        );
        assert_eq!(edit(Echo::Refresh, "5"), EchoEdit::Keep);
        assert_eq!(edit(Echo::Refresh, "0; url=/x?a=1"), EchoEdit::Keep);
        // The token elsewhere in the value, or in one that isn't text: the field is dropped.
        assert_eq!(
            edit(Echo::Link, "</a>; rel=\"x\"; anchor=\"/b?key=T0KEN-VALUE\""),
            EchoEdit::Drop
        );
        assert_eq!(
            echo_without_token(Echo::Refresh, b"0; url=/caf\xe9?key=T0KEN-VALUE", &q),
            EchoEdit::Drop
        );
        assert_eq!(Echo::of("LINK"), Some(Echo::Link));
        assert_eq!(Echo::of("Refresh"), Some(Echo::Refresh));
        assert_eq!(Echo::of("links"), None);

        // On a `HeaderMap` (hyper's side): every value of each field, in order.
        let credential = Credential::new(
            &crate::secret::Secret::from("T0KEN-VALUE"),
            &crate::credential::Inject::Query { name: "key".into() },
            &[],
            1,
            tokio::time::Instant::now(),
            None,
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.append(
            header::LINK,
            HeaderValue::from_static("</a?key=T0KEN-VALUE>; rel=\"next\""),
        );
        headers.append(header::LINK, HeaderValue::from_static("</b>; rel=\"prev\""));
        headers.append(
            header::REFRESH,
            HeaderValue::from_static("0; url=/c?key=T0KEN-VALUE"),
        );
        strip_token_from_response(&mut headers, &credential);
        let all = |n| -> Vec<&str> {
            headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(
            all(header::LINK),
            ["</a>; rel=\"next\"", "</b>; rel=\"prev\""]
        );
        assert_eq!(all(header::REFRESH), ["0; url=/c"]);
    }
}
