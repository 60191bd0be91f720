//! Any bytes as an sd_notify datagram on steward's notify socket: a message or a refusal,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    steward::fuzz_notify(data);
});
