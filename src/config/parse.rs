//! TOML text → the serde picture ([`FileConfig`]), reporting every wrong-typed or unknown key,
//! not only the first.
//!
//! serde stops at the first value it can't take. So the text is parsed once into toml's spanned
//! tree (a syntax error is one error: nothing after it can be trusted), then deserialized again
//! and again: each failure is traced back to the key it belongs to, reported in the user's words
//! (`words.rs`), and that key is taken out of the tree before the next try. Spans come from the
//! tree, so every line stays right. The keys taken out are returned too: the checker's later
//! complaints about them ("missing") would only repeat the first error.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::check::{ConfigError, line_col};
use super::file::FileConfig;
use super::words;

/// More errors than this in one file and the rest are not worth reading.
const MAX_ERRORS: usize = 100;

/// What came out of the file: the serde picture of what could be read, the errors, and the key
/// paths that were dropped because of them.
pub(super) struct Parsed {
    pub file: FileConfig,
    pub errors: Vec<ConfigError>,
    pub dropped: Vec<String>,
}

/// Parse `text` (named `file` in messages). `Err` only for a syntax error (one error).
pub(super) fn parse(text: &str, file: &str) -> Result<Parsed, ConfigError> {
    let at = |span: Option<Range<usize>>, key: String, message: String| {
        let (line, column) = span.map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            key,
            message,
        }
    };
    let mut tree = DeTable::parse(text)
        .map_err(|e| at(e.span(), String::new(), words::syntax(e.message())))?;
    let mut errors = Vec::new();
    let mut dropped = Vec::new();
    loop {
        let e = match FileConfig::deserialize(toml::de::Deserializer::from(tree.clone())) {
            Ok(file) => {
                return Ok(Parsed {
                    file,
                    errors,
                    dropped,
                });
            }
            Err(e) => e,
        };
        let place = e.span().and_then(|s| find(tree.get_ref(), s.start));
        let Some(place) = place.filter(|_| errors.len() < MAX_ERRORS) else {
            // Nothing to take out (or too many): report this one and what could be read.
            errors.push(at(e.span(), String::new(), words::serde(e.message(), "")));
            return Ok(Parsed {
                file: FileConfig::default(),
                errors,
                dropped,
            });
        };
        errors.push(at(
            e.span(),
            place.shown.clone(),
            words::serde(e.message(), &place.shown),
        ));
        if !remove(tree.get_mut(), &place.path) {
            // Can't happen (`find` walked this path), but never loop on the same error.
            return Ok(Parsed {
                file: FileConfig::default(),
                errors,
                dropped,
            });
        }
        dropped.push(place.key);
    }
}

/// One step of a path in the tree: a table's key or an array-of-tables' index.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The entry an error points into.
struct Place {
    /// The steps to the entry to take out (a key in a table).
    path: Vec<Step>,
    /// Its dotted key path, as the checker names keys (`routes[0].listen`).
    key: String,
    /// The key path shown with the error: `key`, or an element of it (`providers.x.hosts[1]`).
    shown: String,
}

/// The deepest table entry whose key or value holds byte `pos`.
fn find(table: &DeTable<'_>, pos: usize) -> Option<Place> {
    let mut best: Option<Place> = None;
    walk(table, pos, &mut Vec::new(), &mut best);
    best
}

fn walk(table: &DeTable<'_>, pos: usize, path: &mut Vec<Step>, best: &mut Option<Place>) {
    for (k, v) in table {
        path.push(Step::Key(k.get_ref().to_string()));
        let holds = |s: Range<usize>| s.start <= pos && pos < s.end.max(s.start + 1);
        if holds(k.span()) || holds(v.span()) {
            let key = dotted(path);
            let mut shown = key.clone();
            if let DeValue::Array(a) = v.get_ref()
                && let Some(i) = a.iter().position(|x| holds(x.span()))
                && !matches!(a[i].get_ref(), DeValue::Table(_))
            {
                shown = format!("{key}[{i}]");
            }
            let deeper = best.as_ref().is_none_or(|b| b.path.len() < path.len());
            if deeper {
                *best = Some(Place {
                    path: path.clone(),
                    key,
                    shown,
                });
            }
        }
        match v.get_ref() {
            DeValue::Table(t) => walk(t, pos, path, best),
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    if let DeValue::Table(t) = item.get_ref() {
                        path.push(Step::Index(i));
                        walk(t, pos, path, best);
                        path.pop();
                    }
                }
            }
            _ => {}
        }
        path.pop();
    }
}

fn dotted(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Take the entry at `path` (ending in a key) out of the tree; whether there was one.
fn remove(table: &mut DeTable<'_>, path: &[Step]) -> bool {
    let Some((Step::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let mut table = table;
    let mut steps = parents.iter().peekable();
    while let Some(Step::Key(k)) = steps.next() {
        let Some(v) = table.get_mut(&spanned_key(k)) else {
            return false;
        };
        let v = match (v.get_mut(), steps.peek()) {
            (DeValue::Array(a), Some(Step::Index(i))) => {
                let i = *i;
                steps.next();
                match a.get_mut(i).map(|x| x.get_mut()) {
                    Some(DeValue::Table(t)) => t,
                    _ => return false,
                }
            }
            (DeValue::Table(t), _) => t,
            _ => return false,
        };
        table = v;
    }
    table.remove(&spanned_key(last)).is_some()
}

fn spanned_key(k: &str) -> Spanned<Cow<'static, str>> {
    Spanned::new(0..0, Cow::Owned(k.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wrong_type_is_reported_with_its_line_and_key() {
        let text = "[proxy]\nconnect_timeout = 30\nmax_connections = \"many\"\nallow_remote = \"yes\"\n\
                    [providers.a]\nhosts = [\"x\", 3]\nclient_id = true\n\
                    [[routes]]\nprovider = \"a\"\n[[routes]]\nprovider = \"a\"\nlisten = 7\n";
        let p = parse(text, "c.toml").unwrap();
        let mut got: Vec<(usize, &str)> =
            p.errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        got.sort();
        assert_eq!(
            got,
            [
                (2, "proxy.connect_timeout"),
                (3, "proxy.max_connections"),
                (4, "proxy.allow_remote"),
                (6, "providers.a.hosts[1]"),
                (7, "providers.a.client_id"),
                (12, "routes[1].listen"),
            ]
        );
        assert!(p.dropped.contains(&"providers.a.hosts".to_owned()));
        assert_eq!(p.file.routes.len(), 2);
    }

    #[test]
    fn a_syntax_error_is_one_error() {
        let e = parse("[proxy]\nlisten = \n", "c.toml").err().unwrap();
        assert_eq!(e.line, 2);
    }
}
