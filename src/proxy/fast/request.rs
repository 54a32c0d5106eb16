//! The fast path's request side: whether it serves a request, and the upstream head it writes.

use std::io::Write;

use super::*;

/// A request the fast path has taken on (its upstream head is in `Fast::out`).
pub(super) struct Plan<'s> {
    pub(super) route: &'s ProviderRoute,
    pub(super) index: usize,
    pub(super) credential: Arc<Credential>,
    pub(super) rewrite: Option<Rewrite<'s>>,
    /// Bytes of the request on the downstream connection: head and body.
    pub(super) len: usize,
    pub(super) body: usize,
    pub(super) head_method: bool,
    /// RFC 9110 §9.2.2: may be sent again when a reused connection closed without answering.
    pub(super) idempotent: bool,
    pub(super) close: bool,
    pub(super) access: Option<(String, String, String)>,
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
        if !proxy_auth_ok(info, shared.proxy_auth.as_ref(), fields.proxy_authorization) {
            return None;
        }
        if (info.loopback && info.role != Role::Main || prefix.is_some())
            && check_own_host(info, route, fields.host).is_err()
        {
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
        for part in path_parts(&up.base_path, rest) {
            out.extend_from_slice(part.as_bytes());
        }
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
        put(out, &[VIA_LINE, b"\r\n"]);

        let access = access_enabled().then(|| {
            let host = authority.or(fields.host).unwrap_or_default().to_owned();
            let path = path_and_query.split('?').next().unwrap_or("/").to_owned();
            (method.to_owned(), host, path)
        });
        let rewrite = (info.role != Role::Main || prefix.is_some()).then_some(Rewrite {
            upstream: up,
            info,
            prefix,
        });
        Some(Plan {
            route,
            index,
            credential,
            rewrite,
            len: head + body,
            body,
            head_method: method == "HEAD",
            idempotent: matches!(
                method,
                "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
            ),
            close: fields.close,
            access,
        })
    }
}
