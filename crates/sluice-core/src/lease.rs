//! Leader election's timing (R8.3): several control processes share one database; the holder of
//! a lease row leads. The lease's expiry is kept in the database's clock; these rules keep a
//! leader from acting past it by its own (monotonic) clock.

/// How long a lease lasts from a renewal: a standby takes over at most this long after the
/// leader's last renewal. Short enough that a job's result sent during a change of leader is
/// taken by the next one within RunPod's SDK's retries of `job-done` (about 3 s of 503s).
pub const TTL_MS: u64 = 2_000;
/// How often the leader renews, and the longest a standby waits between asks: a leader rides
/// out three failed renewals in a row before its clock says step down (at 4/5 of the TTL).
pub const RENEW_EVERY_MS: u64 = 400;

/// Whether a leader must stop acting now. `renew_started` is when (by the leader's clock) it sent
/// its last *successful* renewal: the database set the expiry to its own time of executing it
/// plus `ttl`, which is no earlier than `renew_started + ttl`. Stepping down a fifth of the TTL
/// before that leaves room for the two clocks' rates to differ and for the leader's last pass.
pub fn must_step_down(renew_started: u64, now: u64, ttl: u64) -> bool {
    now >= renew_started.saturating_add(ttl - ttl / 5)
}

/// How long a standby waits before asking again, given how long the current lease has left
/// (`None`: nobody holds it, and this process lost a race for it or could not ask): never
/// longer than a renewal period, and soon when it is about to expire or free.
pub fn standby_wait(left_ms: Option<u64>) -> u64 {
    left_ms.unwrap_or(0).clamp(25, RENEW_EVERY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_steps_down_before_its_lease_can_expire() {
        let cases = [
            // (renew_started, now, ttl, step down?)
            (0, 0, TTL_MS, false),
            (0, 1_599, TTL_MS, false),
            (0, 1_600, TTL_MS, true),
            (0, 1_999, TTL_MS, true),
            (10_000, 11_000, TTL_MS, false),
            (10_000, 11_600, TTL_MS, true),
            (u64::MAX - 5, u64::MAX, TTL_MS, true),
            (0, 0, 0, true),
            (0, 799, 1_000, false),
            (0, 800, 1_000, true),
        ];
        for (started, now, ttl, expect) in cases {
            assert_eq!(must_step_down(started, now, ttl), expect, "{started} {now} {ttl}");
        }
        // A healthy leader never reaches the line, even with two renewals in a row failing.
        assert!(!must_step_down(0, RENEW_EVERY_MS * 3, TTL_MS));
        // A standby takes over within the TTL and one short wait of the leader's last renewal.
        assert!(TTL_MS + standby_wait(Some(0)) < 3_000);
    }

    #[test]
    fn standbys_ask_again_within_a_renewal_period() {
        assert_eq!(standby_wait(None), 25, "free: ask again soon");
        assert_eq!(standby_wait(Some(0)), 25);
        assert_eq!(standby_wait(Some(300)), 300);
        assert_eq!(standby_wait(Some(1_900)), RENEW_EVERY_MS);
    }
}
