//! Building token requests in every dialect the providers speak.
//!
//! A request is a list of RFC 6749 fields (`grant_type`, `client_id`, …) that is renamed through
//! the provider's `request_fields` (Baselime's `grantType`), extended with `token_params`, and
//! encoded as the provider's [`BodyFormat`]: form-urlencoded (RFC 6749 Appendix B), JSON with a
//! `Content-Type` of exactly `application/json` (API v1 refuses parameters), or multipart/form-data
//! (BACE, RFC 7578). Client authentication goes in a Basic header (RFC 6749 §2.3.1) or the body.
//! Pure functions: the network is elsewhere.

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::Full;
use rand::Rng as _;

use crate::config::{BodyFormat, ClientAuth, OAuth2Config};
use crate::secret::Secret;

/// Which grant a request carries (RFC 6749 §4.1.3, §4.3.2, §4.4.2, §6).
#[derive(Debug, Clone, Copy)]
pub enum GrantRequest<'a> {
    ClientCredentials,
    Password {
        username: &'a str,
        password: &'a Secret,
    },
    Refresh {
        refresh_token: &'a Secret,
        /// Sent as `Authorization: Bearer` when the provider wants it (BACE).
        access_token: Option<&'a Secret>,
        /// Baselime's refresh repeats the `redirect` of the code exchange.
        redirect_uri: Option<&'a str>,
    },
    AuthorizationCode {
        code: &'a str,
        redirect_uri: Option<&'a str>,
        /// RFC 7636 §4.5.
        code_verifier: Option<&'a str>,
    },
}

impl GrantRequest<'_> {
    pub fn grant_type(&self) -> &'static str {
        match self {
            GrantRequest::ClientCredentials => "client_credentials",
            GrantRequest::Password { .. } => "password",
            GrantRequest::Refresh { .. } => "refresh_token",
            GrantRequest::AuthorizationCode { .. } => "authorization_code",
        }
    }
}

/// One body field: the RFC 6749 name (renamed on the wire) and its value.
enum Value<'a> {
    Plain(String),
    Secret(&'a Secret),
    /// A configured secret's value of the moment.
    Held(Secret),
}

impl Value<'_> {
    fn as_str(&self) -> &str {
        match self {
            Value::Plain(s) => s,
            Value::Secret(s) => s.expose(),
            Value::Held(s) => s.expose(),
        }
    }
}

pub const USER_AGENT_VALUE: &str = concat!("credproxy/", env!("CARGO_PKG_VERSION"));

