//! Fd placement: the service's sockets at 3, 4, …, a readiness pipe at its fixed number, the
//! status pipe out of their way, and every other fd closed.
//!
//! The decision is a pure function of the spawn state ([`plan`]); carrying it out goes through
//! the narrow [`FdTable`] trait, so the tests run the same code against a model of the fd table
//! and check every collision the manager could hand us.

use alloc::vec::Vec;

use rustix::fd::RawFd;
use steward_protocol::{SpawnState, Stdio};

use crate::sys::{self, Errno};

/// What [`place`] does, decided before any fd moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdPlan {
    /// Above every target: lifted copies go from here up, and are closed before exec.
    pub first_free: RawFd,
    /// Sources sitting below `first_free`, each once, in ascending order. A dup2 onto a target
    /// could destroy them, so they are all copied above `first_free` before the first dup2.
    pub lift: Vec<RawFd>,
    /// `(source, target)` for each socket, targets 3, 4, … in the state's order.
    pub sockets: Vec<(RawFd, RawFd)>,
    /// `(source, target)` for each fd at a fixed number (above the sockets).
    pub fixed: Vec<(RawFd, RawFd)>,
    /// The status pipe's write end as received.
    pub status: RawFd,
    /// The sources of `Stdio::Fd` slots, which must survive until stdio is set up.
    pub stdio_sources: Vec<RawFd>,
}

/// Decides where every fd named by `state` goes.
pub fn plan(state: &SpawnState) -> FdPlan {
    let sockets: Vec<(RawFd, RawFd)> = state.fds.iter().copied().zip(3..).collect();
    let fixed: Vec<(RawFd, RawFd)> = state
        .fds_at
        .iter()
        .map(|at| (at.source, at.target))
        .collect();
    let after_sockets = 3 + RawFd::try_from(state.fds.len()).unwrap_or(RawFd::MAX - 3);
    let first_free = fixed
        .iter()
        .map(|&(_, target)| target.saturating_add(1))
        .fold(after_sockets, RawFd::max);
    let mut stdio_sources: Vec<RawFd> = state
        .stdio
        .iter()
        .filter_map(|s| match s {
            Stdio::Fd(fd) => Some(*fd),
            Stdio::Inherit | Stdio::Null | Stdio::Path(_) => None,
        })
        .collect();
    stdio_sources.sort_unstable();
    stdio_sources.dedup();
    let mut lift: Vec<RawFd> = sockets
        .iter()
        .chain(fixed.iter())
        .map(|&(source, _)| source)
        .chain(stdio_sources.iter().copied())
        .chain([state.status_fd])
        .filter(|&fd| fd < first_free)
        .collect();
    lift.sort_unstable();
    lift.dedup();
    FdPlan {
        first_free,
        lift,
        sockets,
        fixed,
        status: state.status_fd,
        stdio_sources,
    }
}

impl FdPlan {
    /// The first fd after the sockets: every fd from here up but the fixed ones is closed.
    fn after_sockets(&self) -> RawFd {
        3 + RawFd::try_from(self.sockets.len()).unwrap_or(RawFd::MAX - 3)
    }

    /// Whether every fixed target is above the sockets and named once (the manager's checks
    /// make it so; a state that breaks them is refused rather than half placed).
    fn sound(&self) -> bool {
        let first = self.after_sockets();
        self.fixed.iter().enumerate().all(|(i, &(_, target))| {
            target >= first && !self.fixed[..i].iter().any(|&(_, t)| t == target)
        })
    }
}

/// The fd operations placement needs; the real one is [`Kernel`].
pub trait FdTable {
    /// Copies `fd` to the lowest free number `>= min`, close-on-exec.
    fn dup_above(&mut self, fd: RawFd, min: RawFd) -> Result<RawFd, Errno>;
    /// Makes `dst` a copy of `src` with FD_CLOEXEC clear.
    fn dup2(&mut self, src: RawFd, dst: RawFd) -> Result<(), Errno>;
    /// Sets FD_CLOEXEC.
    fn set_cloexec(&mut self, fd: RawFd) -> Result<(), Errno>;
    /// Clears O_NONBLOCK (on the open file, which the manager shares).
    fn clear_nonblock(&mut self, fd: RawFd) -> Result<(), Errno>;
    /// Closes every fd in `first..=last`.
    fn close_range(&mut self, first: u32, last: u32) -> Result<(), Errno>;
}

/// The process's real fd table.
pub struct Kernel;

