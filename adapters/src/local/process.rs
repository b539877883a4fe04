//! The operating-system side of the local center: starting a replica's wrapper shell in its own
//! process group, recognising it later by pid *and* start time (pids are reused), and stopping
//! the whole group — SIGTERM, then SIGKILL after the grace period.
//!
//! Liveness is read from `/proc`. A zombie counts as dead: orphans of a killed group are
//! reparented to init, which in some containers never reaps them.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use crate::ReplicaLaunch;

/// The wrapper each replica runs as: the user's command (from `$JCS_COMMAND`, never
/// interpolated) with its output in `$1`, then its exit status written to `$2` atomically. A
/// signal that kills the wrapper leaves no exit status behind.
const WRAPPER: &str = r#"sh -c "$JCS_COMMAND" > "$1" 2>&1; echo $? > "$2.tmp"; mv "$2.tmp" "$2""#;

/// How often stop polls for the group to be gone.
const POLL: Duration = Duration::from_millis(20);
/// How long stop waits for the group to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A replica's wrapper process: its pid (also its process group id) and its start time in
/// clock ticks since boot (field 22 of `/proc/PID/stat`), which tells it from a later process
/// that got the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcessRecord {
    pub pid: i32,
    pub start_time: u64,
}

/// The fields of `/proc/PID/stat` the local center needs.
struct Stat {
    state: char,
    pgid: i32,
    start_time: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: parse after it.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn is_live(stat: &Stat) -> bool {
    !matches!(stat.state, 'Z' | 'X' | 'x')
}

impl ProcessRecord {
    /// The `pid` file's content.
    pub(super) fn render(&self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    pub(super) fn parse(text: &str) -> Option<ProcessRecord> {
        let mut parts = text.split_whitespace();
        let record = ProcessRecord { pid: parts.next()?.parse().ok()?, start_time: parts.next()?.parse().ok()? };
        (record.pid > 1 && parts.next().is_none()).then_some(record)
    }

    /// The wrapper itself still runs (a zombie or a reused pid does not count).
    pub(super) fn is_alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start_time == self.start_time && is_live(&s))
    }

    /// Whether process group `pid` can only be this replica's: the pid is free (members may
    /// outlive the wrapper) or still the wrapper's. A reused pid means the group is gone — the
    /// kernel does not hand out the id of a live group — and may now be somebody else's.
    fn group_is_ours(&self) -> bool {
        stat(self.pid).is_none_or(|s| s.start_time == self.start_time)
    }

    /// Some process of the replica's group still runs.
    pub(super) fn group_alive(&self) -> bool {
        if !self.group_is_ours() || !group_exists(self.pid) {
            return false;
        }
        // Members exist, but maybe only as zombies: look for a live one.
        let Ok(entries) = std::fs::read_dir("/proc") else { return true };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .any(|pid| stat(pid).is_some_and(|s| s.pgid == self.pid && is_live(&s)))
    }

    fn signal_group(&self, signal: libc::c_int) {
        if self.group_is_ours() {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
            unsafe { libc::kill(-self.pid, signal) };
        }
    }

    /// Kills the group at once.
    pub(super) fn kill(&self) {
        self.signal_group(libc::SIGKILL);
    }

    /// Stops the group: SIGTERM, SIGKILL once `grace` has passed. Err if it outlives SIGKILL.
    pub(super) async fn terminate(&self, grace: Duration) -> Result<(), String> {
        self.signal_group(libc::SIGTERM);
        if self.wait_gone(grace).await {
            return Ok(());
        }
        tracing::info!(pid = self.pid, ?grace, "replica ignored SIGTERM for its grace period; sending SIGKILL");
        self.kill();
        if self.wait_gone(KILL_WAIT).await {
            Ok(())
        } else {
            Err(format!("process group {} survived SIGKILL for {KILL_WAIT:?}", self.pid))
        }
    }

    async fn wait_gone(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if !self.group_alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The live wrapper running in `work` — a process that leads its own group and whose working
/// directory is `work` — if there is one. A start cut short by a crash of the node wrote no
/// `pid` file; this is how the wrapper it may have spawned is found again.
pub(super) fn find_wrapper_in(work: &Path) -> Option<ProcessRecord> {
    let work = std::fs::canonicalize(work).ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = stat(pid).filter(|s| s.pgid == pid && is_live(s))?;
        (std::fs::read_link(entry.path().join("cwd")).ok()? == work)
            .then_some(ProcessRecord { pid, start_time: stat.start_time })
    })
}

/// Any process (zombies included) is in group `pgid`.
fn group_exists(pgid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence and permission.
    let found = unsafe { libc::kill(-pgid, 0) } == 0;
    found || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Where a replica's wrapper writes and runs.
pub(super) struct Paths<'a> {
    pub work: &'a Path,
    pub log: &'a Path,
    pub exit_code: &'a Path,
}

/// Starts the wrapper for the launch's command in its own process group (so that it survives
/// the node and can be signalled as a whole), with the launch's environment added, and reaps it
/// in a background task, which calls `on_exit` once the wrapper has ended.
pub(super) fn spawn(
    paths: Paths<'_>,
    launch: &ReplicaLaunch,
    on_exit: impl FnOnce() + Send + 'static,
) -> io::Result<ProcessRecord> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(WRAPPER)
        .arg("jcs-replica")
        .arg(paths.log)
        .arg(paths.exit_code)
        .current_dir(paths.work)
        .envs(&launch.env)
        .env("JCS_COMMAND", &launch.command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()?;
    // Until the reaper below waits for it, the child's /proc entry stays (as a zombie at
    // worst), so its start time can be read even if it has already exited.
    let record = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(|pid| Some(ProcessRecord { pid, start_time: stat(pid)?.start_time }));
    let Some(record) = record else {
        let _ = child.start_kill();
        return Err(io::Error::other("the started wrapper has no readable /proc entry"));
    };
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) => tracing::debug!(pid = record.pid, %status, "replica wrapper reaped"),
            Err(e) => tracing::warn!(pid = record.pid, error = %e, "waiting for a replica wrapper failed"),
        }
        on_exit();
    });
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let r = ProcessRecord { pid: 42, start_time: 123456 };
        assert_eq!(ProcessRecord::parse(&r.render()), Some(r));
        for bad in ["", "42", "x 1", "42 1 7", "1 5", "-3 5"] {
            assert_eq!(ProcessRecord::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn this_process_is_alive_only_with_its_own_start_time() {
        let pid = std::process::id() as i32;
        let start_time = stat(pid).unwrap().start_time;
        assert!(ProcessRecord { pid, start_time }.is_alive());
        assert!(!ProcessRecord { pid, start_time: start_time + 1 }.is_alive());
    }
}
