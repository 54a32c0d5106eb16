//! Where the authorization server sends the browser back, and what it brought (pure logic).
//!
//! [`plan`] decides from the provider's `redirect_uri` whether `login` can listen for the
//! redirect on this machine (an `http://` loopback URI, RFC 8252 §7.3) or must ask the user to
//! paste where the browser landed. [`check`] reads the redirect's query (RFC 6749 §4.1.2): the
//! `state` must be the one this login sent (§10.12), an `error` ends the login (§4.1.2.1), and
//! only then is the `code` handed over for the exchange.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

/// The path the redirect comes back to when the config names no `redirect_uri`.
pub const DEFAULT_PATH: &str = "/callback";

/// How the redirect reaches `login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A one-shot listener on this machine.
    Listen(ListenPlan),
    /// The user pastes the redirected URL (or the code). `redirect_uri` is sent as configured
    /// (`None`: the provider uses the one registered for the client). `why`: the reason when the
    /// user did not ask for `--paste`.
    Paste {
        redirect_uri: Option<String>,
        why: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenPlan {
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// The path the redirect arrives on; other paths are answered 404.
    pub path: String,
    /// `http://HOST` as the config wrote it (`localhost` stays `localhost`).
    origin: String,
    /// The rest of the URI after the port (path and query).
    rest: String,
    /// The configured URI, sent verbatim when it names a port.
    configured: Option<String>,
}

impl ListenPlan {
    /// The `redirect_uri` to send, once the listener is bound to `bound`.
    pub fn redirect_uri(&self, bound: SocketAddr) -> String {
        match &self.configured {
            Some(c) if self.bind.port() != 0 => c.clone(),
            _ => format!("{}:{}{}", self.origin, bound.port(), self.rest),
        }
    }
}

/// Decide how the redirect comes back, from the configured `redirect_uri` and `--paste`.
pub fn plan(configured: Option<&str>, paste: bool) -> Result<Plan, String> {
    let Some(raw) = configured else {
        if paste {
            return Ok(Plan::Paste {
                redirect_uri: None,
                why: None,
            });
        }
        return Ok(Plan::Listen(ListenPlan {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            path: DEFAULT_PATH.to_owned(),
            origin: "http://127.0.0.1".to_owned(),
            rest: DEFAULT_PATH.to_owned(),
            configured: None,
        }));
    };
    let uri: http::Uri = raw
        .parse()
        .map_err(|_| format!("redirect_uri `{raw}` is not a URL"))?;
    if paste {
        return Ok(Plan::Paste {
            redirect_uri: Some(raw.to_owned()),
            why: None,
        });
    }
    let host = uri.host().unwrap_or_default();
    let ip = crate::config::host::loopback_ip(host);
    if uri.scheme_str() != Some("http") || ip.is_none() {
        return Ok(Plan::Paste {
            redirect_uri: Some(raw.to_owned()),
            why: Some(format!(
                "redirect_uri {raw} is not a plain http:// address on this machine, so credproxy \
                 can't receive the redirect itself"
            )),
        });
    }
    let ip = ip.expect("checked above");
    let port = uri.port_u16().unwrap_or(0);
    let path = match uri.path() {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    let rest = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    Ok(Plan::Listen(ListenPlan {
        bind: SocketAddr::new(ip, port),
        path,
        origin: format!("http://{host}"),
        rest,
        configured: Some(raw.to_owned()),
    }))
}

/// The parameters of a redirect back from the authorization server (RFC 6749 §4.1.2).
///
/// `Debug` leaves the code out: with the PKCE verifier this process holds, it is a token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The issuer the response says it comes from (RFC 9207), checked by `issuer::check`.
    pub iss: Option<String>,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("code", &self.code.as_ref().map(|_| "[redacted]"))
            .field("state", &self.state)
            .field("error", &self.error)
            .field("error_description", &self.error_description)
            .field("iss", &self.iss)
            .finish()
    }
}

impl Params {
    /// From a query string (without the `?`).
    pub fn from_query(query: &str) -> Params {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*k {
                "code" => &mut p.code,
                "state" => &mut p.state,
                "error" => &mut p.error,
                "error_description" => &mut p.error_description,
                "iss" => &mut p.iss,
                _ => continue,
            };
            slot.get_or_insert_with(|| v.into_owned());
        }
        p
    }
}

