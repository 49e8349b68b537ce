//! `Config::parse` on arbitrary text: never panics; every error names the
//! file and a key (in backticks) or a parse position.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = rollgate::Config::parse(text, "fuzz.toml") {
        let msg = e.to_string();
        assert!(msg.starts_with("fuzz.toml: "), "{msg}");
        assert!(msg.contains('`') || msg.contains("line "), "{msg}");
    }
});