/// The HTTP request for `grant` to `cfg.token_url`.
pub fn token_request(cfg: &OAuth2Config, grant: &GrantRequest<'_>) -> Request<Full<Bytes>> {
    let mut fields: Vec<(&str, Value<'_>)> =
        vec![("grant_type", Value::Plain(grant.grant_type().into()))];
    let mut headers = HeaderMap::new();
    client_auth(cfg, &mut fields, &mut headers);
    let scope = || Value::Plain(cfg.scopes.join(&cfg.scope_separator));
    match *grant {
        GrantRequest::ClientCredentials => {
            if !cfg.scopes.is_empty() {
                fields.push(("scope", scope()));
            }
        }
        GrantRequest::Password { username, password } => {
            fields.push(("username", Value::Plain(username.into())));
            fields.push(("password", Value::Secret(password)));
            if !cfg.scopes.is_empty() {
                fields.push(("scope", scope()));
            }
        }
        GrantRequest::Refresh {
            refresh_token,
            access_token,
            redirect_uri,
        } => {
            // RFC 6749 §6: no scope means "the same scope", which is what we want.
            fields.push(("refresh_token", Value::Secret(refresh_token)));
            if let Some(r) = redirect_uri {
                fields.push(("redirect_uri", Value::Plain(r.into())));
            }
            if let Some(at) = access_token {
                headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {}", at.expose())));
            }
        }
        GrantRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            fields.push(("code", Value::Plain(code.into())));
            if let Some(r) = redirect_uri {
                fields.push(("redirect_uri", Value::Plain(r.into())));
            }
            if let Some(v) = code_verifier {
                fields.push(("code_verifier", Value::Plain(v.into())));
            }
        }
    }
    let mut wire: Vec<(&str, &str)> = fields
        .iter()
        .map(|(name, v)| (cfg.request_fields.get(name), v.as_str()))
        .collect();
    wire.extend(
        cfg.token_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let (content_type, body) = encode(cfg.format, &wire);
    // Read now: a followed file or a re-run command may have changed a value since the last.
    for (name, value) in crate::config::SecretHeader::fields(&cfg.token_headers) {
        headers.insert(name, value);
    }
    build(
        Method::POST,
        &cfg.token_url,
        headers,
        Some((content_type, body)),
    )
}

/// RFC 6749 §2.3.1: Basic with id and secret each form-urlencoded first, or both in the body. A
/// client with no secret is public and names itself in the body (§4.1.3, §3.2.1).
fn client_auth<'a>(
    cfg: &'a OAuth2Config,
    fields: &mut Vec<(&str, Value<'a>)>,
    headers: &mut HeaderMap,
) {
    let Some(id) = cfg.client_id.as_deref() else {
        return;
    };
    match (cfg.client_auth, &cfg.client_secret) {
        // The secret of the moment: it may be a file or a command credproxy follows.
        (ClientAuth::Basic, Some(secret)) => {
            headers.insert(AUTHORIZATION, basic(id, &secret.get()));
        }
        (_, secret) => {
            fields.push(("client_id", Value::Plain(id.into())));
            if let Some(s) = secret {
                fields.push(("client_secret", Value::Held(s.get())));
            }
        }
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`, marked sensitive.
pub fn basic(id: &str, secret: &Secret) -> HeaderValue {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(id), enc(secret.expose()));
    sensitive(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

/// A header value that is never printed (hyper and `http` honour the flag in `Debug`).
pub fn sensitive(s: &str) -> HeaderValue {
    // Only visible ASCII reaches here (tokens are checked when parsed, base64 is ASCII); a value
    // that still fails is sent empty rather than panicking, and the server refuses it.
    let mut v = HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// `(content type, body)` for the fields in `format`.
pub fn encode(format: BodyFormat, fields: &[(&str, &str)]) -> (HeaderValue, Bytes) {
    match format {
        BodyFormat::Form => {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                ser.append_pair(k, v);
            }
            (
                HeaderValue::from_static("application/x-www-form-urlencoded"),
                Bytes::from(ser.finish()),
            )
        }
        BodyFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
                .collect();
            let body = serde_json::to_vec(&map).unwrap_or_default();
            // Exactly this, no `; charset=utf-8`: API v1 refuses media type parameters.
            (
                HeaderValue::from_static("application/json"),
                Bytes::from(body),
            )
        }
        BodyFormat::Multipart => {
            let (boundary, body) = multipart(fields);
            let ct = format!("multipart/form-data; boundary={boundary}");
            (
                HeaderValue::from_str(&ct).expect("boundary is alphanumeric"),
                body,
            )
        }
    }
}

/// RFC 7578 form-data with text parts only, and a random boundary that no value contains.
fn multipart(fields: &[(&str, &str)]) -> (String, Bytes) {
    let boundary = loop {
        let b = format!("credproxy-{:032x}", rand::rng().random::<u128>());
        if fields
            .iter()
            .all(|(k, v)| !k.contains(&b) && !v.contains(&b))
        {
            break b;
        }
    };
    let mut body = String::new();
    for (name, value) in fields {
        // RFC 7578 §4.2 / the HTML spec: quote, CR and LF in a field name are percent-encoded.
        let name = name
            .replace('"', "%22")
            .replace('\r', "%0D")
            .replace('\n', "%0A");
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (boundary, Bytes::from(body))
}

/// A request with the headers every token-side call carries.
pub fn build(
    method: Method,
    url: &http::Uri,
    mut headers: HeaderMap,
    body: Option<(HeaderValue, Bytes)>,
) -> Request<Full<Bytes>> {
    headers
        .entry(ACCEPT)
        .or_insert(HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    let body = match body {
        Some((ct, b)) => {
            headers.insert(CONTENT_TYPE, ct);
            b
        }
        None => Bytes::new(),
    };
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = url.clone();
    *req.headers_mut() = headers;
    req
}

/// The RFC 7662 introspection (and RFC 7009 revocation) request: `token` plus the client's
/// credentials, authenticated like the token request (Apicbase wants them in the body).
pub fn token_about(
    cfg: &OAuth2Config,
    url: &http::Uri,
    token: &Secret,
    hint: Option<&str>,
) -> Request<Full<Bytes>> {
    let mut fields: Vec<(&str, Value<'_>)> = vec![("token", Value::Secret(token))];
    if let Some(h) = hint {
        fields.push(("token_type_hint", Value::Plain(h.into())));
    }
    let mut headers = HeaderMap::new();
    client_auth(cfg, &mut fields, &mut headers);
    // RFC 7662 §2.1 and RFC 7009 §2.1 define only the form encoding for these endpoints.
    let wire: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let body = encode(BodyFormat::Form, &wire);
    build(Method::POST, url, headers, Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FieldNames;

    pub(crate) fn cfg(format: BodyFormat, auth: ClientAuth) -> OAuth2Config {
        OAuth2Config {
            client_id: Some("my client".into()),
            client_secret: Some("s3cr:t&=".into()),
            scopes: vec!["read".into(), "write".into()],
            format,
            client_auth: auth,
            ..OAuth2Config::example()
        }
    }

    fn body(req: &Request<Full<Bytes>>) -> String {
        use http_body_util::BodyExt as _;
        let b = futures_util::FutureExt::now_or_never(req.body().clone().collect())
            .unwrap()
            .unwrap();
        String::from_utf8(b.to_bytes().to_vec()).unwrap()
    }

    fn header<'a>(req: &'a Request<Full<Bytes>>, name: &str) -> Option<&'a str> {
        req.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn basic_auth_encodes_id_and_secret_first() {
        let req = token_request(
            &cfg(BodyFormat::Form, ClientAuth::Basic),
            &GrantRequest::ClientCredentials,
        );
        // RFC 6749 §2.3.1: "my client" → "my+client", "s3cr:t&=" → "s3cr%3At%26%3D".
        let want = base64::engine::general_purpose::STANDARD.encode("my+client:s3cr%3At%26%3D");
        assert_eq!(
            header(&req, "authorization"),
            Some(format!("Basic {want}").as_str())
        );
        assert!(req.headers()["authorization"].is_sensitive());
        assert_eq!(body(&req), "grant_type=client_credentials&scope=read+write");
        assert_eq!(
            header(&req, "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(req.method(), Method::POST);
    }

    #[test]
    fn json_body_with_exact_content_type_and_renamed_fields() {
        let mut c = cfg(BodyFormat::Json, ClientAuth::Body);
        c.request_fields = FieldNames(vec![
            ("grant_type".into(), "grantType".into()),
            ("client_id".into(), "clientId".into()),
            ("client_secret".into(), "clientSecret".into()),
            ("redirect_uri".into(), "redirect".into()),
            ("refresh_token".into(), "refreshToken".into()),
        ]);
        let rt = Secret::from("rt-1");
        let req = token_request(
            &c,
            &GrantRequest::Refresh {
                refresh_token: &rt,
                access_token: None,
                redirect_uri: Some("https://app.example/cb"),
            },
        );
        assert_eq!(header(&req, "content-type"), Some("application/json"));
        assert_eq!(header(&req, "authorization"), None);
        let v: serde_json::Value = serde_json::from_str(&body(&req)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"grantType": "refresh_token", "clientId": "my client",
                "clientSecret": "s3cr:t&=", "redirect": "https://app.example/cb", "refreshToken": "rt-1"})
        );
    }

    #[test]
    fn multipart_refresh_with_bearer_and_extras() {
        let mut c = cfg(BodyFormat::Multipart, ClientAuth::Body);
        c.token_params = vec![("audience".into(), "api".into())];
        c.token_headers = vec![crate::config::SecretHeader::fixed(
            http::HeaderName::from_static("x-tenant"),
            "t1",
        )];
        let (rt, at) = (Secret::from("rt-1"), Secret::from("at-1"));
        let req = token_request(
            &c,
            &GrantRequest::Refresh {
                refresh_token: &rt,
                access_token: Some(&at),
                redirect_uri: None,
            },
        );
        assert_eq!(header(&req, "authorization"), Some("Bearer at-1"));
        assert_eq!(header(&req, "x-tenant"), Some("t1"));
        let ct = header(&req, "content-type").unwrap();
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let b = body(&req);
        assert!(b.starts_with(&format!("--{boundary}\r\n")));
        assert!(b.ends_with(&format!("--{boundary}--\r\n")));
        for (k, v) in [
            ("grant_type", "refresh_token"),
            ("client_id", "my client"),
            ("refresh_token", "rt-1"),
            ("audience", "api"),
        ] {
            let part = format!("Content-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n");
            assert!(b.contains(&part), "{k} in {b}");
        }
        assert!(!b.contains("scope"), "a refresh keeps the granted scope");
        // A fresh boundary each time.
        let again = token_request(&c, &GrantRequest::ClientCredentials);
        assert_ne!(header(&again, "content-type").unwrap(), ct);
    }

    #[test]
    fn password_and_code_grants() {
        let mut c = cfg(BodyFormat::Form, ClientAuth::Body);
        c.scope_separator = ",".into();
        let pw = Secret::from("pa ss");
        let req = token_request(
            &c,
            &GrantRequest::Password {
                username: "me@x",
                password: &pw,
            },
        );
        assert_eq!(
            body(&req),
            "grant_type=password&client_id=my+client&client_secret=s3cr%3At%26%3D&username=me%40x&password=pa+ss&scope=read%2Cwrite"
        );
        let req = token_request(
            &c,
            &GrantRequest::AuthorizationCode {
                code: "c0de",
                redirect_uri: Some("http://127.0.0.1:5000/cb"),
                code_verifier: Some("ver"),
            },
        );
        assert_eq!(
            body(&req),
            "grant_type=authorization_code&client_id=my+client&client_secret=s3cr%3At%26%3D&code=c0de&redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2Fcb&code_verifier=ver"
        );
    }

    #[test]
    fn public_clients_name_themselves_in_the_body() {
        let mut c = cfg(BodyFormat::Form, ClientAuth::Basic);
        c.client_secret = None;
        let req = token_request(&c, &GrantRequest::ClientCredentials);
        assert_eq!(header(&req, "authorization"), None);
        assert!(body(&req).contains("client_id=my+client"));
    }

    #[test]
    fn introspection_is_a_form_with_the_client() {
        let c = cfg(BodyFormat::Json, ClientAuth::Body);
        let url = "https://auth.example/introspect/".parse().unwrap();
        let req = token_about(&c, &url, &Secret::from("at"), None);
        assert_eq!(
            body(&req),
            "token=at&client_id=my+client&client_secret=s3cr%3At%26%3D"
        );
        assert_eq!(req.uri(), "https://auth.example/introspect/");
    }

    #[test]
    fn multipart_escapes_names() {
        let (b, body) = multipart(&[("a\"b\r\n", "v")]);
        let s = String::from_utf8(body.to_vec()).unwrap();
        assert!(s.contains("name=\"a%22b%0D%0A\""), "{s}");
        assert!(b.starts_with("credproxy-"));
    }
}