/// Why a redirect (or what was pasted) does not lead to a code exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The server said no (`error=access_denied`, ...), with its description.
    Denied {
        error: String,
        description: Option<String>,
    },
    /// The `state` is not this login's (or is missing): possibly a forged redirect (§10.12).
    WrongState,
    /// An `error` redirect without any `state`: some servers drop it from error redirects, but
    /// any local process can send one too, so it can't end the login (the server's words are
    /// shown, and the listener keeps waiting).
    DeniedWithoutState {
        error: String,
        description: Option<String>,
    },
    /// No `code` and no `error`.
    NoCode,
    /// Nothing was pasted.
    Empty,
    /// What was pasted is neither a URL with a code nor a code.
    NotACode,
}

/// "the provider refused the authorization: ERROR (DESCRIPTION)", both made printable.
fn denied(f: &mut fmt::Formatter<'_>, error: &str, description: Option<&str>) -> fmt::Result {
    write!(
        f,
        "the provider refused the authorization: {}",
        printable(error)
    )?;
    if let Some(d) = description {
        write!(f, " ({})", printable(d))?;
    }
    Ok(())
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Denied { error, description } => denied(f, error, description.as_deref()),
            Refusal::DeniedWithoutState { error, description } => {
                denied(f, error, description.as_deref())?;
                f.write_str(
                    ", says a redirect that carries no state, so it may not come from the \
                     provider; the login goes on waiting",
                )
            }
            Refusal::WrongState => f.write_str(
                "the redirect's state does not match this login's (it may come from an older \
                 login attempt, or from someone else); the code was not used",
            ),
            Refusal::NoCode => f.write_str("the redirect carries neither a code nor an error"),
            Refusal::Empty => f.write_str("nothing was pasted"),
            Refusal::NotACode => {
                f.write_str("what was pasted is neither the URL the browser was sent to nor a code")
            }
        }
    }
}

impl Refusal {
    /// A redirect that does not prove it is this login's (no `state`, or another one): anyone on
    /// this machine can send it, so it is answered 400 and the login keeps waiting for the real
    /// one (until its timeout).
    pub fn unproven(&self) -> bool {
        matches!(
            self,
            Refusal::WrongState | Refusal::DeniedWithoutState { .. }
        )
    }
}

/// The code, if the redirect is this login's and carries one.
pub fn check(params: &Params, expected_state: &str) -> Result<String, Refusal> {
    let state_ok = params
        .state
        .as_deref()
        .is_some_and(|s| same(s, expected_state));
    if let Some(error) = &params.error {
        let (error, description) = (error.clone(), params.error_description.clone());
        if state_ok {
            return Err(Refusal::Denied { error, description });
        }
        if params.state.is_none() {
            return Err(Refusal::DeniedWithoutState { error, description });
        }
    }
    if !state_ok {
        return Err(Refusal::WrongState);
    }
    match &params.code {
        Some(c) if !c.is_empty() => Ok(c.clone()),
        _ => Err(Refusal::NoCode),
    }
}

/// What the user pasted, once its `state` checked out.
#[derive(Clone, PartialEq, Eq)]
pub struct Pasted {
    pub code: String,
    /// The redirected URL's `iss` (RFC 9207); `None` for a bare code, which can't carry one.
    pub iss: Option<String>,
    /// A bare code, not a URL.
    pub bare: bool,
}

