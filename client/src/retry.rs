//! The retry decision, pure: after a failed attempt, whether to go on, where, and after what
//! pause. Every call makes at most [`RetryPolicy::attempts_max`] attempts.

use std::time::Duration;

use super::status::CallError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of one call in all, the first included.
    pub attempts_max: u32,
    /// Pause before the first retry at the same place; doubled for each later one.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, pauses 50 ms doubling up to 1 s: about 5.5 s of pauses in all. A leader's
    /// crash costs its detection and an election (the broker's election timeout is 1.5 to 3 s by
    /// default) plus up to 2 s for the new leader to be ready; with 8 attempts (3.5 s), sends
    /// during a `kill -9` of a leader on a local cluster ran out of attempts.
    fn default() -> Self {
        Self { attempts_max: 10, backoff_first: Duration::from_millis(50), backoff_max: Duration::from_secs(1) }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Give up: the error is final, or the attempts are used up.
    Fail,
    /// Try again at the leader the broker named.
    Redirect { endpoint: String, delay: Duration },
    /// Try again after `delay`; with `refresh_route`, first learn the leader anew (the one
    /// tried may be gone or no longer lead).
    Retry { delay: Duration, refresh_route: bool },
}

impl RetryPolicy {
    /// The decision after `attempts_made` attempts (1 or more), the last of which failed with
    /// `error`.
    pub fn next(&self, attempts_made: u32, error: &CallError) -> Next {
        if attempts_made >= self.attempts_max {
            return Next::Fail;
        }
        let delay = self.backoff(attempts_made);
        match error {
            // A redirect is not a failure of the leader: the first one goes at once. Stale hints
            // that bounce between brokers (during an election) slow down like any retry.
            CallError::NotLeader { leader: Some(endpoint), .. } => {
                Next::Redirect { endpoint: endpoint.clone(), delay: self.backoff(attempts_made - 1) }
            }
            // A retry after OUTCOME_UNKNOWN may store a send twice; the caller learns of it from
            // `CallError::maybe_applied` (there is no deduplication yet).
            CallError::NotLeader { leader: None, .. } | CallError::Unavailable { .. } | CallError::OutcomeUnknown { .. } => {
                Next::Retry { delay, refresh_route: true }
            }
            CallError::Busy { .. } => Next::Retry { delay, refresh_route: false },
            CallError::Transport { code, .. } if transport_is_retryable(*code) => Next::Retry { delay, refresh_route: true },
            _ => Next::Fail,
        }
    }

    /// Pause before retry number `n` (1 = the first retry); none before the first attempt.
    pub fn backoff(&self, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
        self.backoff_first.saturating_mul(factor).min(self.backoff_max)
    }
}

/// Transport failures worth another attempt: the broker was unreachable, slow, or the
/// connection broke. Others (unknown method, a message over a size limit) fail again.
fn transport_is_retryable(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(code, C::Unavailable | C::DeadlineExceeded | C::Unknown | C::Cancelled | C::Aborted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn err(code: tonic::Code) -> CallError {
        CallError::Transport { code, message: String::new() }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let got: Vec<Duration> = (0..9).map(|n| p.backoff(n)).collect();
        assert_eq!(got, [0, 50, 100, 200, 400, 800, 1000, 1000, 1000].map(ms));
        assert_eq!(p.backoff(u32::MAX), ms(1000));
    }

    #[test]
    fn decisions() {
        let p = RetryPolicy::default();
        let m = String::new;
        let hint = CallError::NotLeader { leader: Some("b2:8081".into()), message: m() };
        let cases = [
            (1, hint.clone(), Next::Redirect { endpoint: "b2:8081".into(), delay: ms(0) }),
            (3, hint.clone(), Next::Redirect { endpoint: "b2:8081".into(), delay: ms(100) }),
            (1, CallError::NotLeader { leader: None, message: m() }, Next::Retry { delay: ms(50), refresh_route: true }),
            (2, CallError::Busy { message: m() }, Next::Retry { delay: ms(100), refresh_route: false }),
            (1, CallError::Unavailable { message: m() }, Next::Retry { delay: ms(50), refresh_route: true }),
            (1, CallError::OutcomeUnknown { message: m() }, Next::Retry { delay: ms(50), refresh_route: true }),
            (1, err(tonic::Code::Unavailable), Next::Retry { delay: ms(50), refresh_route: true }),
            (1, err(tonic::Code::DeadlineExceeded), Next::Retry { delay: ms(50), refresh_route: true }),
            (1, err(tonic::Code::Unimplemented), Next::Fail),
            (1, err(tonic::Code::ResourceExhausted), Next::Fail),
            (1, CallError::InvalidArgument { field: "topic".into(), message: m() }, Next::Fail),
            (9, CallError::Busy { message: m() }, Next::Retry { delay: ms(1000), refresh_route: false }),
            (1, CallError::NotFound { message: m() }, Next::Fail),
            (1, CallError::Internal { message: m() }, Next::Fail),
            (1, CallError::AlreadyExists { message: m() }, Next::Fail),
            (1, CallError::FailedPrecondition { message: m() }, Next::Fail),
            (1, CallError::ResourceExhausted { message: m() }, Next::Fail),
            (1, CallError::BadStatus { code: 0, message: m() }, Next::Fail),
            (1, CallError::BadEndpoint { endpoint: "x".into(), message: m() }, Next::Fail),
            // The attempts are bounded whatever the error.
            (10, hint, Next::Fail),
            (10, CallError::Busy { message: m() }, Next::Fail),
        ];
        for (attempts, error, want) in cases {
            assert_eq!(p.next(attempts, &error), want, "after {attempts} attempts: {error}");
        }
    }
}
