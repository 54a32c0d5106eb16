//! Path globs, compiled once at config load and matched segment by segment (no regex).
//!
//! A glob is a `/`-separated list of segment patterns: `**` alone in a segment matches any
//! number of whole segments (zero included: `/repos/acme/**` matches `/repos/acme` itself); in
//! any other segment `*` matches a run of characters within that one segment (`*` alone: exactly
//! one segment, `v*`, `*.json`), and everything else matches itself. A trailing `/` means
//! nothing, in the glob as in the path (`policy/path.rs` drops it), so `/admin/` and `/admin`
//! are the same rule.
//!
//! A glob is written as the decoded path it matches (`/files/a b`, `/café`), and refused at
//! config load where it holds what a path is refused for (`path.rs`), since it could never
//! match: a `%` (a glob is not percent-decoded), an empty segment (`//`), a dot-segment (`.`,
//! `..`), a `;` or a `\`.
//!
//! Matching is a list of tokens against a list of items where one token kind ("star") matches
//! any run of items and every other token exactly one item: the greedy match with one
//! backtrack point ([`wild`]) decides it in O(tokens × items), with no recursion to blow up on
//! `/**/**/**`. The same function serves both levels: segments against `**`, bytes against `*`.

/// A compiled path glob, with the text it came from (for messages and `check`'s warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    segs: Vec<Seg>,
}

/// One segment of a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// `**`: any run of whole segments.
    Deep,
    /// A segment pattern: literal bytes and `*` runs (within the segment).
    One(Vec<Tok>),
}

/// One token of a segment pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Star,
    Byte(u8),
}

/// Why a glob can't be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobError {
    Empty,
    /// `**` next to other characters in one segment (`/a**`, `/**.json`).
    DeepInSegment(String),
    /// A `%`: globs are matched against decoded paths and are not decoded themselves.
    Percent,
    /// `//`.
    EmptySegment,
    /// A `.` or `..` segment.
    DotSegment,
    /// A `;` or a `\` (this character).
    Refused(char),
}

impl std::fmt::Display for GlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GlobError::Empty => f.write_str("is empty: give a path such as \"/repos/acme/**\""),
            GlobError::DeepInSegment(seg) => write!(
                f,
                "`**` must be a whole segment (\"/a/**\", \"/a/**/b\"), not part of `{seg}`; `*` \
                 matches within one segment (\"/files/*.json\")"
            ),
            GlobError::Percent => f.write_str(
                "has a `%`: globs match the decoded path, so write the character itself \
                 (\"/files/a b\", not \"/files/a%20b\"); a path with an encoded `%`, `/` or \
                 `.` is refused before the rules, so no glob needs one",
            ),
            GlobError::EmptySegment => f.write_str(
                "has an empty segment (`//`), which no path can match (such a path is refused \
                 as ambiguous): use one `/`",
            ),
            GlobError::DotSegment => f.write_str(
                "has a `.` or `..` segment, which no path can match (such a path is refused as \
                 ambiguous): write the path it stands for",
            ),
            GlobError::Refused(c) => write!(
                f,
                "has a `{c}`, which no path can match (such a path is refused as ambiguous): \
                 remove it"
            ),
        }
    }
}

impl Glob {
    /// Compile `text`. A glob that does not start with `/` compiles (it can never match a path,
    /// which `check` warns about: [`Glob::is_absolute`]).
    pub fn compile(text: &str) -> Result<Glob, GlobError> {
        if text.is_empty() {
            return Err(GlobError::Empty);
        }
        if text.contains('%') {
            return Err(GlobError::Percent);
        }
        if let Some(c) = text.chars().find(|c| matches!(c, ';' | '\\')) {
            return Err(GlobError::Refused(c));
        }
        if text.contains("//") {
            return Err(GlobError::EmptySegment);
        }
        let body = text.strip_prefix('/').unwrap_or(text);
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segs = Vec::new();
        if !body.is_empty() {
            for seg in body.split('/') {
                if seg == "**" {
                    // `/**/**` is `/**`.
                    if segs.last() != Some(&Seg::Deep) {
                        segs.push(Seg::Deep);
                    }
                    continue;
                }
                if seg == "." || seg == ".." {
                    return Err(GlobError::DotSegment);
                }
                if seg.contains("**") {
                    return Err(GlobError::DeepInSegment(seg.to_owned()));
                }
                let toks = seg
                    .bytes()
                    .map(|b| if b == b'*' { Tok::Star } else { Tok::Byte(b) })
                    .collect();
                segs.push(Seg::One(toks));
            }
        }
        Ok(Glob {
            text: text.to_owned(),
            segs,
        })
    }

