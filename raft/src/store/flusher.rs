//! Group commit for the Raft log. `append` writes its entries without syncing and hands its
//! completion here; one thread fsyncs the WAL once for everything that queued up while the
//! previous fsync ran, then completes those appends in order. One fsync per batch instead of
//! one per append is what lets a single disk sustain thousands of durable appends a second.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use thiserror::Error;

/// What to run once an append is durable (or the fsync failed).
pub(crate) type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

/// The flusher thread has stopped; the completion handed to it was run with an error.
#[derive(Debug, Error)]
#[error("the log flusher thread has stopped")]
pub(crate) struct FlusherStopped;

/// Owns the flusher thread; dropping it lets the thread finish the queue and joins it.
pub(crate) struct Flusher {
    tx: Option<Sender<Completion>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread; `sync` makes every write issued so far durable.
    pub(crate) fn spawn(sync: impl FnMut() -> io::Result<()> + Send + 'static) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new().name("jcs-raft-log-flush".into()).spawn(move || run(&rx, sync))?;
        Ok(Flusher { tx: Some(tx), thread: Some(thread) })
    }

    /// Queues `done` to run after the next fsync. Completions run in submission order.
    pub(crate) fn submit(&self, done: Completion) -> Result<(), FlusherStopped> {
        let sent = match &self.tx {
            Some(tx) => tx.send(done).map_err(|mpsc::SendError(done)| done),
            None => Err(done),
        };
        sent.map_err(|done| {
            done(Err(io::Error::other(FlusherStopped)));
            FlusherStopped
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the log flusher thread panicked");
            }
        }
    }
}

fn run(rx: &Receiver<Completion>, mut sync: impl FnMut() -> io::Result<()>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let started = Instant::now();
        let result = sync();
        metrics::histogram!("jcs_raft_log_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("jcs_raft_log_flush_batch").record(batch.len() as f64);
        if let Err(e) = &result {
            tracing::error!(error = %e, appends = batch.len(), "log fsync failed");
        }
        for done in batch {
            done(result.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn recorder(tx: &Sender<(usize, usize, bool)>, thread: usize, seq: usize) -> Completion {
        let tx = tx.clone();
        Box::new(move |result| tx.send((thread, seq, result.is_ok())).expect("test receiver alive"))
    }

    /// Appends from many threads all complete, each thread's in its submission order.
    #[test]
    fn every_completion_runs_in_order() {
        let flusher = Arc::new(Flusher::spawn(|| Ok(())).unwrap());
        let (tx, rx) = mpsc::channel();
        let (threads, per_thread) = (8, 500);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (flusher, tx) = (flusher.clone(), tx.clone());
                s.spawn(move || {
                    for i in 0..per_thread {
                        flusher.submit(recorder(&tx, t, i)).unwrap();
                    }
                });
            }
        });
        drop(tx);
        let mut next = vec![0; threads];
        for _ in 0..threads * per_thread {
            let (t, i, ok) = rx.recv().unwrap();
            assert!(ok);
            assert_eq!(i, next[t], "thread {t} completed out of order");
            next[t] += 1;
        }
    }

    /// Everything queued during one fsync is made durable by the next single fsync.
    #[test]
    fn appends_queued_during_an_fsync_share_the_next_one() {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let syncs = Arc::new(AtomicUsize::new(0));
        let counter = syncs.clone();
        let flusher = Flusher::spawn(move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                entered_tx.send(()).unwrap();
                gate_rx.recv().unwrap();
            }
            Ok(())
        })
        .unwrap();
        let (tx, rx) = mpsc::channel();
        flusher.submit(recorder(&tx, 0, 0)).unwrap();
        entered_rx.recv().unwrap();
        for i in 1..100 {
            flusher.submit(recorder(&tx, 0, i)).unwrap();
        }
        gate_tx.send(()).unwrap();
        for i in 0..100 {
            assert_eq!(rx.recv().unwrap(), (0, i, true));
        }
        drop(flusher);
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
    }

    /// A failed fsync fails every append of its batch.
    #[test]
    fn a_failed_fsync_fails_its_batch() {
        let flusher = Flusher::spawn(|| Err(io::Error::other("disk on fire"))).unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..10 {
            flusher.submit(recorder(&tx, 0, i)).unwrap();
        }
        for i in 0..10 {
            assert_eq!(rx.recv().unwrap(), (0, i, false));
        }
    }
}
