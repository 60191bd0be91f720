//! `talk [--wait SECS] ADDRESS [LINE…]`: a tiny client for the example services, so that trying
//! them needs no netcat. ADDRESS is a unix socket path or HOST:PORT. Sends each LINE, then prints
//! what comes back until the service closes the connection (or SECS, default 2, pass without a
//! byte).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let mut wait = 2;
    if args.peek().is_some_and(|a| a == "--wait") {
        args.next();
        wait = match args.next().map(|s| s.parse()) {
            Some(Ok(secs)) => secs,
            _ => anyhow::bail!("--wait needs a number of seconds"),
        };
    }
    let Some(address) = args.next() else {
        anyhow::bail!(
            "usage: talk [--wait SECS] ADDRESS [LINE…]   (ADDRESS: /path/to.sock or HOST:PORT)"
        );
    };
    let lines: Vec<String> = args.collect();
    let timeout = Some(Duration::from_secs(wait));
    let mut stream: Box<dyn ReadWrite> = if address.contains('/') {
        let s = UnixStream::connect(&address)?;
        s.set_read_timeout(timeout)?;
        Box::new(s)
    } else {
        let s = TcpStream::connect(&address)?;
        s.set_read_timeout(timeout)?;
        Box::new(s)
    };
    for line in &lines {
        stream.write_all(format!("{line}\n").as_bytes())?;
    }
    stream.shut_write()?;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => std::io::stdout().write_all(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A connected stream of either kind.
trait ReadWrite: Read + Write {
    /// Tells the service we are done sending.
    fn shut_write(&self) -> std::io::Result<()>;
}

impl ReadWrite for UnixStream {
    fn shut_write(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl ReadWrite for TcpStream {
    fn shut_write(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}
