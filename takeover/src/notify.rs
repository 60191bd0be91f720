//! Telling the service manager how the service is doing: the sd_notify protocol
//! (`READY=1`, `STATUS=…`), sent to the unix datagram socket `$NOTIFY_SOCKET` names.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (`KEY=VALUE` lines, e.g. `"READY=1\nSTATUS=serving"`) to the service manager.
/// Returns `Ok(false)` when the manager asked for no messages (`NOTIFY_SOCKET` is not set):
/// then there is nobody to tell, which is not an error.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_to(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

fn notify_to(path: Option<&std::ffi::OsStr>, state: &str) -> io::Result<bool> {
    let Some(path) = path else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // A leading `@` names a socket in the abstract namespace, as sd_notify(3) says.
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_message_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("takeover-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert!(super::notify_to(Some(path.as_os_str()), "READY=1\nSTATUS=ok").unwrap());
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        assert!(!super::notify_to(None, "READY=1").unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }
}
