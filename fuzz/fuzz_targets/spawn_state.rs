//! What the executor trusts: any bytes in the memfd decode to a state or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = steward_protocol::decode(data) {
        // What decodes must encode back to something that decodes to the same.
        let again = steward_protocol::encode(&state).expect("a decoded state encodes");
        assert_eq!(steward_protocol::decode(&again).expect("round trip"), state);
    }
});
