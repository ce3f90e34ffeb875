//! Hybrid logical clock (混合逻辑时钟) for timeline entries.
//!
//! Each device stamps its entries with `max(wall clock, last seen) + counter`, and moves its clock
//! forward when it sees entries from others. The timeline is ordered by (HLC, entry id), which is a
//! total order every replica agrees on, and respects causality even when a phone's clock is off.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// 2020-01-01T00:00:00Z: no Gridlink entry can be older.
pub const EARLIEST_MS: i64 = 1_577_836_800_000;
/// How far ahead of the receiver's clock an entry may be (devices with a skewed clock still sync).
pub const MAX_FUTURE_SKEW_MS: i64 = 7 * 24 * 3_600_000;

/// A hybrid-logical-clock timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Physical part: unix milliseconds.
    pub wall_ms: i64,
    /// Logical part, to order events within one millisecond.
    pub counter: u32,
}

impl Hlc {
    /// Refuses timestamps that cannot be right relative to the receiver's clock `now_ms`.
    pub fn check_sane(&self, now_ms: i64) -> Result<()> {
        if self.wall_ms < EARLIEST_MS || self.wall_ms > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
            return Err(CoreError::AbsurdClock);
        }
        Ok(())
    }
}

/// The clock state a device keeps (persisted in its store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HlcClock {
    last: Option<Hlc>,
}

impl HlcClock {
    /// Restores a clock from its last issued or observed timestamp.
    pub fn from_last(last: Option<Hlc>) -> Self {
        Self { last }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Option<Hlc> {
        self.last
    }

    /// Issues a new timestamp, strictly after every one issued or observed before.
    pub fn tick(&mut self, wall_ms: i64) -> Hlc {
        let next = match self.last {
            Some(l) if l.wall_ms >= wall_ms => Hlc { wall_ms: l.wall_ms, counter: l.counter.saturating_add(1) },
            _ => Hlc { wall_ms, counter: 0 },
        };
        self.last = Some(next);
        next
    }

    /// Takes note of a timestamp seen in another device's entry.
    pub fn observe(&mut self, seen: Hlc) {
        if self.last.is_none_or(|l| seen > l) {
            self.last = Some(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_even_when_wall_clock_goes_back() {
        let mut c = HlcClock::default();
        let a = c.tick(EARLIEST_MS + 1000);
        let b = c.tick(EARLIEST_MS + 500);
        assert!(b > a);
        c.observe(Hlc { wall_ms: EARLIEST_MS + 9000, counter: 3 });
        let d = c.tick(EARLIEST_MS + 2000);
        assert_eq!(d, Hlc { wall_ms: EARLIEST_MS + 9000, counter: 4 });
    }

    #[test]
    fn absurd_clocks_are_refused() {
        let now = EARLIEST_MS + 365 * 86_400_000;
        assert!(Hlc { wall_ms: 0, counter: 0 }.check_sane(now).is_err());
        assert!(Hlc { wall_ms: now + MAX_FUTURE_SKEW_MS + 1, counter: 0 }.check_sane(now).is_err());
        assert!(Hlc { wall_ms: now + 3 * 86_400_000, counter: 0 }.check_sane(now).is_ok());
    }
}
