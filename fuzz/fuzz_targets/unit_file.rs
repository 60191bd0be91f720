//! Any bytes as a systemd unit file, and every value in it as each directive reader of
//! `stewardctl import` takes it: entries or an error naming the file and line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stewardctl::fuzz_unit_file(data);
});
