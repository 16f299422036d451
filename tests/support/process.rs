//! Child processes that cannot outlive the test that started them.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Ask the kernel to SIGKILL the child if the test process dies, so a
/// crashed or interrupted test leaves no broker or stage running.
pub fn kill_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
