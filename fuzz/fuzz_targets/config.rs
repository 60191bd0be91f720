//! Any text as a config file: every problem is a positioned diagnostic, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        steward::fuzz_config(text);
    }
});
