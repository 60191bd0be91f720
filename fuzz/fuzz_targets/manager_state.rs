//! What a new manager reads at a reexec: any bytes decode to a state or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steward_protocol::reexec;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = reexec::decode(data, reexec::VERSION) {
        let again = reexec::encode(&state).expect("a decoded state encodes");
        assert_eq!(
            reexec::decode(&again, reexec::VERSION).expect("round trip"),
            state
        );
    }
});
