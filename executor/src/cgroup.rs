//! Moving the executor, and so the service, into its cgroups before exec.

use alloc::ffi::CString;
use alloc::format;
use alloc::string::{String, ToString};

use rustix::fs::OFlags;
use steward_protocol::Step;

use crate::failure::{AtStep, Failure};
use crate::sys::{self, Errno};

/// Writes `pid` into `DIR/cgroup.procs` for each directory (one per hierarchy on cgroup v1).
/// Done before exec so the service's first instruction is already accounted to its cgroup.
pub fn join(dirs: &[String], pid: i32) -> Result<(), Failure> {
    let pid = pid.to_string();
    for dir in dirs {
        join_one(dir, &pid).at(Step::Cgroup)?;
    }
    Ok(())
}

fn join_one(dir: &str, pid: &str) -> Result<(), Errno> {
    let procs = CString::new(format!("{dir}/cgroup.procs")).map_err(|_| Errno::EINVAL)?;
    let file = sys::open(&procs, OFlags::WRONLY, 0)?;
    sys::write_whole(&file, pid.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_pid_into_each_directory() {
        let root =
            std::env::temp_dir().join(format!("steward-executor-cgroup-{}", std::process::id()));
        let dirs: Vec<String> = ["a", "b"]
            .iter()
            .map(|d| root.join(d).display().to_string())
            .collect();
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(format!("{dir}/cgroup.procs"), "").unwrap();
        }
        join(&dirs, 4242).unwrap();
        for dir in &dirs {
            assert_eq!(
                std::fs::read_to_string(format!("{dir}/cgroup.procs")).unwrap(),
                "4242"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_directory_is_a_cgroup_failure() {
        let err = join(&["/nonexistent/steward-executor-test".into()], 1).unwrap_err();
        assert_eq!(err, Failure::new(Step::Cgroup, Errno::ENOENT));
    }
}
