//! The deadline a client puts on its request (gRPC's `grpc-timeout` header), as the time this
//! broker has to answer it.
//!
//! tonic's server already drops a handler at the deadline and answers CANCELLED, which says
//! nothing about what was done. The client services instead answer a little before it, with a
//! status that does: a send whose entry did not commit in time is OUTCOME_UNKNOWN (it may still
//! commit), a leader that was not ready in time is UNAVAILABLE (nothing was done).

use std::time::Duration;

use tokio::time::Instant;

/// The answer is due this much before the client's deadline, so that it arrives before the
/// client gives up (a tenth of short deadlines).
const ANSWER_MARGIN_MAX: Duration = Duration::from_millis(50);
/// The header of a client's deadline.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";
/// gRPC's limit: at most 8 digits (PROTOCOL-HTTP2.md, "Timeout").
const DIGITS_MAX: usize = 8;

/// How long this broker has to answer `request`; `None` when the client set no deadline.
pub(crate) fn answer_within<T>(request: &tonic::Request<T>) -> Option<Duration> {
    answer_within_timeout(request.metadata().get(GRPC_TIMEOUT)?.to_str().ok()?)
}

/// How long this broker has to answer a request whose `grpc-timeout` header is `header`.
pub(crate) fn answer_within_timeout(header: &str) -> Option<Duration> {
    let timeout = parse_grpc_timeout(header)?;
    Some(timeout.saturating_sub((timeout / 10).min(ANSWER_MARGIN_MAX)))
}

/// When this broker's answer to `request` is due (see [`answer_within`]), from now.
pub(crate) fn answer_by<T>(request: &tonic::Request<T>) -> Option<Instant> {
    answer_within(request).map(|w| Instant::now() + w)
}

/// The time left until `due`.
pub(crate) fn left(due: Option<Instant>) -> Option<Duration> {
    due.map(|d| d.saturating_duration_since(Instant::now()))
}

/// `limit`, or less when the client's deadline leaves less.
pub(crate) fn at_most(limit: Duration, within: Option<Duration>) -> Duration {
    within.map_or(limit, |w| w.min(limit))
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > DIGITS_MAX || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        let ms = Duration::from_millis;
        for (value, want) in [
            ("3S", ms(3000)),
            ("250m", ms(250)),
            ("1M", ms(60_000)),
            ("2H", ms(7_200_000)),
            ("1500u", ms(1) + Duration::from_micros(500)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            assert_eq!(parse_grpc_timeout(value), Some(want), "{value}");
        }
        for bad in ["", "S", "3", "3s", "123456789S", "-1S", "1.5S", "3 S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_answer_is_due_before_the_clients_deadline() {
        let with = |value: &str| {
            let mut r = tonic::Request::new(());
            r.metadata_mut().insert("grpc-timeout", value.parse().expect("header"));
            answer_within(&r)
        };
        assert_eq!(with("10S"), Some(Duration::from_millis(9950)));
        assert_eq!(with("200m"), Some(Duration::from_millis(180)));
        assert_eq!(with("0m"), Some(Duration::ZERO));
        assert_eq!(with("bogus"), None);
        assert_eq!(answer_within(&tonic::Request::new(())), None);
        assert_eq!(at_most(Duration::from_secs(2), Some(Duration::from_millis(180))), Duration::from_millis(180));
        assert_eq!(at_most(Duration::from_secs(2), None), Duration::from_secs(2));
    }
}
