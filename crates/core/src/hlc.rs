//! Hybrid logical clocks (Kulkarni et al., "Logical Physical Clocks", 2014).
//!
//! A timestamp is a 64-bit number: the upper 48 bits are physical milliseconds since the Unix
//! epoch, the lower 16 a logical counter. Timestamps from one clock strictly increase even when the
//! wall clock stalls or steps back, stay close to physical time, and advance past any timestamp
//! the node has observed from others — which is what orders versions of an item across replicas
//! (last writer wins among concurrent blind writes; consensus orders the rest).

use std::fmt;

/// Bits of a timestamp that hold the logical counter.
pub const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A hybrid-logical-clock timestamp. Ordered as a plain integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The smallest timestamp; older than every real one.
    pub const ZERO: Timestamp = Timestamp(0);

    /// Builds a timestamp from physical milliseconds and a logical counter.
    pub fn new(physical_ms: u64, logical: u16) -> Timestamp {
        Timestamp((physical_ms << LOGICAL_BITS) | u64::from(logical))
    }

    /// The physical part, in milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// One node's hybrid logical clock. The caller supplies physical time on every call.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    last: Timestamp,
}

impl Clock {
    /// A clock that has issued nothing yet.
    pub fn new() -> Clock {
        Clock::default()
    }

    /// The latest timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// Issues a timestamp for a local event at wall-clock time `physical_ms`: strictly greater
    /// than every timestamp issued or observed before.
    pub fn now(&mut self, physical_ms: u64) -> Timestamp {
        let next = if physical_ms > self.last.physical_ms() {
            Timestamp::new(physical_ms, 0)
        } else {
            self.successor_of_last()
        };
        debug_assert!(next > self.last);
        self.last = next;
        next
    }

    /// Takes note of a timestamp received from another node, so later local timestamps follow it.
    pub fn observe(&mut self, remote: Timestamp, physical_ms: u64) -> Timestamp {
        if remote > self.last {
            self.last = remote;
        }
        self.now(physical_ms)
    }

    fn successor_of_last(&self) -> Timestamp {
        // When the logical counter is exhausted we borrow the next millisecond: still monotonic,
        // and the drift from physical time is bounded by the event rate.
        Timestamp(self.last.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase_when_time_stalls_or_steps_back() {
        let mut clock = Clock::new();
        let first = clock.now(1_000);
        let second = clock.now(1_000);
        let third = clock.now(900);
        assert!(first < second && second < third);
        assert_eq!(third.physical_ms(), 1_000);
        assert_eq!(third.logical(), 2);
        assert_eq!(clock.now(2_000), Timestamp::new(2_000, 0));
    }

    #[test]
    fn observing_a_future_timestamp_moves_the_clock_past_it() {
        let mut clock = Clock::new();
        let remote = Timestamp::new(5_000, 7);
        let local = clock.observe(remote, 1_000);
        assert!(local > remote);
        assert!(clock.now(1_001) > local);
    }

    #[test]
    fn logical_overflow_borrows_the_next_millisecond() {
        let mut clock = Clock { last: Timestamp::new(10, u16::MAX) };
        let next = clock.now(10);
        assert_eq!(next, Timestamp::new(11, 0));
    }
}
