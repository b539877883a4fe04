//! One replica's directory, `replicas/{key}/` — the local center's whole record of it, so that a
//! restarted node (a fresh `LocalCenter`) knows everything the old one knew:
//!
//! | file          | written by            | means                                             |
//! |---------------|-----------------------|---------------------------------------------------|
//! | `launch.json` | submit                | submitted, and when (the directory appears with it) |
//! | `work/`       | start, before spawn   | a start was attempted (the replica's cwd)         |
//! | `pid`         | start, after spawn    | `PID STARTTIME` of the wrapper                    |
//! | `output.log`  | the wrapper           | the command's stdout and stderr                   |
//! | `exit_code`   | the wrapper, at exit  | the command's exit status                         |
//! | `stopped`     | stop, before signals  | a stop was ordered                                |
//! | `start.lock`  | start                 | `flock`ed while a start is under way              |
//! | `start_error` | start, on failure     | why the wrapper could not be started (or, written |
//! |               | by a restart          | by a restart, that it ran and vanished)           |

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use jcs_api::model::{FailureCategory, ReplicaKey};
use serde::{Deserialize, Serialize};

use super::process::{self, ProcessRecord};
use crate::{NativeState, ReplicaLaunch};

const LAUNCH: &str = "launch.json";
const WORK: &str = "work";
const PID: &str = "pid";
const LOG: &str = "output.log";
const EXIT_CODE: &str = "exit_code";
const STOPPED: &str = "stopped";
const START_ERROR: &str = "start_error";
const START_LOCK: &str = "start.lock";

/// `launch.json`: the launch, and when it was submitted (its place in the queue; file times are
/// too coarse to order submissions).
#[derive(Serialize, Deserialize)]
struct LaunchRecord<L> {
    submitted_ns: u64,
    launch: L,
}

/// What became of a start the node's crash cut short.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum InterruptedStart {
    /// Its wrapper runs: adopted.
    Adopted(ProcessRecord),
    /// It never ran: queued again.
    NeverStarted,
    /// It ran and is gone without an exit status.
    Vanished,
    /// A live instance on the same work dir is starting it right now.
    UnderWay,
}

/// An exclusive `flock` on a replica's `start.lock`, held while a start is under way. The
/// kernel drops it when its holder dies, so a lock that can be taken means no live process is
/// starting the replica.
pub(super) struct StartLock {
    /// Open while the lock is held: closing it releases the lock.
    _held: std::fs::File,
}

impl StartLock {
    /// Takes the lock; with `wait` false, `None` when another holds it.
    pub(super) fn take(path: &Path, wait: bool) -> io::Result<Option<StartLock>> {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        let operation = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
        // SAFETY: flock(2) on a descriptor this function owns; no memory is shared.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), operation) } == 0 {
            return Ok(Some(StartLock { _held: file }));
        }
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            e => Err(e),
        }
    }
}

pub(super) struct ReplicaDir {
    path: PathBuf,
}

impl ReplicaDir {
    pub(super) fn new(replicas: &Path, key: &ReplicaKey) -> Self {
        ReplicaDir { path: replicas.join(key.to_string()) }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub(super) fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Creates the directory with its `launch.json`, atomically: it is assembled in `staging`
    /// and renamed into place. Returns false when the directory already existed.
    pub(super) fn create(&self, launch: &ReplicaLaunch, staging: &Path) -> io::Result<bool> {
        if self.exists() {
            return Ok(false);
        }
        std::fs::create_dir(staging)?;
        let submitted_ns = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let json = serde_json::to_vec_pretty(&LaunchRecord { submitted_ns, launch }).map_err(io::Error::other);
        let made = json.and_then(|json| std::fs::write(staging.join(LAUNCH), json));
        let made = made.and_then(|()| std::fs::rename(staging, &self.path));
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(staging);
            return if self.exists() { Ok(false) } else { Err(e) };
        }
        Ok(true)
    }

    fn record(&self) -> io::Result<LaunchRecord<ReplicaLaunch>> {
        serde_json::from_slice(&std::fs::read(self.file(LAUNCH))?).map_err(io::Error::other)
    }

    pub(super) fn launch(&self) -> io::Result<ReplicaLaunch> {
        self.record().map(|r| r.launch)
    }

    /// The launch and when it was submitted (ns since the Unix epoch).
    pub(super) fn submission(&self) -> io::Result<(u64, ReplicaLaunch)> {
        self.record().map(|r| (r.submitted_ns, r.launch))
    }

    pub(super) fn log(&self) -> PathBuf {
        self.file(LOG)
    }

    pub(super) fn process(&self) -> Option<ProcessRecord> {
        ProcessRecord::parse(&std::fs::read_to_string(self.file(PID)).ok()?)
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.file(STOPPED).exists()
    }

    pub(super) fn mark_stopped(&self) -> io::Result<()> {
        std::fs::write(self.file(STOPPED), b"")
    }

    pub(super) fn has_exit_code(&self) -> bool {
        self.file(EXIT_CODE).exists()
    }

    /// A start was attempted (whatever came of it).
    pub(super) fn was_started(&self) -> bool {
        self.file(WORK).exists()
    }

