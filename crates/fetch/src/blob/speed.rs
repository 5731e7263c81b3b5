//! The minimum rate of one body over whole windows (curl's `--speed-limit`).

use std::time::{Duration, Instant};

use rdpull_verify::Digest;

use crate::error::FetchError;

/// curl's `--speed-limit`/`--speed-time`: a body must deliver `min_rate` bytes a second
/// over each whole window, or it is too slow.
pub(super) struct SpeedCheck {
    pub(super) min_rate: u64,
    window: Duration,
    pub(super) window_end: Instant,
    received: u64,
}

impl SpeedCheck {
    pub(super) fn new(min_rate: u64, window: Duration) -> SpeedCheck {
        SpeedCheck {
            min_rate,
            window,
            window_end: Instant::now() + window,
            received: 0,
        }
    }

    pub(super) fn got(&mut self, bytes: u64) {
        self.received += bytes;
    }

    /// At the end of a window: an error if its rate was below the minimum, else a new
    /// window (`Ok(true)`). `digest` names the blob in the error.
    pub(super) fn check(&mut self, digest: &Digest) -> Result<bool, FetchError> {
        let now = Instant::now();
        if self.min_rate == 0 || now < self.window_end {
            return Ok(false);
        }
        let secs = self.window.as_secs_f64().max(0.001);
        let rate = (self.received as f64 / secs) as u64;
        // Nothing at all is a stall, which the stall timeout reports as such.
        if rate < self.min_rate && self.received > 0 {
            return Err(FetchError::TooSlow {
                digest: digest.clone(),
                rate,
                min_rate: self.min_rate,
                window: self.window.as_secs(),
            });
        }
        self.window_end = now + self.window;
        self.received = 0;
        Ok(true)
    }
}
