//! Reading the socket-passing variables into (name, fd) pairs: the pure core of `take`, no
//! syscalls.

use std::collections::HashSet;
use std::os::fd::RawFd;

use crate::Error;

/// The first fd of the systemd form (`SD_LISTEN_FDS_START`): `LISTEN_FDS=n` means fds 3 … 3+n−1.
pub const FIRST_FD: RawFd = 3;

/// The name systemd gives a socket when `LISTEN_FDNAMES` is not set.
pub const UNKNOWN: &str = "unknown";

/// The most fds `LISTEN_FDS` may announce: the kernel's default `fs.nr_open`. A larger count
/// cannot be real, and is refused before a list that long is built.
const MAX_COUNT: u64 = 1 << 20;

/// The variables `take` reads, and removes once it succeeded.
pub(crate) const VARIABLES: [&str; 4] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "SOCKET_TAKEOVER",
];

/// Reads the passed sockets from the variables `get` returns, for the process `pid`, without
/// checking the fds themselves.
///
/// Accepted, alone or together:
/// - systemd's `LISTEN_PID` (must be `pid`), `LISTEN_FDS=n` (fds 3 … 3+n−1) and
///   `LISTEN_FDNAMES=a:b:…` (n names; without it every socket is named `unknown`);
/// - `SOCKET_TAKEOVER=1`: with `LISTEN_FDS` it adds nothing, alone it means one socket at fd 3;
/// - `SOCKET_TAKEOVER=KEY:FD;KEY:FD` (SerenityOS): the keys are the names, and each entry is
///   split at its last `:` since a key may be a path holding `:`. A trailing `;` is allowed. With
///   `LISTEN_FDS` too, the map must pass exactly the fds 3 … 3+n−1.
///
/// Nothing set gives an empty list. The pairs come in passing order.
pub fn parse(
    get: impl Fn(&str) -> Option<String>,
    pid: u32,
) -> Result<Vec<(String, RawFd)>, Error> {
    if let Some(value) = get("LISTEN_PID") {
        let listen_pid = number("LISTEN_PID", &value, "pid", u32::MAX.into())?;
        let listen_pid = u32::try_from(listen_pid).expect("bounded by u32::MAX");
        if listen_pid != pid {
            return Err(Error::ForeignPid { listen_pid, pid });
        }
    }
    let listen_fds = get("LISTEN_FDS")
        .map(|value| number("LISTEN_FDS", &value, "fd count", MAX_COUNT))
        .transpose()?
        .map(|n| usize::try_from(n).expect("bounded by MAX_COUNT"));
    let names = get("LISTEN_FDNAMES").map(|value| split_names(&value));

    let passed = match get("SOCKET_TAKEOVER") {
        Some(map) if map != "1" => {
            let entries = map_entries(&map)?;
            if let Some(n) = listen_fds {
                let mut fds: Vec<RawFd> = entries.iter().map(|&(_, fd)| fd).collect();
                fds.sort_unstable();
                if !fds.iter().copied().eq(systemd_fds(n)) {
                    return Err(Error::Disagree { map, listen_fds: n });
                }
            }
            if let Some(names) = &names {
                check_count(names.len(), entries.len())?;
            }
            entries
        }
        flag => {
            let n = listen_fds.unwrap_or(usize::from(flag.is_some()));
            let names = match names {
                Some(names) => {
                    check_count(names.len(), n)?;
                    names
                }
                None => vec![UNKNOWN.to_string(); n],
            };
            names.into_iter().zip(systemd_fds(n)).collect()
        }
    };
    Ok(passed)
}

/// fds 3 … 3+n−1.
fn systemd_fds(n: usize) -> impl Iterator<Item = RawFd> {
    (0..n).map(|i| FIRST_FD + RawFd::try_from(i).expect("count bounded when parsed"))
}

/// A decimal number of at most `max`: digits only (no sign, no spaces), as systemd reads them.
fn number(variable: &'static str, value: &str, what: &'static str, max: u64) -> Result<u64, Error> {
    let bad = || Error::BadNumber {
        variable,
        value: value.to_string(),
        what,
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match value.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad()),
    }
}

/// The names of `LISTEN_FDNAMES`; an empty value is no names.
fn split_names(value: &str) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    value.split(':').map(str::to_string).collect()
}

fn check_count(names: usize, fds: usize) -> Result<(), Error> {
    if names == fds {
        Ok(())
    } else {
        Err(Error::NameCount { names, fds })
    }
}

