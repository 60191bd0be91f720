//! Dropping to the service's groups and user.

use steward_protocol::{Credentials, Step};

use crate::failure::{AtStep, Failure};
use crate::sys::{self, Errno};

/// Groups first: once the user id is no longer root, the group calls would be refused.
pub fn switch(credentials: &Credentials) -> Result<(), Failure> {
    sys::setgroups(&credentials.groups).at(Step::Group)?;
    sys::setresgid(credentials.gid).at(Step::Group)?;
    sys::setresuid(credentials.uid).at(Step::User)?;
    // A service that ran with more privilege than configured would be a silent security bug;
    // check what the kernel now says rather than trust three return values.
    verify(sys::getresgid().at(Step::Group)?, credentials.gid).at(Step::Group)?;
    verify(sys::getresuid().at(Step::User)?, credentials.uid).at(Step::User)
}

fn verify(ids: [u32; 3], wanted: u32) -> Result<(), Errno> {
    if ids.iter().all(|&id| id == wanted) {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_ids_must_match() {
        assert_eq!(verify([5, 5, 5], 5), Ok(()));
        assert_eq!(verify([5, 5, 0], 5), Err(Errno::EPERM));
        assert_eq!(verify([0, 5, 5], 5), Err(Errno::EPERM));
    }

    #[test]
    fn unprivileged_setgroups_is_a_group_failure() {
        // Unprivileged, setgroups fails even for the current ids; as root it would really
        // change the test process, so there is nothing to check.
        let [uid, ..] = sys::getresuid().unwrap();
        if uid == 0 {
            return;
        }
        let gid = sys::getresgid().unwrap()[0];
        let err = switch(&Credentials {
            uid,
            gid,
            groups: vec![],
        })
        .unwrap_err();
        assert_eq!(err, Failure::new(Step::Group, Errno::EPERM));
    }
}
