//! The node's log: `tracing` to stderr under an `EnvFilter`, with one guard against noise that
//! is not ours to fix at its source.
//!
//! openraft 0.9 logs at ERROR, for every linearizable read, each voter that did not confirm the
//! leadership in time ("timeout while confirming leadership for read request"): with one
//! follower down that is thousands of lines a minute, none of them an error of the node that
//! logs it. [`NoiseLimiter`] lets one such line through per message and window, and counts the
//! rest in `jcs_log_lines_suppressed_total`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// The messages of openraft's that say a peer is slow or down, logged by the node that is fine.
const PEER_DOWN_NOISE: &[&str] = &["timeout while confirming leadership for read request"];

/// How often one noisy message is let through.
pub const NOISE_WINDOW: Duration = Duration::from_secs(30);

/// Installs the global subscriber: `RUST_LOG` if set, else `default_filter`.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::registry()
        .with(filter)
        .with(NoiseLimiter::new(NOISE_WINDOW))
        .with(tracing_subscriber::fmt::layer())
        .init();
}

/// Lets one line of each known noisy openraft message through per window.
pub struct NoiseLimiter {
    window: Duration,
    last_shown: Mutex<HashMap<&'static str, Instant>>,
}

impl NoiseLimiter {
    pub fn new(window: Duration) -> Self {
        NoiseLimiter { window, last_shown: Mutex::new(HashMap::new()) }
    }

    /// Whether a line with this (noisy) message may be shown now.
    fn admit(&self, message: &'static str) -> bool {
        let mut shown = self.last_shown.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        match shown.get(message) {
            Some(at) if now.duration_since(*at) < self.window => false,
            _ => {
                shown.insert(message, now);
                true
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for NoiseLimiter {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || !meta.target().starts_with("openraft") {
            return true;
        }
        let mut message = MessageOf(None);
        event.record(&mut message);
        let Some(noise) = message.0 else { return true };
        let admitted = self.admit(noise);
        if !admitted {
            metrics::counter!("jcs_log_lines_suppressed_total", "message" => noise).increment(1);
        }
        admitted
    }
}

/// Finds which known noisy message an event carries, if any.
struct MessageOf(Option<&'static str>);

impl Visit for MessageOf {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let text = format!("{value:?}");
            self.0 = PEER_DOWN_NOISE.iter().copied().find(|noise| text == *noise);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_down_peer_costs_one_line_per_window_and_other_errors_all_pass() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry()
            .with(NoiseLimiter::new(Duration::from_secs(3600)))
            .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..1000 {
                tracing::error!(target: "openraft::core::raft_core", target = 3, error = "timeout", "timeout while confirming leadership for read request");
            }
            for _ in 0..3 {
                tracing::error!(target: "openraft::core::raft_core", "some other openraft error");
                tracing::error!(target: "jcs_node::proposer", "timeout while confirming leadership for read request");
            }
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(count("openraft::core::raft_core: timeout while confirming"), 1, "{text}");
        assert_eq!(count("some other openraft error"), 3, "{text}");
        assert_eq!(count("jcs_node::proposer: timeout while confirming"), 3, "{text}");
    }

    #[test]
    fn the_line_comes_back_once_the_window_has_passed() {
        let limiter = NoiseLimiter::new(Duration::ZERO);
        assert!(limiter.admit(PEER_DOWN_NOISE[0]));
        assert!(limiter.admit(PEER_DOWN_NOISE[0]));
        let limiter = NoiseLimiter::new(Duration::from_secs(3600));
        assert!(limiter.admit(PEER_DOWN_NOISE[0]));
        assert!(!limiter.admit(PEER_DOWN_NOISE[0]));
    }
}