    /// The glob as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Starts with `/`: otherwise no request path can match it.
    pub fn is_absolute(&self) -> bool {
        self.text.starts_with('/')
    }

    /// `/**` (or `/**/`): every path.
    pub fn is_everything(&self) -> bool {
        self.is_absolute() && self.segs == [Seg::Deep]
    }

    /// Whether the path made of `segments` (decoded, no dot-segments, no empty segment: see
    /// `path.rs`) matches. `fold_case`: letters compare without case (deny rules, see
    /// `policy.rs`).
    pub fn matches(&self, segments: &[&[u8]], fold_case: bool) -> bool {
        self.is_absolute()
            && wild(
                &self.segs,
                segments,
                |s| *s == Seg::Deep,
                |s, seg| match s {
                    Seg::Deep => true,
                    Seg::One(toks) => one(toks, seg, fold_case),
                },
            )
    }

    /// Whether every path this glob matches is also matched by `wider` (compared as a deny
    /// rule compares: without case). Conservative: `false` when it can't tell, so `check`
    /// never warns about a rule that can match.
    pub fn covered_by(&self, wider: &Glob) -> bool {
        if !self.is_absolute() || !wider.is_absolute() {
            return false;
        }
        // Each of this glob's segments is an item: a `**` here is only covered by a `**`
        // there; a segment pattern by `**`, by a `*`-only segment, or by a pattern that matches
        // its text when it is literal.
        wild(
            &wider.segs,
            &self.segs,
            |w| *w == Seg::Deep,
            |w, mine| match (w, mine) {
                (Seg::Deep, _) => true,
                (Seg::One(_), Seg::Deep) => false,
                (Seg::One(w), Seg::One(m)) => {
                    if !w.is_empty() && w.iter().all(|t| *t == Tok::Star) {
                        return true;
                    }
                    let literal: Option<Vec<u8>> = m
                        .iter()
                        .map(|t| match t {
                            Tok::Byte(b) => Some(*b),
                            Tok::Star => None,
                        })
                        .collect();
                    match literal {
                        Some(lit) => one(w, &lit, true),
                        None => w == m,
                    }
                }
            },
        )
    }
}

/// One segment against a segment pattern.
fn one(toks: &[Tok], seg: &[u8], fold_case: bool) -> bool {
    wild(
        toks,
        seg,
        |t| *t == Tok::Star,
        |t, b| match t {
            Tok::Star => true,
            Tok::Byte(c) if fold_case => c.eq_ignore_ascii_case(b),
            Tok::Byte(c) => c == b,
        },
    )
}

