//! Wall-clock time derived from tokio's clock.
//!
//! Scheduling uses `tokio::time::Instant` so tests can pause and advance time. Some providers speak
//! in absolute times (BACE's `"expires": "2022-04-04 14:19:49"`, BlendVision's `expired_date`), and
//! the store persists expiries as Unix times, so we also need "now" on the wall. [`Clock`] anchors
//! the wall clock once and advances it with tokio's clock, so under `tokio::time::pause()` both
//! move together and a test's fake token server agrees with the engine about what time it is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_wall: SystemTime,
    anchor: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            anchor_wall: SystemTime::now(),
            anchor: Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        Instant::now()
    }

    pub fn now_wall(&self) -> SystemTime {
        self.anchor_wall + Instant::now().saturating_duration_since(self.anchor)
    }

    /// Seconds since the Unix epoch, now.
    pub fn unix_now(&self) -> i64 {
        to_unix(self.now_wall())
    }

    /// The instant at which the wall clock reads `unix` (seconds), or now if that has passed.
    pub fn instant_at_unix(&self, unix: i64) -> Instant {
        let now_unix = self.unix_now_f64();
        let ahead = unix as f64 - now_unix;
        if ahead <= 0.0 {
            Instant::now()
        } else {
            Instant::now() + Duration::from_secs_f64(ahead)
        }
    }

    /// The wall-clock Unix time (seconds) of a tokio instant.
    pub fn unix_at(&self, at: Instant) -> i64 {
        let now = Instant::now();
        let wall = self.now_wall();
        let wall = if at >= now {
            wall + (at - now)
        } else {
            wall - (now - at)
        };
        to_unix(wall)
    }

    fn unix_now_f64(&self) -> f64 {
        match self.now_wall().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }
}

fn to_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_clock_follows_paused_time() {
        let clock = Clock::new();
        let before = clock.unix_now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.unix_now() - before, 3600);
        let at = clock.instant_at_unix(clock.unix_now() + 60);
        // Unix seconds are whole, so the instant lands within the last second before +60 s.
        let ahead = (at - Instant::now()).as_secs_f64();
        assert!(ahead > 59.0 && ahead <= 60.0, "{ahead}");
        assert_eq!(
            clock.unix_at(Instant::now() + Duration::from_secs(10)),
            clock.unix_now() + 10
        );
    }
}
