//! What an upstream's 401 challenge says: does a `Bearer` challenge carry
//! `error="invalid_token"` (RFC 6750 §3.1)? Then the token is dead whatever its age, and the
//! refresher replaces it at once (the 401 rule's exception, `credential::Rejection`).
//!
//! `WWW-Authenticate` (RFC 9110 §11.6.1) is a comma-separated list of challenges, each an
//! auth-scheme (case-insensitive) followed by a token68 or by auth-params `name=value`, the value a
//! token or a quoted-string; one field may hold several challenges, and there may be several
//! fields. Commas separate both challenges and parameters, so a bare token not followed by `=`
//! starts the next challenge. Anything malformed ends the reading of that field: it says nothing.
//!
//! Read only for a 401 from a provider whose token can be refreshed: never on the hot path.

/// Whether any of these `WWW-Authenticate` field values holds a `Bearer` challenge with
/// `error="invalid_token"`.
pub fn invalid_token<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> bool {
    fields.into_iter().any(field_says_invalid_token)
}

fn field_says_invalid_token(value: &[u8]) -> bool {
    let mut p = Reader { s: value, i: 0 };
    // Whether the challenge being read is a Bearer one.
    let mut bearer = false;
    loop {
        p.skip(|b| b == b',' || is_ws(b));
        if p.done() {
            return false;
        }
        let name = p.token();
        if name.is_empty() {
            return false;
        }
        // A token68 after a scheme (`Basic dXNlcjpwYXNz==`): its `/`s and padding. It is the
        // whole of its challenge's credentials, so no auth-param of that challenge follows.
        if p.peek() == Some(b'/') || (p.peek() == Some(b'=') && p.token68_padding_follows()) {
            p.skip(|b| is_token68(b) || b == b'=');
            bearer = false;
            continue;
        }
        p.skip(is_ws);
        if p.peek() != Some(b'=') {
            // An auth-scheme: the challenge it starts is a Bearer one or not.
            bearer = name.eq_ignore_ascii_case(b"bearer");
            continue;
        }
        // An auth-param: name BWS "=" BWS ( token / quoted-string ).
        p.i += 1;
        p.skip(is_ws);
        let hit = if p.peek() == Some(b'"') {
            match p.quoted() {
                Some(v) => unescaped_eq(v, b"invalid_token"),
                None => return false,
            }
        } else {
            p.token() == b"invalid_token"
        };
        if bearer && hit && name.eq_ignore_ascii_case(b"error") {
            return true;
        }
    }
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    fn take(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        self.skip(f);
        &self.s[start..self.i]
    }

    fn token(&mut self) -> &'a [u8] {
        self.take(is_tchar)
    }

    /// At a `=`: is it a token68's padding (`=` then more `=`, a comma or the end) rather than
    /// an auth-param's?
    fn token68_padding_follows(&self) -> bool {
        let mut j = self.i;
        while self.s.get(j) == Some(&b'=') {
            j += 1;
        }
        while self.s.get(j).is_some_and(|&b| is_ws(b)) {
            j += 1;
        }
        j - self.i > 1 || matches!(self.s.get(j), None | Some(b','))
    }

    /// A quoted-string's inside (escapes still in), the closing quote consumed; `None` if it
    /// does not end.
    fn quoted(&mut self) -> Option<&'a [u8]> {
        self.i += 1;
        let start = self.i;
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    let v = &self.s[start..self.i];
                    self.i += 1;
                    return Some(v);
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
        None
    }
}

/// A quoted-string's inside equals `want` once its `\` escapes are undone.
fn unescaped_eq(quoted: &[u8], want: &[u8]) -> bool {
    let mut chars = quoted.iter().copied();
    let mut want = want.iter().copied();
    loop {
        let c = match chars.next() {
            Some(b'\\') => chars.next(),
            c => c,
        };
        match (c, want.next()) {
            (None, None) => return true,
            (a, b) if a == b => continue,
            _ => return false,
        }
    }
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §11.2 token68, without its trailing `=`s.
fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn says(fields: &[&str]) -> bool {
        invalid_token(fields.iter().map(|f| f.as_bytes()))
    }

    #[test]
    fn a_bearer_invalid_token_challenge_is_read_in_its_forms() {
        for yes in [
            r#"Bearer error="invalid_token""#,
            r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#,
            "bearer error=invalid_token",
            "BEARER   realm=api ,error = \"invalid_token\"",
            r#"Bearer error="invalid\_token""#,
            // Several challenges in one field, the Bearer one not first.
            r#"Basic realm="x", Bearer realm="y", error="invalid_token""#,
            r#"Basic dXNlcjpwYXNz==, Bearer error="invalid_token""#,
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Bearer error="invalid_token""#,
            "Bearer, Bearer error=invalid_token",
        ] {
            assert!(says(&[yes]), "{yes}");
        }
        // Several fields.
        assert!(says(&[
            r#"Basic realm="x""#,
            r#"Bearer error="invalid_token""#
        ]));
    }

    #[test]
    fn other_challenges_and_errors_say_nothing() {
        for no in [
            "",
            "Bearer",
            r#"Bearer realm="example""#,
            r#"Bearer error="insufficient_scope""#,
            r#"Bearer error="invalid_request""#,
            r#"Bearer error_description="invalid_token""#,
            r#"Bearer error="INVALID_TOKEN2""#,
            // Another scheme's `error`, even after a Bearer challenge.
            r#"Basic error="invalid_token""#,
            r#"Bearer realm="a", Basic error="invalid_token""#,
            r#"DPoP error="invalid_token""#,
            // Inside a quoted value it is not a parameter.
            r#"Bearer realm="error=invalid_token""#,
            r#"Bearer realm="x, error=invalid_token""#,
            // Malformed: an unterminated quote, a stray byte.
            r#"Bearer error="invalid_token"#,
            r#"Bearer @ error="invalid_token""#,
            "Bearer token68abc==",
        ] {
            assert!(!says(&[no]), "{no}");
        }
        assert!(!says(&[]));
    }
}