/// What the user pasted: the redirected URL (its `state` is checked) or the bare code.
pub fn pasted(input: &str, expected_state: &str) -> Result<Pasted, Refusal> {
    let s = input.trim();
    if s.is_empty() {
        return Err(Refusal::Empty);
    }
    let looks_like_url = s.contains('?') || s.contains("code=") || s.contains("error=");
    if looks_like_url {
        let query = s.split_once('?').map_or(s, |(_, q)| q);
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        let params = Params::from_query(query);
        return check(&params, expected_state).map(|code| Pasted {
            code,
            iss: params.iss,
            bare: false,
        });
    }
    if s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Pasted {
            code: s.to_owned(),
            iss: None,
            bare: true,
        })
    } else {
        Err(Refusal::NotACode)
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Text from the redirect, safe for a terminal: no control characters, at most 200 characters.
pub fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(p: Plan) -> ListenPlan {
        match p {
            Plan::Listen(l) => l,
            other => panic!("expected a listener, got {other:?}"),
        }
    }

    #[test]
    fn no_redirect_uri_means_a_free_port_and_callback() {
        let l = listen(plan(None, false).unwrap());
        assert_eq!(l.bind, "127.0.0.1:0".parse().unwrap());
        assert_eq!(l.path, "/callback");
        assert_eq!(
            l.redirect_uri("127.0.0.1:4321".parse().unwrap()),
            "http://127.0.0.1:4321/callback"
        );
    }

    #[test]
    fn a_loopback_redirect_uri_is_listened_on_as_written() {
        let raw = "http://localhost:8765/oauth/cb";
        let l = listen(plan(Some(raw), false).unwrap());
        assert_eq!(l.bind, "127.0.0.1:8765".parse().unwrap());
        assert_eq!(l.path, "/oauth/cb");
        assert_eq!(l.redirect_uri("127.0.0.1:8765".parse().unwrap()), raw);

        let l = listen(plan(Some("http://[::1]:9000/cb"), false).unwrap());
        assert_eq!(l.bind, "[::1]:9000".parse().unwrap());
    }

    #[test]
    fn a_loopback_redirect_uri_without_port_gets_the_bound_one() {
        let l = listen(plan(Some("http://localhost/cb?x=1"), false).unwrap());
        assert_eq!(l.bind.port(), 0);
        assert_eq!(l.path, "/cb");
        assert_eq!(
            l.redirect_uri("127.0.0.1:5555".parse().unwrap()),
            "http://localhost:5555/cb?x=1"
        );
    }

    #[test]
    fn a_remote_redirect_uri_means_paste() {
        let p = plan(Some("https://app.example.com/cb"), false).unwrap();
        assert!(matches!(p, Plan::Paste { why: Some(_), .. }), "{p:?}");
        let p = plan(Some("https://localhost:8443/cb"), false).unwrap();
        assert!(matches!(p, Plan::Paste { why: Some(_), .. }), "{p:?}");
        let p = plan(Some("http://localhost:8765/cb"), true).unwrap();
        assert_eq!(
            p,
            Plan::Paste {
                redirect_uri: Some("http://localhost:8765/cb".into()),
                why: None
            }
        );
        assert_eq!(
            plan(None, true).unwrap(),
            Plan::Paste {
                redirect_uri: None,
                why: None
            }
        );
    }

    #[test]
    fn the_state_must_match() {
        let ok = Params::from_query("code=c0de&state=s1");
        assert_eq!(check(&ok, "s1"), Ok("c0de".into()));
        assert_eq!(check(&ok, "s2"), Err(Refusal::WrongState));
        let no_state = Params::from_query("code=c0de");
        assert_eq!(check(&no_state, "s1"), Err(Refusal::WrongState));
        let no_code = Params::from_query("state=s1");
        assert_eq!(check(&no_code, "s1"), Err(Refusal::NoCode));
    }

    #[test]
    fn debug_leaves_the_code_out() {
        let shown = format!("{:?}", Params::from_query("code=c0de&state=s1"));
        assert!(!shown.contains("c0de"), "{shown}");
        assert!(shown.contains("s1"), "{shown}");
    }

    #[test]
    fn an_error_redirect_is_a_refusal() {
        let p = Params::from_query("error=access_denied&error_description=User+said+no&state=s1");
        let r = check(&p, "s1").unwrap_err();
        assert_eq!(
            r.to_string(),
            "the provider refused the authorization: access_denied (User said no)"
        );
        // Without state (some servers; or any local process), the server's words, but unproven:
        // the login keeps waiting. With a wrong one, not this login's either.
        let r = check(&Params::from_query("error=access_denied"), "s1").unwrap_err();
        assert!(matches!(r, Refusal::DeniedWithoutState { .. }), "{r:?}");
        assert!(r.unproven() && Refusal::WrongState.unproven() && !Refusal::NoCode.unproven());
        assert!(r.to_string().contains("access_denied"), "{r}");
        assert_eq!(
            check(&Params::from_query("error=access_denied&state=zz"), "s1"),
            Err(Refusal::WrongState)
        );
    }

    #[test]
    fn pasted_url_or_code() {
        let code = |input: &str, state: &str| pasted(input, state).map(|p| p.code);
        let url = "http://localhost:8765/cb?code=abc&state=s1&iss=https%3A%2F%2Fa.example";
        assert_eq!(code(url, "s1"), Ok("abc".into()));
        let p = pasted(url, "s1").unwrap();
        assert_eq!(p.iss.as_deref(), Some("https://a.example"));
        assert!(!p.bare);
        assert_eq!(code(url, "s2"), Err(Refusal::WrongState));
        assert_eq!(code("  abc-123_x  \n", "s1"), Ok("abc-123_x".into()));
        assert!(pasted("abc", "s1").unwrap().bare);
        assert_eq!(code("?code=abc&state=s1#frag", "s1"), Ok("abc".into()));
        assert_eq!(code("", "s1"), Err(Refusal::Empty));
        assert_eq!(code("two words", "s1"), Err(Refusal::NotACode));
    }

    #[test]
    fn redirect_text_is_made_printable() {
        assert_eq!(printable("bad\u{1b}[31m\ntext"), "bad[31mtext");
        assert_eq!(printable(&"x".repeat(500)).len(), 200);
    }
}
