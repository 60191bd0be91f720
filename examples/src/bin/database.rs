//! An example of a service that says when it is ready (`ready = "notify"` in the `make run`
//! config): it "warms up" for a moment, reporting its progress as `STATUS=` (shown by
//! `stewardctl status database`), then says `READY=1`; what requires it starts only then.

use std::time::Duration;

fn main() -> anyhow::Result<()> {
    for step in 1..=3 {
        takeover::notify(&format!("STATUS=warming up ({step}/3)"))?;
        std::thread::sleep(Duration::from_millis(500));
    }
    takeover::notify("READY=1\nSTATUS=serving")?;
    println!("database: ready");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