/// `pat` against `items`, where a token for which `star` holds matches any run of items (none
/// included) and any other token exactly one item for which `eq` holds. Greedy, backtracking to
/// the last star only: correct for this pattern language, and linear-ish (at most
/// `pat.len() × items.len()` steps).
fn wild<P, I>(
    pat: &[P],
    items: &[I],
    star: impl Fn(&P) -> bool,
    eq: impl Fn(&P, &I) -> bool,
) -> bool {
    let (mut p, mut i) = (0, 0);
    // (pattern index after the last star, item index that star is matched up to)
    let mut back: Option<(usize, usize)> = None;
    while i < items.len() {
        if p < pat.len() && star(&pat[p]) {
            back = Some((p + 1, i));
            p += 1;
        } else if p < pat.len() && eq(&pat[p], &items[i]) {
            p += 1;
            i += 1;
        } else if let Some((bp, bi)) = back {
            // The last star takes one more item; retry what follows it from there.
            back = Some((bp, bi + 1));
            p = bp;
            i = bi + 1;
        } else {
            return false;
        }
    }
    pat[p..].iter().all(star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<&[u8]> {
        path.strip_prefix('/')
            .unwrap()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::as_bytes)
            .collect()
    }

    fn m(glob: &str, path: &str) -> bool {
        Glob::compile(glob).unwrap().matches(&segs(path), false)
    }

    #[test]
    fn a_star_is_one_segment() {
        assert!(m("/repos/*", "/repos/acme"));
        assert!(!m("/repos/*", "/repos"));
        assert!(!m("/repos/*", "/repos/acme/issues"));
        assert!(m("/repos/*/issues", "/repos/acme/issues"));
        assert!(!m("/repos/*/issues", "/repos/acme/x/issues"));
        assert!(m("/*", "/x"));
        assert!(!m("/*", "/"));
    }

    #[test]
    fn a_star_within_a_segment_stays_within_it() {
        assert!(m("/files/*.json", "/files/a.json"));
        assert!(m("/files/*.json", "/files/.json"));
        assert!(!m("/files/*.json", "/files/a.json/b"));
        assert!(!m("/files/*.json", "/files/a/b.json"));
        assert!(m("/v*/x", "/v1/x"));
        assert!(m("/v*/x", "/v/x"));
        assert!(m("/a*b*c", "/aXXbYYbc"));
        assert!(!m("/a*b*c", "/aXXbYYbcd"));
    }

    #[test]
    fn a_double_star_is_any_number_of_segments_zero_included() {
        assert!(m("/repos/acme/**", "/repos/acme"));
        assert!(m("/repos/acme/**", "/repos/acme/issues"));
        assert!(m("/repos/acme/**", "/repos/acme/issues/1/comments"));
        assert!(!m("/repos/acme/**", "/repos/acmex"));
        assert!(!m("/repos/acme/**", "/repos/other/issues"));
        assert!(m("/**", "/"));
        assert!(m("/**", "/a/b/c"));
        assert!(m("/**/issues", "/issues"));
        assert!(m("/**/issues", "/repos/acme/issues"));
        assert!(!m("/**/issues", "/repos/acme/issues/1"));
        assert!(m("/a/**/b/**/c", "/a/x/b/y/z/c"));
        assert!(m("/a/**/b/**/c", "/a/b/c"));
        assert!(!m("/a/**/b/**/c", "/a/c/b"));
    }

    #[test]
    fn literals_and_the_root() {
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
        assert!(m("/admin", "/admin"));
        assert!(m("/admin/", "/admin"), "a trailing slash means nothing");
        assert!(!m("/admin", "/Admin"));
        assert!(
            Glob::compile("/admin")
                .unwrap()
                .matches(&segs("/ADMIN"), true)
        );
        assert!(!m("admin", "/admin"), "a relative glob never matches");
    }

    #[test]
    fn bad_globs_are_refused() {
        assert_eq!(Glob::compile(""), Err(GlobError::Empty));
        assert!(matches!(
            Glob::compile("/a**"),
            Err(GlobError::DeepInSegment(_))
        ));
        assert!(matches!(
            Glob::compile("/**.json"),
            Err(GlobError::DeepInSegment(_))
        ));
        for (glob, why) in [
            ("/admin%2fx", GlobError::Percent),
            ("/%61dmin/**", GlobError::Percent),
            ("/a//b", GlobError::EmptySegment),
            ("//", GlobError::EmptySegment),
            ("/a/**//", GlobError::EmptySegment),
            ("/a/../b", GlobError::DotSegment),
            ("/a/./b", GlobError::DotSegment),
            ("/..", GlobError::DotSegment),
            ("/admin;x/**", GlobError::Refused(';')),
            ("/a\\b", GlobError::Refused('\\')),
        ] {
            assert_eq!(Glob::compile(glob), Err(why), "{glob}");
        }
        for glob in ["/a.b/..c/.d", "/files/*.json", "/caf\u{e9}", "/a b"] {
            assert!(Glob::compile(glob).is_ok(), "{glob}");
        }
    }

    #[test]
    fn many_double_stars_stay_fast() {
        let g = Glob::compile(&"/**/a".repeat(30)).unwrap();
        let long: Vec<&[u8]> = std::iter::repeat_n(&b"a"[..], 200)
            .chain([&b"b"[..]])
            .collect();
        assert!(!g.matches(&long, false));
    }

    /// The obvious recursive matcher (exponential, fine for short inputs), to hold [`wild`]'s
    /// one-backtrack-point shortcut against.
    fn reference(segs: &[Seg], path: &[&[u8]]) -> bool {
        fn one_ref(toks: &[Tok], seg: &[u8]) -> bool {
            match toks.split_first() {
                None => seg.is_empty(),
                Some((Tok::Star, rest)) => {
                    one_ref(rest, seg) || (!seg.is_empty() && one_ref(toks, &seg[1..]))
                }
                Some((Tok::Byte(b), rest)) => seg.first() == Some(b) && one_ref(rest, &seg[1..]),
            }
        }
        match segs.split_first() {
            None => path.is_empty(),
            Some((Seg::Deep, rest)) => {
                reference(rest, path) || (!path.is_empty() && reference(segs, &path[1..]))
            }
            Some((Seg::One(toks), rest)) => {
                !path.is_empty() && one_ref(toks, path[0]) && reference(rest, &path[1..])
            }
        }
    }

    #[test]
    fn the_matcher_agrees_with_the_obvious_recursive_one() {
        // A small alphabet, so that matches are common; a fixed xorshift seed, so a failure
        // repeats.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n) as usize
        };
        let (mut matched, mut tried) = (0, 0);
        for _ in 0..20_000 {
            let glob: String = (0..1 + next(5))
                .map(|_| ["a", "b", "*", "**", "a*", "*b", "ab", "*a*"][next(8)])
                .fold(String::new(), |g, s| g + "/" + s);
            let path: Vec<Vec<u8>> = (0..next(6))
                .map(|_| (0..1 + next(3)).map(|_| b"ab"[next(2)]).collect())
                .collect();
            let path: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
            let g = Glob::compile(&glob).unwrap();
            let got = g.matches(&path, false);
            assert_eq!(got, reference(&g.segs, &path), "{glob} vs {path:?}");
            matched += usize::from(got);
            tried += 1;
        }
        assert!(
            matched > tried / 20,
            "the inputs hardly ever match: {matched}/{tried}"
        );
    }

    #[test]
    fn coverage_never_claims_what_a_path_disproves() {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n) as usize
        };
        let parts = ["a", "b", "*", "**", "a*", "*b", "ab", "A"];
        let mut covered = 0;
        for _ in 0..5_000 {
            let mut glob = || {
                (0..1 + next(4))
                    .map(|_| parts[next(8)])
                    .fold(String::new(), |g, s| g + "/" + s)
            };
            let (narrow, wide) = (
                Glob::compile(&glob()).unwrap(),
                Glob::compile(&glob()).unwrap(),
            );
            if !narrow.covered_by(&wide) {
                continue;
            }
            covered += 1;
            for _ in 0..50 {
                let path: Vec<Vec<u8>> = (0..next(5))
                    .map(|_| (0..1 + next(3)).map(|_| b"abA"[next(3)]).collect())
                    .collect();
                let path: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
                if narrow.matches(&path, false) {
                    assert!(
                        wide.matches(&path, true),
                        "{narrow:?} covered by {wide:?}, but not {path:?}"
                    );
                }
            }
        }
        assert!(covered > 100, "coverage hardly ever holds: {covered}");
    }

    #[test]
    fn coverage_is_conservative() {
        let c = |narrow: &str, wide: &str| {
            Glob::compile(narrow)
                .unwrap()
                .covered_by(&Glob::compile(wide).unwrap())
        };
        assert!(c("/admin/users", "/admin/**"));
        assert!(c("/admin/**", "/admin/**"));
        assert!(c("/admin", "/admin/**"));
        assert!(c("/repos/acme/issues", "/repos/*/issues"));
        assert!(c("/repos/*/issues", "/repos/*/issues"));
        assert!(c("/Admin/x", "/admin/**"), "deny compares without case");
        assert!(c("/a/b.json", "/a/*.json"));
        assert!(c("/anything/at/all", "/**"));
        assert!(!c("/admin/**", "/admin/*"));
        assert!(!c("/repos/**", "/repos/acme/**"));
        assert!(!c("/a/*.json", "/a/x*"), "can't tell: not covered");
        assert!(!c("/other", "/admin/**"));
    }
}
