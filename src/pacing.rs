//! When a pass that a change triggers may start: one rule for the
//! controller's and the agent's loops.
//!
//! Coalesce only under load. A change that finds the loop idle runs a pass
//! at once. After a pass, a change waits until a quiet window has passed
//! since that pass's end: [`COST_FACTOR`] times the pass's own duration,
//! at most the loop's debounce. A cheap pass therefore delays the next
//! change by next to nothing — such as the no-op pass an agent makes for a
//! just-created object the controller has not processed yet, right before
//! the controller's status write arrives (a fixed window there cost ~50 ms
//! of apply → first packet, `benches/scale.rs`). A loop fed changes faster
//! than it passes spends at most 1 / (1 + [`COST_FACTOR`]) of its time in
//! passes while the window is below the debounce, and makes at most one
//! pass per debounce beyond that.
use std::time::Duration;

/// The quiet window after a pass, in multiples of that pass's duration.
pub const COST_FACTOR: u32 = 4;

/// The quiet window after a pass that took `took`, in a loop whose
/// debounce is `debounce`.
pub fn window(took: Duration, debounce: Duration) -> Duration {
    took.saturating_mul(COST_FACTOR).min(debounce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cheap_passes_leave_short_windows_and_the_debounce_caps_them() {
        let ms = Duration::from_millis;
        assert_eq!(window(Duration::ZERO, ms(50)), Duration::ZERO);
        assert_eq!(window(ms(2), ms(50)), ms(8));
        assert_eq!(window(ms(12), ms(50)), ms(48));
        assert_eq!(window(ms(13), ms(50)), ms(50));
        assert_eq!(window(Duration::from_secs(10), ms(50)), ms(50));
        assert_eq!(window(Duration::MAX, ms(75)), ms(75));
    }
}