impl FdTable for Kernel {
    fn dup_above(&mut self, fd: RawFd, min: RawFd) -> Result<RawFd, Errno> {
        sys::dup_above(fd, min)
    }

    fn dup2(&mut self, src: RawFd, dst: RawFd) -> Result<(), Errno> {
        sys::dup2(src, dst)
    }

    fn set_cloexec(&mut self, fd: RawFd) -> Result<(), Errno> {
        sys::set_cloexec(fd, true)
    }

    fn clear_nonblock(&mut self, fd: RawFd) -> Result<(), Errno> {
        sys::clear_nonblock(fd)
    }

    fn close_range(&mut self, first: u32, last: u32) -> Result<(), Errno> {
        match sys::close_range(first, last) {
            Err(Errno::ENOSYS) => {
                // Kernels before 5.9: close what /proc lists instead.
                for fd in sys::open_fds()? {
                    if u32::try_from(fd).is_ok_and(|fd| (first..=last).contains(&fd)) {
                        // EBADF here is the listing's own, already closed, directory fd.
                        let _ = sys::close(fd);
                    }
                }
                Ok(())
            }
            other => other,
        }
    }
}

/// Where things are once the sockets are placed.
#[derive(Debug)]
pub struct Placed {
    first_free: RawFd,
    /// `(original, copy)` for every lifted source.
    lifted: Vec<(RawFd, RawFd)>,
}

impl Placed {
    /// The fd that now holds what `fd` held when the executor started.
    pub fn current(&self, fd: RawFd) -> RawFd {
        self.lifted
            .iter()
            .find(|&&(from, _)| from == fd)
            .map_or(fd, |&(_, to)| to)
    }

    /// Closes the copies stdio was made from: everything from `first_free` up but the status
    /// pipe.
    pub fn close_stdio_sources(
        &self,
        table: &mut impl FdTable,
        status: RawFd,
    ) -> Result<(), Errno> {
        close_all_but(table, self.first_free, &[status])
    }
}

/// Carries out `plan`. `status` follows the status pipe as it moves, so a failure halfway still
/// reaches the manager.
pub fn place(plan: &FdPlan, table: &mut impl FdTable, status: &mut RawFd) -> Result<Placed, Errno> {
    if !plan.sound() {
        return Err(Errno::EINVAL);
    }
    let mut placed = Placed {
        first_free: plan.first_free,
        lifted: Vec::new(),
    };
    for &fd in &plan.lift {
        let copy = table.dup_above(fd, plan.first_free)?;
        placed.lifted.push((fd, copy));
        if fd == plan.status {
            *status = copy;
        }
    }
    // The manager hands the status pipe over without FD_CLOEXEC (that is how it crossed into
    // us); a lifted copy already has it. Set it so a successful exec closes the pipe and the
    // manager reads end-of-file.
    table.set_cloexec(*status)?;
    for &(source, target) in &plan.sockets {
        // Every lifted copy is >= first_free and every target below it, so this dup2 never
        // has src == dst and always clears FD_CLOEXEC.
        table.dup2(placed.current(source), target)?;
        table.clear_nonblock(target)?;
    }
    for &(source, target) in &plan.fixed {
        table.dup2(placed.current(source), target)?;
    }
    let mut keep: Vec<RawFd> = plan
        .stdio_sources
        .iter()
        .map(|&fd| placed.current(fd))
        .collect();
    keep.push(*status);
    keep.extend(plan.fixed.iter().map(|&(_, target)| target));
    close_all_but(table, plan.after_sockets(), &keep)?;
    Ok(placed)
}

/// A pooled executor's received fds: each `(received, number)` goes to the number the manager
/// had for it, whatever the received numbers are (two of them may sit on each other's target),
/// by way of copies above every number involved.
pub fn settle(moves: &[(RawFd, RawFd)], table: &mut impl FdTable) -> Result<(), Errno> {
    let above = moves
        .iter()
        .flat_map(|&(from, to)| [from, to])
        .max()
        .map_or(3, |highest| highest.saturating_add(1).max(3));
    let mut copies = Vec::with_capacity(moves.len());
    for &(from, to) in moves {
        let copy = table.dup_above(from, above)?;
        close_one(table, from)?;
        copies.push((copy, to));
    }
    for (copy, to) in copies {
        // `copy` is above every target, so this never dups an fd onto itself.
        table.dup2(copy, to)?;
        close_one(table, copy)?;
    }
    Ok(())
}

fn close_one(table: &mut impl FdTable, fd: RawFd) -> Result<(), Errno> {
    let fd = u32::try_from(fd).map_err(|_| Errno::EBADF)?;
    table.close_range(fd, fd)
}

