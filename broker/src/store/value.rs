//! Encoding of the store's values: a format byte, a payload (fixed-size little-endian numbers,
//! or for the raft state a bounded opaque blob) and a CRC32C of both, so that a damaged or
//! truncated value is refused instead of decoded.

/// The only value format so far.
const FORMAT_V1: u8 = 1;
const CRC_LEN: usize = 4;

/// Where the message stored at one queue offset lives in the Raft log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexEntry {
    /// Index of the Raft log entry that holds the message.
    pub log_index: u64,
    /// Ordinal of the message within that entry's command (0 for its first message).
    pub position: u32,
    /// Length of the message in bytes.
    pub size: u32,
    /// Hash of the message's tag, for server-side tag filtering.
    pub tag_hash: u64,
    /// When the leader stored the message (milliseconds since the Unix epoch).
    pub store_time_ms: u64,
}

const INDEX_PAYLOAD_LEN: usize = 8 + 4 + 4 + 8 + 8;

impl IndexEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(INDEX_PAYLOAD_LEN);
        p.extend_from_slice(&self.log_index.to_le_bytes());
        p.extend_from_slice(&self.position.to_le_bytes());
        p.extend_from_slice(&self.size.to_le_bytes());
        p.extend_from_slice(&self.tag_hash.to_le_bytes());
        p.extend_from_slice(&self.store_time_ms.to_le_bytes());
        seal(&p)
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, String> {
        let p = unseal(value, INDEX_PAYLOAD_LEN)?;
        Ok(Self {
            log_index: le_u64(&p[0..8]),
            position: le_u32(&p[8..12]),
            size: le_u32(&p[12..16]),
            tag_hash: le_u64(&p[16..24]),
            store_time_ms: le_u64(&p[24..32]),
        })
    }
}

/// A single number: an applied index, a next offset or a consumer offset.
pub(crate) fn encode_u64(v: u64) -> Vec<u8> {
    seal(&v.to_le_bytes())
}

pub(crate) fn decode_u64(value: &[u8]) -> Result<u64, String> {
    unseal(value, 8).map(le_u64)
}

/// The value of the import marker: no payload.
pub(crate) fn encode_marker() -> Vec<u8> {
    seal(&[])
}

pub(crate) fn decode_marker(value: &[u8]) -> Result<(), String> {
    unseal(value, 0).map(|_| ())
}

/// Largest raft state blob a value may hold (see [`super::QueueStore::raft_state`]).
pub const RAFT_STATE_BYTES_MAX: usize = 64 << 10;

/// The raft state: an opaque blob of at most [`RAFT_STATE_BYTES_MAX`] bytes (callers check the
/// length first).
pub(crate) fn encode_blob(blob: &[u8]) -> Vec<u8> {
    seal(blob)
}

pub(crate) fn decode_blob(value: &[u8]) -> Result<Vec<u8>, String> {
    // The length bound comes first: a value claiming more is damage, never decoded.
    let payload_len =
        value.len().checked_sub(1 + CRC_LEN).ok_or_else(|| format!("value has {} bytes, shorter than format and checksum", value.len()))?;
    if payload_len > RAFT_STATE_BYTES_MAX {
        return Err(format!("raft state of {payload_len} bytes is over the limit of {RAFT_STATE_BYTES_MAX}"));
    }
    unseal(value, payload_len).map(<[u8]>::to_vec)
}

fn seal(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + payload.len() + CRC_LEN);
    v.push(FORMAT_V1);
    v.extend_from_slice(payload);
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// The payload of a sealed value, once its length, format and checksum are right.
fn unseal(value: &[u8], payload_len: usize) -> Result<&[u8], String> {
    let want = 1 + payload_len + CRC_LEN;
    if value.len() != want {
        return Err(format!("value has {} bytes, expected {want}", value.len()));
    }
    if value[0] != FORMAT_V1 {
        return Err(format!("unknown value format {}", value[0]));
    }
    let (body, crc) = value.split_at(want - CRC_LEN);
    let stored = le_u32(crc);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    Ok(&body[1..])
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> IndexEntry {
        IndexEntry { log_index: 1 << 33, position: 4096, size: 1234, tag_hash: 0xDEAD_BEEF_0BAD_F00D, store_time_ms: 1_764_000_000_000 }
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(IndexEntry::decode(&entry().encode()).unwrap(), entry());
        assert_eq!(IndexEntry::decode(&IndexEntry::default().encode()).unwrap(), IndexEntry::default());
        for v in [0, 1, u64::MAX] {
            assert_eq!(decode_u64(&encode_u64(v)).unwrap(), v);
        }
        decode_marker(&encode_marker()).unwrap();
        for blob in [vec![], vec![7u8; 300], vec![1u8; RAFT_STATE_BYTES_MAX]] {
            assert_eq!(decode_blob(&encode_blob(&blob)).unwrap(), blob);
        }
    }

    #[test]
    fn a_damaged_or_oversized_blob_is_refused() {
        let good = encode_blob(b"raft state");
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_blob(&bad).is_err(), "bit {bit} flipped went unnoticed");
        }
        assert!(decode_blob(&good[..good.len() - 1]).is_err(), "truncated");
        assert!(decode_blob(&[1, 0, 0, 0]).is_err(), "shorter than format and checksum");
        assert!(decode_blob(&encode_blob(&vec![0; RAFT_STATE_BYTES_MAX + 1])).unwrap_err().contains("limit"));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = entry().encode();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(IndexEntry::decode(&bad).is_err(), "bit {bit} flipped went unnoticed");
        }
    }

    #[test]
    fn wrong_length_or_format_is_refused() {
        let good = entry().encode();
        assert!(IndexEntry::decode(&good[..good.len() - 1]).is_err());
        assert!(IndexEntry::decode(&[good.as_slice(), &[0]].concat()).is_err());
        assert!(IndexEntry::decode(&[]).is_err());
        // A u64 value where an index entry belongs (and the reverse) is a length mismatch.
        assert!(IndexEntry::decode(&encode_u64(5)).is_err());
        assert!(decode_u64(&good).is_err());
        let mut v2 = encode_u64(5);
        v2[0] = 2;
        let crc = crc32c::crc32c(&v2[..9]);
        v2[9..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_u64(&v2).unwrap_err().contains("format"));
    }
}
