//! How long the client waits for a registry, how often it tries again, and how much it reads:
//! a registry that stalls, fails for a moment or sends too much must not hang or swamp a build.

use std::future::Future;
use std::time::Duration;

use super::error::RegistryError;

/// A failure that may pass if the operation is tried again.
pub(super) trait Transient {
    /// Whether to try again (network failures, HTTP 429 and 5xx).
    fn is_transient(&self) -> bool;
}

impl Transient for RegistryError {
    fn is_transient(&self) -> bool {
        RegistryError::is_transient(self)
    }
}

/// Timeouts, retries and size limits of registry transfers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a connection (and its TLS handshake) to be made.
    pub connect_timeout: Duration,
    /// Longest wait for the next byte of an answer (headers or body): a stall, not a slow
    /// transfer, ends the request.
    pub read_timeout: Duration,
    /// Tries per operation, the first included, when the failure is transient.
    pub attempts: u32,
    /// Wait before the second try; doubled before each later one.
    pub backoff: Duration,
    /// Largest manifest or index read.
    pub max_manifest: u64,
    /// Largest image config read.
    pub max_config: u64,
}

impl Default for Limits {
    /// Values for CI: a registry silent for a minute is stalled, not slow; three tries as a
    /// short outage lasts (Docker tries a layer five times, its waits growing by 5 s); 4 MiB
    /// manifests as containerd and BuildKit allow; configs as large as the store reads them.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_manifest: 4 << 20,
            max_config: crate::image::MAX_JSON_SIZE,
        }
    }
}

impl Limits {
    /// Runs `operation` until it succeeds, fails for good, or has been tried `attempts` times.
    pub(super) async fn retry<T, E, F, Fut>(&self, mut operation: F) -> Result<T, E>
    where
        E: Transient + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delay = self.backoff;
        let mut attempt = 1;
        loop {
            match operation().await {
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    attempt += 1;
                    tracing::warn!(
                        "{e}; trying again in {:.1} s ({attempt} of {})",
                        delay.as_secs_f32(),
                        self.attempts
                    );
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
                done => return done,
            }
        }
    }
}
