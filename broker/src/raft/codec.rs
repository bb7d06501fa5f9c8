//! The bytes of openraft's messages on the wire: bincode of their serde form, bounded.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded Raft message accepted from a peer: the transport's bound (see
/// [`crate::size_limits`] for why every AppendEntries fits in it).
pub const RAFT_MESSAGE_BYTES_MAX: u64 = crate::size_limits::TRANSPORT_MESSAGE_BYTES_MAX as u64;

#[derive(Debug, thiserror::Error)]
#[error("raft message encoding: {0}")]
pub struct CodecError(String);

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serialize(value).map_err(|e| CodecError(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    use bincode::Options;
    // The limit keeps a corrupt length prefix from allocating without bound.
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(RAFT_MESSAGE_BYTES_MAX)
        .deserialize(bytes)
        .map_err(|e| CodecError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refuse_oversized_lengths() {
        let v: Vec<u64> = (0..100).collect();
        assert_eq!(decode::<Vec<u64>>(&encode(&v).unwrap()).unwrap(), v);
        // A length prefix claiming 2^60 elements must fail, not allocate.
        let mut bogus = (1u64 << 60).to_le_bytes().to_vec();
        bogus.extend_from_slice(&[0u8; 16]);
        assert!(decode::<Vec<u64>>(&bogus).is_err());
        assert!(decode::<Vec<u64>>(&[1, 2, 3]).is_err(), "truncated input");
    }
}
