//! What a control client can send (and, for stewardctl, what a manager can answer): any bytes
//! are a frame, "not complete yet", or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steward_protocol::control::{Reply, Request, decode_frame};

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame::<Request>(data);
    let _ = decode_frame::<Reply>(data);
});
