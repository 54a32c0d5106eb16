//! Config parsing and validation: `load_str` on arbitrary text never panics, every error renders
//! with a place and a message, and durations parse or are refused without overflow.
#![no_main]

use credproxy::config::{load_str, validate::parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let lookup = |name: &str| Some(format!("v-{name}"));
    match load_str(text, "fuzz.toml", &lookup) {
        Ok(cfg) => {
            // Everything built must be printable (Debug redacts secrets, never panics).
            let _ = format!("{cfg:?}");
            for p in &cfg.providers {
                for h in &p.hosts {
                    let _ = h.to_string();
                }
                let _ = p.upstream.origin();
            }
            for w in &cfg.warnings {
                assert!(!w.is_empty());
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error with no problems in it");
            let rendered = errors.to_string();
            assert!(rendered.starts_with("fuzz.toml"), "{rendered}");
            for e in &errors.0 {
                assert!(!e.message.is_empty(), "an error without a message: {e:?}");
                let _ = e.to_string();
            }
        }
    }
    // The duration grammar on its own ("1h30m", "250ms"), without TOML quoting in the way.
    let _ = parse_duration(text);
});
