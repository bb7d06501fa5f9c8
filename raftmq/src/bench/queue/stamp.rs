//! The head of an e2e benchmark message: which run sent it, its sequence, and when it was sent,
//! so the consuming side measures send-to-consume latency from the body alone and skips
//! messages of other runs in the same topic.
//!
//! Layout (little-endian): `RMQB` | run id u64 | sequence u64 | nanoseconds since the run's
//! start u64, then padding to the message size. Sender and consumer are one process, so the
//! times are on one monotonic clock.

pub const STAMP_LEN: usize = 28;
const MAGIC: &[u8; 4] = b"RMQB";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub run_id: u64,
    pub sequence: u64,
    pub sent_ns: u64,
}

impl Stamp {
    /// A body of `size` bytes (at least `STAMP_LEN`) that starts with this stamp.
    pub fn body(&self, size: usize) -> Vec<u8> {
        debug_assert!(size >= STAMP_LEN, "a stamped body of {size} bytes");
        let mut body = Vec::with_capacity(size.max(STAMP_LEN));
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&self.run_id.to_le_bytes());
        body.extend_from_slice(&self.sequence.to_le_bytes());
        body.extend_from_slice(&self.sent_ns.to_le_bytes());
        body.resize(size.max(STAMP_LEN), b'.');
        body
    }

    /// The stamp at the head of `body`, if it has one.
    pub fn read(body: &[u8]) -> Option<Self> {
        let head = body.get(..STAMP_LEN)?;
        if &head[..4] != MAGIC {
            return None;
        }
        let word = |at: usize| head.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        Some(Self { run_id: word(4)?, sequence: word(12)?, sent_ns: word(20)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Stamp { run_id: 0xdead_beef, sequence: 42, sent_ns: 1_234_567_890 };
        let body = s.body(100);
        assert_eq!(body.len(), 100);
        assert_eq!(Stamp::read(&body), Some(s));
        assert_eq!(Stamp::read(&s.body(STAMP_LEN)), Some(s));
    }

    #[test]
    fn foreign_bodies_have_no_stamp() {
        let s = Stamp { run_id: 1, sequence: 2, sent_ns: 3 }.body(STAMP_LEN);
        assert_eq!(Stamp::read(&s[..STAMP_LEN - 1]), None, "too short");
        assert_eq!(Stamp::read(b"seq=1 abcdefghijklmnopqrstuvwxyz"), None);
        assert_eq!(Stamp::read(b""), None);
    }
}
