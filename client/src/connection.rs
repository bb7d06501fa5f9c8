//! Channels to brokers, one per client endpoint and reused by every call to it, and the
//! settings every call shares: deadlines and the largest reply accepted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use tonic::transport::{Channel, Endpoint};

use super::status::CallError;

/// Default deadline (`--timeout`) of a call that does not wait on purpose (all but a long-polling fetch),
/// retries included. RocketMQ's send timeout is 3 s; a raftmq queue lives in one Raft group,
/// so the deadline must also cover that group's failover: detection and election (1.5 to 3 s
/// with the broker's default election timeout) and the new leader's lease (up to 2 s).
pub const TIMEOUT_DEFAULT: &str = "10s";
/// The longest `--timeout` accepted.
const TIMEOUT_MAX: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pings on an idle connection find a broker that vanished without closing it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest reply decoded. A fetch asks for at most `FETCH_BYTES_MAX` but always gets its
/// first message whole, which may be as large as the broker's body limit (4 MiB by default);
/// tonic's own default (4 MiB) would refuse such a reply.
pub const REPLY_BYTES_MAX: usize = 64 << 20;
/// Endpoints kept at once: a cluster has few brokers, so more means hints from many clusters
/// or a bug; the cache then starts over rather than grow.
const ENDPOINTS_MAX: usize = 256;

/// Checks a `HOST:PORT` endpoint given on the command line (`[::1]:8081` for IPv6).
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    if s.contains("://") {
        return Err(format!("{s:?}: give HOST:PORT, without a scheme"));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?}: expected HOST:PORT"));
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty() && !host.contains([':', '/', '[', ']']) && !host.contains(char::is_whitespace)
    };
    if !host_ok {
        return Err(format!("{s:?}: bad host {host:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(s.to_string()),
        _ => Err(format!("{s:?}: bad port {port:?}")),
    }
}

/// Parses `--timeout`: `250ms`, `3s`, `1.5s`, `2m`, or a bare number of seconds; more than
/// zero and at most an hour.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s or m)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("{s:?}: expected a number with ms, s or m, like 3s"))?;
    let d = Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() || d > TIMEOUT_MAX {
        return Err(format!("{s:?}: must be more than 0 and at most {} s", TIMEOUT_MAX.as_secs()));
    }
    Ok(d)
}

/// One lazily connected channel per endpoint. A channel reconnects by itself after a failure,
/// so it is kept for the whole run.
#[derive(Default)]
pub struct ChannelCache {
    channels: Mutex<HashMap<String, Channel>>,
}

impl ChannelCache {
    pub fn get(&self, endpoint: &str) -> Result<Channel, CallError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let bad = |message: String| CallError::BadEndpoint { endpoint: endpoint.to_string(), message };
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| bad(e.to_string()))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .connect_lazy();
        if channels.len() >= ENDPOINTS_MAX {
            channels.clear();
        }
        channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }
}

pub fn queue_client(channel: Channel) -> QueueServiceClient<Channel> {
    QueueServiceClient::new(channel).max_decoding_message_size(REPLY_BYTES_MAX)
}

pub fn admin_client(channel: Channel) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(channel).max_decoding_message_size(REPLY_BYTES_MAX)
}

/// `message` as a request that the transport abandons after `timeout`.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for good in ["127.0.0.1:8081", "broker-1.example:1", "[::1]:8081", "localhost:65535"] {
            assert_eq!(parse_endpoint(good).as_deref(), Ok(good));
        }
        for bad in ["127.0.0.1", "http://127.0.0.1:8081", ":8081", "host:0", "host:65536", "host:x", "::1:8081", "[::1]", "[zz]:1", "a b:1"]
        {
            assert!(parse_endpoint(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn timeouts() {
        let ms = Duration::from_millis;
        for (text, want) in
            [("3s", ms(3000)), ("250ms", ms(250)), ("1.5s", ms(1500)), ("2m", ms(120_000)), ("7", ms(7000)), ("3600s", ms(3_600_000))]
        {
            assert_eq!(parse_timeout(text), Ok(want), "{text}");
        }
        for bad in ["", "0", "0s", "3h", "-1s", "s", "1.2.3s", "3601s", "1e9"] {
            assert!(parse_timeout(bad).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn one_channel_per_endpoint_and_bad_hints_refused() {
        let cache = ChannelCache::default();
        cache.get("127.0.0.1:1").expect("channel");
        cache.get("127.0.0.1:1").expect("channel");
        assert_eq!(cache.channels.lock().expect("lock").len(), 1);
        assert!(matches!(cache.get("bad host:1"), Err(CallError::BadEndpoint { .. })));
    }
}