/// The entries of `KEY:FD;KEY:FD[;]`, in order.
fn map_entries(map: &str) -> Result<Vec<(String, RawFd)>, Error> {
    let mut pieces: Vec<&str> = map.split(';').collect();
    // A trailing `;` (and so an empty map) is allowed; an empty entry elsewhere is not.
    if pieces.last() == Some(&"") {
        pieces.pop();
    }
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(pieces.len());
    for entry in pieces {
        // The last ':' separates: a unix socket path may itself hold ':'.
        let (key, fd) = entry.rsplit_once(':').ok_or_else(|| Error::BadEntry {
            entry: entry.to_string(),
        })?;
        if key.is_empty() {
            return Err(Error::BadEntry {
                entry: entry.to_string(),
            });
        }
        let fd = number("SOCKET_TAKEOVER", fd, "fd", RawFd::MAX as u64)?;
        let fd = RawFd::try_from(fd).expect("bounded by RawFd::MAX");
        if !seen.insert(fd) {
            return Err(Error::DuplicateFd { fd });
        }
        entries.push((key.to_string(), fd));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const PID: u32 = 4242;

    fn run(vars: &[(&str, &str)]) -> Result<Vec<(String, RawFd)>, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(|name| vars.get(name).cloned(), PID)
    }

    fn ok(vars: &[(&str, &str)]) -> Vec<(String, RawFd)> {
        run(vars).unwrap_or_else(|e| panic!("{vars:?}: {e}"))
    }

    fn pairs(expected: &[(&str, RawFd)]) -> Vec<(String, RawFd)> {
        expected
            .iter()
            .map(|&(n, fd)| (n.to_string(), fd))
            .collect()
    }

    #[test]
    fn nothing_set_is_an_empty_set() {
        assert_eq!(ok(&[]), pairs(&[]));
        assert_eq!(ok(&[("LISTEN_PID", "4242")]), pairs(&[]));
        assert_eq!(ok(&[("LISTEN_FDS", "0")]), pairs(&[]));
        assert_eq!(
            ok(&[("LISTEN_FDS", "0"), ("LISTEN_FDNAMES", "")]),
            pairs(&[])
        );
    }

    #[test]
    fn systemd_form_with_names() {
        let vars = [
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "3"),
            ("LISTEN_FDNAMES", "web:admin:web"),
        ];
        assert_eq!(ok(&vars), pairs(&[("web", 3), ("admin", 4), ("web", 5)]));
    }

    #[test]
    fn systemd_form_without_names_is_unknown() {
        let vars = [("LISTEN_PID", "4242"), ("LISTEN_FDS", "2")];
        assert_eq!(ok(&vars), pairs(&[("unknown", 3), ("unknown", 4)]));
    }

    #[test]
    fn listen_pid_is_optional() {
        assert_eq!(ok(&[("LISTEN_FDS", "1")]), pairs(&[("unknown", 3)]));
    }

    #[test]
    fn flag_alongside_listen_fds_adds_nothing() {
        let vars = [
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "a:b"),
            ("SOCKET_TAKEOVER", "1"),
        ];
        assert_eq!(ok(&vars), pairs(&[("a", 3), ("b", 4)]));
        let zero = [("LISTEN_FDS", "0"), ("SOCKET_TAKEOVER", "1")];
        assert_eq!(ok(&zero), pairs(&[]));
    }

    #[test]
    fn flag_alone_is_one_socket_at_fd_3() {
        assert_eq!(ok(&[("SOCKET_TAKEOVER", "1")]), pairs(&[("unknown", 3)]));
        let named = [("SOCKET_TAKEOVER", "1"), ("LISTEN_FDNAMES", "connection")];
        assert_eq!(ok(&named), pairs(&[("connection", 3)]));
    }

    #[test]
    fn accept_mode_instance() {
        let vars = [
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "connection"),
            ("SOCKET_TAKEOVER", "1"),
        ];
        assert_eq!(ok(&vars), pairs(&[("connection", 3)]));
    }

    #[test]
    fn map_form_keys_are_the_names() {
        let vars = [("SOCKET_TAKEOVER", "/run/portal/echo:3;web:4")];
        assert_eq!(ok(&vars), pairs(&[("/run/portal/echo", 3), ("web", 4)]));
    }

    #[test]
    fn map_form_splits_at_the_last_colon() {
        let vars = [("SOCKET_TAKEOVER", "/run/a:b::c:3;x:y:7")];
        assert_eq!(ok(&vars), pairs(&[("/run/a:b::c", 3), ("x:y", 7)]));
    }

    #[test]
    fn map_form_allows_a_trailing_semicolon() {
        let vars = [("SOCKET_TAKEOVER", "/tmp/portal/a:3;b:4;")];
        assert_eq!(ok(&vars), pairs(&[("/tmp/portal/a", 3), ("b", 4)]));
        assert_eq!(ok(&[("SOCKET_TAKEOVER", "")]), pairs(&[]));
    }

    #[test]
    fn map_form_keeps_any_fd_and_its_order() {
        let vars = [("SOCKET_TAKEOVER", "late:9;early:0")];
        assert_eq!(ok(&vars), pairs(&[("late", 9), ("early", 0)]));
    }

    #[test]
    fn map_form_with_agreeing_listen_fds() {
        let vars = [
            ("LISTEN_PID", "4242"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "echo:web"),
            ("SOCKET_TAKEOVER", "web:4;/run/echo:3"),
        ];
        assert_eq!(ok(&vars), pairs(&[("web", 4), ("/run/echo", 3)]));
    }

    #[test]
    fn refuses_another_pid() {
        let vars = [("LISTEN_PID", "17"), ("LISTEN_FDS", "1")];
        let err = run(&vars).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ForeignPid {
                    listen_pid: 17,
                    pid: PID
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("LISTEN_PID=17"), "{err}");
        // Whatever the form: the variables were meant for another process.
        let map = [("LISTEN_PID", "17"), ("SOCKET_TAKEOVER", "a:3")];
        assert!(matches!(run(&map), Err(Error::ForeignPid { .. })));
    }

    #[test]
    fn refuses_malformed_numbers() {
        for (variable, value) in [
            ("LISTEN_PID", ""),
            ("LISTEN_PID", "-1"),
            ("LISTEN_PID", "+4242"),
            ("LISTEN_PID", "4242 "),
            ("LISTEN_PID", "99999999999"),
            ("LISTEN_FDS", "two"),
            ("LISTEN_FDS", ""),
            ("LISTEN_FDS", "-1"),
            ("LISTEN_FDS", "0x2"),
            ("LISTEN_FDS", "1048577"),
        ] {
            let err = run(&[(variable, value)]).unwrap_err();
            match &err {
                Error::BadNumber { variable: v, .. } => assert_eq!(*v, variable),
                other => panic!("{variable}={value:?}: {other:?}"),
            }
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }

    #[test]
    fn refuses_malformed_map_fds() {
        for map in ["a:", "a:x", "a:-3", "a:3 ", "a:99999999999"] {
            let err = run(&[("SOCKET_TAKEOVER", map)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::BadNumber {
                        variable: "SOCKET_TAKEOVER",
                        ..
                    }
                ),
                "{map}: {err:?}"
            );
        }
    }

    #[test]
    fn refuses_malformed_map_entries() {
        for (map, entry) in [("3", "3"), (":3", ":3"), ("a:3;;b:4", ""), ("0", "0")] {
            match run(&[("SOCKET_TAKEOVER", map)]) {
                Err(Error::BadEntry { entry: e }) => assert_eq!(e, entry, "{map}"),
                other => panic!("{map}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_an_fd_passed_twice() {
        let err = run(&[("SOCKET_TAKEOVER", "a:3;b:3")]).unwrap_err();
        assert!(matches!(err, Error::DuplicateFd { fd: 3 }), "{err:?}");
    }

    #[test]
    fn refuses_a_name_count_mismatch() {
        let cases: [&[(&str, &str)]; 5] = [
            &[("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "a")],
            &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "a:b")],
            &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "")],
            &[("LISTEN_FDNAMES", "a")],
            &[("SOCKET_TAKEOVER", "a:3;b:4"), ("LISTEN_FDNAMES", "a")],
        ];
        for vars in cases {
            let err = run(vars).unwrap_err();
            assert!(matches!(err, Error::NameCount { .. }), "{vars:?}: {err:?}");
            assert!(err.to_string().contains("LISTEN_FDNAMES"), "{err}");
        }
    }

    #[test]
    fn refuses_a_map_that_disagrees_with_listen_fds() {
        for (n, map) in [("1", "a:4"), ("2", "a:3"), ("1", "a:3;b:4"), ("0", "a:3")] {
            let err = run(&[("LISTEN_FDS", n), ("SOCKET_TAKEOVER", map)]).unwrap_err();
            assert!(matches!(err, Error::Disagree { .. }), "{n} {map}: {err:?}");
            let text = err.to_string();
            assert!(
                text.contains("SOCKET_TAKEOVER") && text.contains("LISTEN_FDS"),
                "{text}"
            );
        }
    }
}
