//! The fast path's request side: whether it serves a request, and the upstream head it writes.

use std::io::Write;

use super::*;

/// A request the fast path has taken on (its upstream head is in `Fast::out`).
pub(super) struct Plan<'s> {
    pub(super) route: &'s ProviderRoute,
    pub(super) index: usize,
    pub(super) credential: Arc<Credential>,
    /// For the redirect rule: the upstream, the route's prefix, and the client's origin.
    pub(super) upstream: &'s crate::config::Upstream,
    pub(super) prefix: Option<&'s str>,
    pub(super) origin: OriginAt<'s>,
    /// Bytes of the request on the downstream connection: head and body.
    pub(super) len: usize,
    pub(super) body: usize,
    pub(super) head_method: bool,
    /// RFC 9110 §9.2.2: may be sent again when a reused connection closed without answering.
    pub(super) idempotent: bool,
    pub(super) close: bool,
    /// Method, host and path, when the access line or the audit log will want them.
    pub(super) access: Option<(String, String, String)>,
    /// Who phase 2 admitted.
    pub(super) caller: Caller,
    pub(super) request_id: RequestId,
}

/// Where the origin a redirect is rewritten to is found.
pub(super) enum OriginAt<'s> {
    /// This listener's (a route listener or a path prefix); `None`: no rewrite.
    Local(Option<&'s str>),
    /// `http://` and the span of the request's own authority or `Host` in `Fast::buf`.
    Client(std::ops::Range<usize>),
}

impl Plan<'_> {
    /// The redirect rule's parameters, with the client's origin read from `buf` (the request's
    /// bytes this plan was made from).
    pub(super) fn rewrite<'b>(&'b self, buf: &'b [u8]) -> Option<Rewrite<'b>> {
        let origin = match &self.origin {
            OriginAt::Local(o) => ClientOrigin {
                scheme: "",
                authority: (*o)?,
            },
            OriginAt::Client(span) => ClientOrigin {
                scheme: "http://",
                authority: std::str::from_utf8(buf.get(span.clone())?).ok()?,
            },
        };
        Some(Rewrite {
            upstream: self.upstream,
            origin,
            prefix: self.prefix,
        })
    }
}

impl Fast {
    /// Decide whether the fast path serves the request whose head is `buf[..head]`; if so,
    /// write its upstream head into `out`. `fresh` replaces the current credential (a replay).
    pub(super) fn plan<'s>(
        &mut self,
        shared: &'s Shared,
        info: &'s ListenerInfo,
        peer: Option<std::net::IpAddr>,
        head: usize,
        fresh: Option<Arc<Credential>>,
    ) -> Option<Plan<'s>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&self.buf[..head]) != Ok(httparse::Status::Complete(head)) {
            return None;
        }
        let (method, target) = (req.method?, req.path?);
        if req.version != Some(1) || method == "CONNECT" || !target.bytes().all(is_target_byte) {
            return None;
        }
        let mut fields = Fields::default();
        let mut kinds = [Field::Other; MAX_REQUEST_HEADERS];
        for (h, kind) in req.headers.iter().zip(&mut kinds) {
            *kind = classify(h.name);
            fields.note(*kind, h)?;
        }
        let (authority, path_and_query) = split_target(target)?;
        let Target::Provider {
            index,
            path_and_query: rest,
            prefix,
        } = shared
            .router
            .route_parts(&info.role, authority, path_and_query, fields.host)
        else {
            return None;
        };
        let route = &shared.router.providers[index];
        let provider = &*route.config;
        // Refusals (407, 403 caller_denied) are hyper's to answer.
        let caller = admit(info, &shared.gate, fields.proxy_authorization)?;
        if !shared.gate.may_use(caller, index) {
            return None;
        }
        if (info.loopback && info.role != Role::Main || prefix.is_some())
            && check_own_host(info, route, fields.host).is_err()
        {
            return None;
        }
        // The rules: a refusal is hyper's to answer (`policy::check`).
        if !crate::proxy::policy::permits(
            provider,
            method,
            rest,
            req.headers.iter().map(|h| h.name),
        ) {
            return None;
        }
        let credential = match fresh {
            Some(c) => c,
            None => route.reader.current(Instant::now())?,
        };
        let body = fields.content_length.unwrap_or(0);
        if !fits_replay(body) {
            return None;
        }
        let body = body as usize;

        let up = &provider.upstream;
        let out = &mut self.out;
        out.clear();
        put(out, &[method.as_bytes(), b" "]);
        put_target(out, path_parts(&up.base_path, rest), &credential);
        put(
            out,
            &[b" HTTP/1.1\r\nhost: ", up.host_header.as_bytes(), b"\r\n"],
        );
        let creds = credential.headers();
        for (h, kind) in req.headers.iter().zip(kinds) {
            let skip = drops_client_field(
                kind,
                h.name,
                creds,
                provider.forwarded,
                || fields.connection_names && named_in_connection(req.headers, h.name),
                &shared.metrics,
            );
            if !skip {
                put(out, &[h.name.as_bytes(), b": ", h.value, b"\r\n"]);
            }
        }
        if let Some(n) = fields.content_length {
            // Written from the value the body was read by (the client's field may have been
            // named in its `Connection`: dropping it would let the body pass as a request).
            // (Writing into a `Vec` can't fail.)
            let _ = write!(out, "content-length: {n}\r\n");
        }
        for (name, value) in creds {
            put(
                out,
                &[name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"],
            );
        }
        if provider.forwarded
            && let Some(ip) = peer
        {
            let mut h = http::HeaderMap::new();
            crate::proxy::headers::add_forwarded(&mut h, ip);
            for (name, value) in &h {
                put(
                    out,
                    &[name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"],
                );
            }
        }
        if shared.via {
            out.extend_from_slice(VIA_LINE);
        }
        out.extend_from_slice(b"\r\n");

        let access = (access_enabled() || shared.audit.is_some()).then(|| {
            let host = authority.or(fields.host).unwrap_or_default().to_owned();
            let path = path_and_query.split('?').next().unwrap_or("/").to_owned();
            (method.to_owned(), host, path)
        });
        // The client's origin is in the request's head (in `self.buf`): kept as a span, so the
        // plan does not borrow the buffer.
        let span = |s: &str| {
            let start = s.as_ptr() as usize - self.buf.as_ptr() as usize;
            start..start + s.len()
        };
        let local = info.local_origin.as_deref();
        let origin = match ClientOrigin::of(
            &info.role,
            prefix,
            authority.map(|a| ("http", a)),
            fields.host,
            local,
        ) {
            Some(o) if o.scheme.is_empty() => OriginAt::Local(local),
            Some(o) => OriginAt::Client(span(o.authority)),
            None => OriginAt::Local(None),
        };
        Some(Plan {
            route,
            index,
            credential,
            upstream: up,
            prefix,
            origin,
            len: head + body,
            body,
            head_method: method == "HEAD",
            idempotent: matches!(
                method,
                "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
            ),
            close: fields.close,
            access,
            caller,
            request_id: RequestId::of(fields.request_id),
        })
    }
}