fn close_all_but(table: &mut impl FdTable, first: RawFd, keep: &[RawFd]) -> Result<(), Errno> {
    for (first, last) in close_ranges(first, keep) {
        table.close_range(first, last)?;
    }
    Ok(())
}

/// The ranges `first..=last` covering every fd from `first` up except those in `keep`.
pub fn close_ranges(first: RawFd, keep: &[RawFd]) -> Vec<(u32, u32)> {
    let Ok(mut next) = u32::try_from(first) else {
        return Vec::new();
    };
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut ranges = Vec::new();
    for fd in keep {
        if fd < next {
            continue;
        }
        if fd > next {
            ranges.push((next, fd - 1));
        }
        match fd.checked_add(1) {
            Some(n) => next = n,
            None => return ranges,
        }
    }
    ranges.push((next, u32::MAX));
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A model fd table: each fd names the open file behind it (a letter), and whether it is
    /// close-on-exec.
    #[derive(Debug, Default)]
    struct Model {
        fds: BTreeMap<RawFd, (char, bool)>,
    }

    const EBADF: Errno = Errno::EBADF;

    impl Model {
        fn with(fds: &[(RawFd, char)]) -> Model {
            Model {
                fds: fds.iter().map(|&(fd, file)| (fd, (file, false))).collect(),
            }
        }

        fn file(&self, fd: RawFd) -> Option<char> {
            self.fds.get(&fd).map(|&(file, _)| file)
        }

        /// What crosses exec: fd → file.
        fn after_exec(&self) -> Vec<(RawFd, char)> {
            self.fds
                .iter()
                .filter(|(_, (_, cloexec))| !cloexec)
                .map(|(&fd, &(f, _))| (fd, f))
                .collect()
        }
    }

    impl FdTable for Model {
        fn dup_above(&mut self, fd: RawFd, min: RawFd) -> Result<RawFd, Errno> {
            let file = self.file(fd).ok_or(EBADF)?;
            let new = (min..).find(|n| !self.fds.contains_key(n)).ok_or(EBADF)?;
            self.fds.insert(new, (file, true));
            Ok(new)
        }

        fn dup2(&mut self, src: RawFd, dst: RawFd) -> Result<(), Errno> {
            assert_ne!(src, dst, "dup2 onto itself would keep FD_CLOEXEC");
            let file = self.file(src).ok_or(EBADF)?;
            self.fds.insert(dst, (file, false));
            Ok(())
        }

        fn set_cloexec(&mut self, fd: RawFd) -> Result<(), Errno> {
            self.fds.get_mut(&fd).ok_or(EBADF)?.1 = true;
            Ok(())
        }

        fn clear_nonblock(&mut self, fd: RawFd) -> Result<(), Errno> {
            self.file(fd).map(|_| ()).ok_or(EBADF)
        }

        fn close_range(&mut self, first: u32, last: u32) -> Result<(), Errno> {
            self.fds
                .retain(|&fd, _| !u32::try_from(fd).is_ok_and(|fd| (first..=last).contains(&fd)));
            Ok(())
        }
    }

    #[test]
    fn settle_puts_every_received_fd_at_its_number_even_on_each_others() {
        // Received at 3, 4, 5 (the pool socket at 6); the manager had them at 4, 3, 9 and its
        // end of the pool socket at 5, which becomes the status fd.
        let mut table = Model::with(&[
            (0, 'i'),
            (1, 'o'),
            (2, 'e'),
            (3, 'a'),
            (4, 'b'),
            (5, 'c'),
            (6, 'p'),
        ]);
        settle(&[(3, 4), (4, 3), (5, 9), (6, 5)], &mut table).unwrap();
        assert_eq!(
            table.after_exec(),
            [
                (0, 'i'),
                (1, 'o'),
                (2, 'e'),
                (3, 'b'),
                (4, 'a'),
                (5, 'p'),
                (9, 'c')
            ]
        );
        assert_eq!(table.fds.len(), 7, "no copy left behind: {:?}", table.fds);
    }

    fn state(fds: &[RawFd], stdio: [Stdio; 3], status_fd: RawFd) -> SpawnState {
        SpawnState {
            name: "t".into(),
            path: "/bin/true".into(),
            argv: vec!["true".into()],
            env: vec![],
            pid_vars: vec!["LISTEN_PID".into()],
            stdio,
            fds: fds.to_vec(),
            status_fd,
            working_directory: "/".into(),
            umask: 0o022,
            credentials: None,
            rlimits: vec![],
            cgroups: vec![],
            fds_at: Vec::new(),
            reset_signals: Vec::new(),
        }
    }

    const INHERIT: [Stdio; 3] = [Stdio::Inherit, Stdio::Inherit, Stdio::Inherit];

    /// Runs placement and stdio-source cleanup on `model`; returns the status fd and placement.
    fn run(state: &SpawnState, model: &mut Model) -> (RawFd, Placed) {
        let plan = plan(state);
        let mut status = state.status_fd;
        let placed = place(&plan, model, &mut status).unwrap();
        (status, placed)
    }

    #[test]
    fn plain_sockets_above_their_targets() {
        let s = state(&[10, 11], INHERIT, 12);
        let p = plan(&s);
        assert_eq!(p.first_free, 5);
        assert_eq!(p.lift, Vec::<RawFd>::new());
        assert_eq!(p.sockets, [(10, 3), (11, 4)]);

        let mut m = Model::with(&[
            (0, 'i'),
            (1, 'o'),
            (2, 'e'),
            (10, 'a'),
            (11, 'b'),
            (12, 's'),
            (13, 'm'),
        ]);
        let (status, placed) = run(&s, &mut m);
        assert_eq!(status, 12);
        placed.close_stdio_sources(&mut m, status).unwrap();
        assert_eq!(m.file(12), Some('s'));
        assert_eq!(
            m.after_exec(),
            [(0, 'i'), (1, 'o'), (2, 'e'), (3, 'a'), (4, 'b')]
        );
    }

    #[test]
    fn source_already_at_its_target() {
        let s = state(&[3], INHERIT, 9);
        assert_eq!(plan(&s).lift, [3]);
        let mut m = Model::with(&[(3, 'a'), (9, 's')]);
        // The manager's fd crossed without FD_CLOEXEC, but be sure it ends up clear either way.
        m.fds.insert(3, ('a', true));
        let (status, _) = run(&s, &mut m);
        assert_eq!(status, 9);
        assert_eq!(m.after_exec(), [(3, 'a')]);
    }

    #[test]
    fn swapped_sources() {
        // fd 4 must go to 3 and fd 3 to 4: a naive dup2 in order would destroy 3 first.
        let s = state(&[4, 3], INHERIT, 7);
        assert_eq!(plan(&s).lift, [3, 4]);
        let mut m = Model::with(&[(3, 'b'), (4, 'a'), (7, 's')]);
        run(&s, &mut m);
        assert_eq!(m.after_exec(), [(3, 'a'), (4, 'b')]);
    }

    #[test]
    fn low_source_overwritten_by_another_target() {
        // Socket 1's source sits at 3, where socket 0 goes.
        let s = state(&[8, 3], INHERIT, 9);
        let mut m = Model::with(&[(3, 'b'), (8, 'a'), (9, 's')]);
        run(&s, &mut m);
        assert_eq!(m.after_exec(), [(3, 'a'), (4, 'b')]);
    }

    #[test]
    fn source_used_twice() {
        let s = state(
            &[3, 3, 20],
            [Stdio::Inherit, Stdio::Fd(3), Stdio::Fd(3)],
            21,
        );
        let p = plan(&s);
        assert_eq!(p.lift, [3]);
        assert_eq!(p.stdio_sources, [3]);
        let mut m = Model::with(&[(0, 'i'), (1, 'o'), (2, 'e'), (3, 'a'), (20, 'c'), (21, 's')]);
        let (status, placed) = run(&s, &mut m);
        // The stdio source's copy survives placement, for stdio to use.
        let copy = placed.current(3);
        assert!(copy >= 6);
        assert_eq!(m.file(copy), Some('a'));
        placed.close_stdio_sources(&mut m, status).unwrap();
        assert_eq!(m.file(copy), None);
        assert_eq!(
            m.after_exec(),
            [(0, 'i'), (1, 'o'), (2, 'e'), (3, 'a'), (4, 'a'), (5, 'c')]
        );
    }

    #[test]
    fn status_fd_below_first_free() {
        let s = state(&[10, 11], INHERIT, 3);
        assert_eq!(plan(&s).lift, [3]);
        let mut m = Model::with(&[(3, 's'), (10, 'a'), (11, 'b')]);
        let (status, _) = run(&s, &mut m);
        assert!(status >= 5);
        assert_eq!(m.fds.get(&status), Some(&('s', true)));
        assert_eq!(m.after_exec(), [(3, 'a'), (4, 'b')]);
    }

    #[test]
    fn status_fd_is_made_cloexec() {
        let s = state(&[], INHERIT, 3);
        assert_eq!(plan(&s).lift, Vec::<RawFd>::new());
        let mut m = Model::with(&[(0, 'i'), (3, 's'), (4, 'm')]);
        let (status, _) = run(&s, &mut m);
        assert_eq!(status, 3);
        assert_eq!(m.fds.get(&3), Some(&('s', true)));
        assert_eq!(m.after_exec(), [(0, 'i')]);
    }

    #[test]
    fn stdio_source_in_the_standard_range() {
        // The manager's own stderr as the service's stdout: 2 is lifted so stdio can use it
        // after placement, and fd 2 itself is left alone.
        let s = state(&[9], [Stdio::Null, Stdio::Fd(2), Stdio::Inherit], 10);
        assert_eq!(plan(&s).lift, [2]);
        let mut m = Model::with(&[(0, 'i'), (1, 'o'), (2, 'e'), (9, 'a'), (10, 's')]);
        let (_, placed) = run(&s, &mut m);
        let copy = placed.current(2);
        assert!(copy >= 4);
        assert_eq!(m.file(copy), Some('e'));
        assert_eq!(m.file(2), Some('e'));
    }

    #[test]
    fn missing_source_fails() {
        let s = state(&[30], INHERIT, 9);
        let mut m = Model::with(&[(9, 's')]);
        let mut status = 9;
        assert_eq!(place(&plan(&s), &mut m, &mut status).unwrap_err(), EBADF);
    }

    #[test]
    fn status_follows_a_lift_even_if_placement_then_fails() {
        let s = state(&[30], INHERIT, 3);
        let mut m = Model::with(&[(3, 's')]);
        let mut status = 3;
        assert!(place(&plan(&s), &mut m, &mut status).is_err());
        assert!(status >= 4);
        assert_eq!(m.file(status), Some('s'));
    }

    #[test]
    fn a_fixed_fd_goes_to_its_number_and_the_gap_is_closed() {
        let mut s = state(&[10], INHERIT, 12);
        s.fds_at = vec![steward_protocol::FdAt {
            source: 11,
            target: 7,
        }];
        let p = plan(&s);
        assert_eq!(p.first_free, 8);
        assert_eq!(p.fixed, [(11, 7)]);
        let mut m = Model::with(&[
            (0, 'i'),
            (4, 'x'),
            (5, 'y'),
            (10, 'a'),
            (11, 'r'),
            (12, 's'),
        ]);
        let (status, placed) = run(&s, &mut m);
        placed.close_stdio_sources(&mut m, status).unwrap();
        assert_eq!(m.after_exec(), [(0, 'i'), (3, 'a'), (7, 'r')]);
    }

    #[test]
    fn a_fixed_fd_source_below_its_target_is_lifted() {
        // The readiness pipe's write end sits at 4, where nothing goes; its target is 5.
        let mut s = state(&[6], INHERIT, 9);
        s.fds_at = vec![steward_protocol::FdAt {
            source: 4,
            target: 5,
        }];
        let mut m = Model::with(&[(4, 'r'), (6, 'a'), (9, 's')]);
        run(&s, &mut m);
        assert_eq!(m.after_exec(), [(3, 'a'), (5, 'r')]);
    }

    #[test]
    fn a_fixed_fd_on_a_socket_number_is_refused() {
        let mut s = state(&[10, 11], INHERIT, 12);
        s.fds_at = vec![steward_protocol::FdAt {
            source: 13,
            target: 4,
        }];
        let mut m = Model::with(&[(10, 'a'), (11, 'b'), (12, 's'), (13, 'r')]);
        let mut status = 12;
        assert_eq!(
            place(&plan(&s), &mut m, &mut status).unwrap_err(),
            Errno::EINVAL
        );
    }

    #[test]
    fn close_ranges_around_kept_fds() {
        assert_eq!(close_ranges(3, &[]), [(3, u32::MAX)]);
        assert_eq!(close_ranges(5, &[7, 9]), [(5, 6), (8, 8), (10, u32::MAX)]);
        assert_eq!(close_ranges(5, &[5, 6, 2, 6]), [(7, u32::MAX)]);
        assert_eq!(
            close_ranges(3, &[i32::MAX]),
            [(3, i32::MAX as u32 - 1), (i32::MAX as u32 + 1, u32::MAX)]
        );
        assert_eq!(close_ranges(3, &[-1]), [(3, u32::MAX)]);
    }
}
