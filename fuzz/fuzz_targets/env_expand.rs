//! `${VAR}` expansion: never panics; text without `$` is unchanged; an error renders; a lookup
//! that knows every name never yields `Unset`.
#![no_main]

use credproxy::config::env::{EnvError, expand};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let known = |name: &str| Some(format!("<{name}>"));
    let unknown = |_: &str| None;
    let empty = |_: &str| Some(String::new());
    for lookup in [&known as &dyn Fn(&str) -> Option<String>, &unknown, &empty] {
        match expand(text, lookup) {
            Ok(out) => {
                if !text.contains('$') {
                    assert_eq!(out, text);
                }
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                assert!(text.contains('$'), "an error for text without `$`: {e:?}");
            }
        }
    }
    if let Err(EnvError::Unset(name)) = expand(text, &known) {
        panic!("`{name}` reported unset by a lookup that knows every name");
    }
});
