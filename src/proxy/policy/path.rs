//! A request path as the rules see it: percent-decoded and cut into segments, or refused as
//! ambiguous (a path that an upstream may read as another path than the one checked).
//!
//! Refused (fail closed, `400 ambiguous_path`): a dot-segment (`.`, `..`: RFC 3986 §5.2.4 would
//! remove it, and servers differ on whether they do), any encoded `.` (`%2e`: decoded into a
//! dot-segment by some servers and not by others), an encoded `/` or `\` (`%2f`, `%5c`: one
//! segment to credproxy, two to a server that decodes first), a `\` (a separator to some
//! servers), an empty segment inside the path (`/a//b`: many servers merge the slashes), an
//! encoded control character (`%00` ends the path for some), a `%` not followed by two hex
//! digits, a `;` in a segment, plain or encoded (`%3b`: servlet containers and Spring strip
//! `;parameters` and then normalize, so `/admin;x/users` is `/admin/users` and `/a/..;/b` is
//! `/b` to them), an encoded `%` (`%25`: an upstream that decodes twice reads `%252e` as `.`),
//! what does not decode to UTF-8 (an overlong `%c0%ae` is `.` to a lax decoder), and a path
//! that does not start with `/`. One trailing `/` is dropped (`/admin/` is checked as `/admin`),
//! so a rule need not be written twice. The query is not looked at.

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    DotSegment,
    EncodedDot,
    EncodedSlash,
    Backslash,
    EmptySegment,
    ControlChar,
    BadPercent,
    PathParameter,
    EncodedPercent,
    NotUtf8,
    NotAbsolute,
}

impl Ambiguity {
    /// What is wrong, for the 400's message.
    pub fn describe(self) -> &'static str {
        match self {
            Ambiguity::DotSegment => "a dot-segment (`.` or `..`)",
            Ambiguity::EncodedDot => "an encoded `.` (%2e)",
            Ambiguity::EncodedSlash => "an encoded `/` or `\\` (%2f, %5c)",
            Ambiguity::Backslash => "a `\\`",
            Ambiguity::EmptySegment => "an empty segment (`//`)",
            Ambiguity::ControlChar => "an encoded control character (such as %00)",
            Ambiguity::BadPercent => "a `%` not followed by two hex digits",
            Ambiguity::PathParameter => "a `;` (a path parameter, or %3b)",
            Ambiguity::EncodedPercent => "an encoded `%` (%25)",
            Ambiguity::NotUtf8 => "percent-encoded bytes that are not UTF-8 (such as %c0%ae)",
            Ambiguity::NotAbsolute => "no leading `/`",
        }
    }
}

/// The path of `path_and_query` (before any `?`; empty means `/`).
pub fn path_of(path_and_query: &str) -> &str {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    if path.is_empty() { "/" } else { path }
}

/// Call `f` with the decoded segments of `path` (no leading `/`, no trailing empty one), or
/// say why the path is ambiguous.
pub fn with_segments<R>(path: &str, f: impl FnOnce(&[&[u8]]) -> R) -> Result<R, Ambiguity> {
    let raw = path.as_bytes();
    let Some(body) = raw.strip_prefix(b"/") else {
        return Err(Ambiguity::NotAbsolute);
    };
    if body.contains(&b'\\') {
        return Err(Ambiguity::Backslash);
    }
    if body.iter().any(|b| b.is_ascii_control()) {
        return Err(Ambiguity::ControlChar);
    }
    if !body.contains(&b'%') {
        return split(body).map(|segs| f(&segs));
    }
    let decoded = decode(body)?;
    // Raw bytes are UTF-8 (`path` is a `str`); decoded ones must be too: a lax decoder reads
    // an overlong `%c0%ae` as `.`.
    if std::str::from_utf8(&decoded).is_err() {
        return Err(Ambiguity::NotUtf8);
    }
    split(&decoded).map(|segs| f(&segs))
}