    /// Starts the replica's wrapper and records its pid. `AlreadyExists` when a start was
    /// attempted before: a replica is started at most once.
    pub(super) fn start(
        &self,
        launch: &ReplicaLaunch,
        on_exit: impl FnOnce() + Send + 'static,
    ) -> io::Result<ProcessRecord> {
        // Held until the pid is written: an instance settling interrupted starts on the same
        // work dir leaves this one alone (the lock dies with the process that holds it).
        let _starting = self.start_lock(true)?.expect("a blocking lock is taken");
        let work = self.file(WORK);
        std::fs::create_dir(&work)?;
        let (log, exit_code) = (self.file(LOG), self.file(EXIT_CODE));
        let paths = process::Paths { work: &work, log: &log, exit_code: &exit_code };
        let record = process::spawn(paths, launch, on_exit)?;
        if let Err(e) = self.write_pid(&record) {
            // Untracked, it could never be stopped: better not to run it at all.
            record.kill();
            return Err(e);
        }
        Ok(record)
    }

    /// Whether a start was cut short: attempted, with no pid and no final record (exit status,
    /// start error, stop) left behind.
    pub(super) fn start_cut_short(&self) -> bool {
        self.was_started() && self.process().is_none() && self.ended().is_none()
    }

    /// Settles a start that a crash of the node cut short (`work/` made, no `pid` written):
    /// jcs's doubt, not the center's fault, so it is resolved for this replica alone. A wrapper
    /// found running in `work/` is adopted (its `pid` written); one that never got as far as its
    /// log never ran, and the replica goes back to queued (`work/` removed) to be started once;
    /// one that wrote a log and is gone ended without an exit status.
    pub(super) fn resolve_interrupted_start(&self) -> io::Result<InterruptedStart> {
        let Some(_settling) = self.start_lock(false)? else {
            return Ok(InterruptedStart::UnderWay);
        };
        if let Some(process) = process::find_wrapper_in(&self.file(WORK)) {
            self.write_pid(&process)?;
            return Ok(InterruptedStart::Adopted(process));
        }
        if self.file(LOG).exists() {
            std::fs::write(self.file(START_ERROR), "the replica's process ended without an exit status")?;
            return Ok(InterruptedStart::Vanished);
        }
        std::fs::remove_dir_all(self.file(WORK))?;
        Ok(InterruptedStart::NeverStarted)
    }

    /// The replica's start lock (see [`StartLock::take`]).
    pub(super) fn start_lock(&self, wait: bool) -> io::Result<Option<StartLock>> {
        StartLock::take(&self.file(START_LOCK), wait)
    }

    fn write_pid(&self, record: &ProcessRecord) -> io::Result<()> {
        let tmp = self.file("pid.tmp");
        std::fs::write(&tmp, record.render()).and_then(|()| std::fs::rename(&tmp, self.file(PID)))
    }

    pub(super) fn record_start_error(&self, error: &io::Error) {
        if let Err(e) = std::fs::write(self.file(START_ERROR), error.to_string()) {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not record a start error");
        }
    }

    /// The replica's state as its files tell it.
    pub(super) fn state(&self) -> NativeState {
        if !self.exists() {
            return NativeState::Missing;
        }
        if let Some(ended) = self.ended() {
            return ended;
        }
        let center_fault = |reason: &str| NativeState::Failed {
            exit_code: None,
            category: FailureCategory::Center,
            reason: reason.to_string(),
        };
        match self.process() {
            Some(process) if process.is_alive() => NativeState::Running,
            // It may have ended between the two looks: read the files again.
            Some(_) => self.ended().unwrap_or_else(|| center_fault("process vanished")),
            // A start under way in another instance on this work dir (a restarted node
            // settles its own interrupted starts before it answers): not yet a process.
            None if self.was_started() => self.ended().unwrap_or(NativeState::Queued),
            None if !self.file(LAUNCH).exists() => center_fault("incomplete submission record"),
            None => NativeState::Queued,
        }
    }

    /// The final state, when the files show one. An exit status of 0 is a success even if a
    /// stop came too late; any other after a stop is the stop's doing.
    fn ended(&self) -> Option<NativeState> {
        let stopped = || NativeState::Failed {
            exit_code: None,
            category: FailureCategory::Stopped,
            reason: "stopped".to_string(),
        };
        match std::fs::read_to_string(self.file(EXIT_CODE)) {
            Ok(text) => Some(match text.trim().parse::<i32>() {
                Ok(0) => NativeState::Succeeded,
                Ok(_) if self.is_stopped() => stopped(),
                Ok(code) => NativeState::Failed {
                    exit_code: Some(code),
                    category: FailureCategory::Application,
                    reason: format!("exit code {code}"),
                },
                Err(_) => NativeState::Failed {
                    exit_code: None,
                    category: FailureCategory::Center,
                    reason: format!("unreadable exit code {text:?}"),
                },
            }),
            Err(e) if e.kind() != ErrorKind::NotFound => Some(NativeState::Failed {
                exit_code: None,
                category: FailureCategory::Center,
                reason: format!("unreadable exit code: {e}"),
            }),
            Err(_) if self.is_stopped() => Some(stopped()),
            Err(_) => std::fs::read_to_string(self.file(START_ERROR)).ok().map(|why| NativeState::Failed {
                exit_code: None,
                category: FailureCategory::Center,
                reason: format!("could not start: {why}"),
            }),
        }
    }

    /// The state is final.
    pub(super) fn has_ended(&self) -> bool {
        self.state().is_final()
    }

    #[cfg(test)]
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}
