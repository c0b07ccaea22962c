//! Waiting on real asynchronous state by polling, never by a fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `f` every 250 ms until it returns `Ok`, or panics after `timeout` with
/// the last error. For waiting on real asynchronous state (connector RUNNING,
/// object reconciled), never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last state: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