/// Percent-decode, refusing what decodes to a separator, a dot, a `%` or a control character
/// (a decoded `;` is refused by [`split`], with the plain ones).
fn decode(raw: &[u8]) -> Result<Vec<u8>, Ambiguity> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(Ambiguity::BadPercent);
        };
        let c = h << 4 | l;
        match c {
            b'/' | b'\\' => return Err(Ambiguity::EncodedSlash),
            b'.' => return Err(Ambiguity::EncodedDot),
            b'%' => return Err(Ambiguity::EncodedPercent),
            c if c.is_ascii_control() => return Err(Ambiguity::ControlChar),
            c => out.push(c),
        }
        i += 3;
    }
    Ok(out)
}

/// The segments of a path's body (what follows its leading `/`), decoded.
fn split(body: &[u8]) -> Result<Vec<&[u8]>, Ambiguity> {
    let body = body.strip_suffix(b"/").unwrap_or(body);
    let mut segs = Vec::with_capacity(8);
    if body.is_empty() {
        return Ok(segs);
    }
    for seg in body.split(|&b| b == b'/') {
        match seg {
            b"" => return Err(Ambiguity::EmptySegment),
            b"." | b".." => return Err(Ambiguity::DotSegment),
            seg if seg.contains(&b';') => return Err(Ambiguity::PathParameter),
            seg => segs.push(seg),
        }
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Result<Vec<String>, Ambiguity> {
        with_segments(path, |s| {
            s.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
    }

    #[test]
    fn plain_paths_are_cut_into_segments() {
        assert_eq!(segs("/"), Ok(vec![]));
        assert_eq!(segs("/a/b"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(segs("/a/b/"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(segs("/a%20b/%41"), Ok(vec!["a b".into(), "A".into()]));
        assert_eq!(segs("/caf%C3%A9"), Ok(vec!["café".into()]));
        assert_eq!(
            segs("/a.b/..c/.d"),
            Ok(vec!["a.b".into(), "..c".into(), ".d".into()])
        );
    }

    #[test]
    fn what_servers_read_differently_is_refused() {
        for (path, why) in [
            ("/a/../b", Ambiguity::DotSegment),
            ("/a/./b", Ambiguity::DotSegment),
            ("/a/..", Ambiguity::DotSegment),
            ("/..", Ambiguity::DotSegment),
            ("/a/%2e%2e/b", Ambiguity::EncodedDot),
            ("/a/%2E/b", Ambiguity::EncodedDot),
            ("/a/.%2e/b", Ambiguity::EncodedDot),
            ("/file%2ejson", Ambiguity::EncodedDot),
            ("/a%2fb", Ambiguity::EncodedSlash),
            ("/a%2Fb", Ambiguity::EncodedSlash),
            ("/a%5cb", Ambiguity::EncodedSlash),
            ("/a\\b", Ambiguity::Backslash),
            ("/a//b", Ambiguity::EmptySegment),
            ("//a", Ambiguity::EmptySegment),
            ("/a%00", Ambiguity::ControlChar),
            ("/a%0a", Ambiguity::ControlChar),
            ("/a%zz", Ambiguity::BadPercent),
            ("/a%4", Ambiguity::BadPercent),
            ("/admin;x/users", Ambiguity::PathParameter),
            ("/repos/acme/..;/..;/admin/users", Ambiguity::PathParameter),
            ("/a;", Ambiguity::PathParameter),
            ("/a/;/b", Ambiguity::PathParameter),
            ("/admin%3bx/users", Ambiguity::PathParameter),
            ("/admin%3B/users", Ambiguity::PathParameter),
            ("/a%25", Ambiguity::EncodedPercent),
            ("/a/%252e%252e/b", Ambiguity::EncodedPercent),
            ("/a/%c0%ae%c0%ae/b", Ambiguity::NotUtf8),
            ("/a%ff", Ambiguity::NotUtf8),
            ("/a%C3", Ambiguity::NotUtf8),
            ("a/b", Ambiguity::NotAbsolute),
            ("*", Ambiguity::NotAbsolute),
        ] {
            assert_eq!(segs(path), Err(why), "{path}");
        }
    }

    #[test]
    fn the_query_is_not_the_path() {
        assert_eq!(path_of("/a?b=../c"), "/a");
        assert_eq!(path_of("?x"), "/");
        assert_eq!(path_of(""), "/");
        assert_eq!(path_of("/a"), "/a");
    }
}
