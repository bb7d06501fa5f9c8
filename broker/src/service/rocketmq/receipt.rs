//! Receipt handles: what a client acknowledges a received message with, or changes its
//! invisibility by. A handle names one delivery: the queue, the message's offset and the
//! delivery's version (a redelivery or a change of invisibility makes a new version, so an
//! older handle is stale and changes nothing). It is checksummed together with the topic and
//! consumer group it was given for, so a handle that was altered, truncated or presented for
//! another topic or group is `INVALID_RECEIPT_HANDLE`, never another message's.

use proto::apache::rocketmq::v2::{Code, Status};

use super::status;

/// The longest handle accepted: the longest this module writes is well under it.
const HANDLE_BYTES_MAX: usize = 128;
/// The version of the handle's layout, its first field.
const LAYOUT: &str = "r1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Receipt {
    pub queue: u32,
    pub offset: u64,
    pub version: u32,
    /// When the delivery becomes visible again (ms since the epoch): informative only.
    pub invisible_until_ms: u64,
}

impl Receipt {
    /// The handle of this delivery to `consumer_group` of `topic` (raftmq's names).
    pub fn encode(&self, topic: &str, consumer_group: &str) -> String {
        let fields = format!("{LAYOUT}.{:x}.{:x}.{:x}.{:x}", self.queue, self.offset, self.version, self.invisible_until_ms);
        format!("{fields}.{:08x}", checksum(topic, consumer_group, &fields))
    }

    /// The delivery `handle` names, if it is one this module wrote for `consumer_group` of `topic`.
    pub fn decode(handle: &str, topic: &str, consumer_group: &str) -> Result<Self, Status> {
        let invalid = |why: &str| status(Code::InvalidReceiptHandle, format!("receipt handle {:?}: {why}", shorten(handle)));
        if handle.is_empty() {
            return Err(invalid("empty"));
        }
        if handle.len() > HANDLE_BYTES_MAX {
            return Err(invalid(&format!("{} bytes, a handle has at most {HANDLE_BYTES_MAX}", handle.len())));
        }
        let (fields, sum) = handle.rsplit_once('.').ok_or_else(|| invalid("not a raftmq receipt handle"))?;
        if u32::from_str_radix(sum, 16).ok() != Some(checksum(topic, consumer_group, fields)) {
            return Err(invalid("its checksum does not match: altered, or not given for this topic and consumer group"));
        }
        let parts: Vec<&str> = fields.split('.').collect();
        let [LAYOUT, queue, offset, version, until] = parts.as_slice() else {
            return Err(invalid("not a raftmq receipt handle"));
        };
        let bad = |_| invalid("a field is not hexadecimal");
        Ok(Self {
            queue: u32::from_str_radix(queue, 16).map_err(bad)?,
            offset: u64::from_str_radix(offset, 16).map_err(bad)?,
            version: u32::from_str_radix(version, 16).map_err(bad)?,
            invisible_until_ms: u64::from_str_radix(until, 16).map_err(bad)?,
        })
    }
}

fn checksum(topic: &str, consumer_group: &str, fields: &str) -> u32 {
    let mut crc = crc32c::crc32c(topic.as_bytes());
    crc = crc32c::crc32c_append(crc, &[0]);
    crc = crc32c::crc32c_append(crc, consumer_group.as_bytes());
    crc = crc32c::crc32c_append(crc, &[0]);
    crc32c::crc32c_append(crc, fields.as_bytes())
}

/// At most the first 64 characters of `s`, for an error message.
fn shorten(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Receipt = Receipt { queue: 3, offset: 1 << 40, version: 7, invisible_until_ms: 1_765_000_000_000 };

    #[test]
    fn a_handle_names_its_delivery_for_its_topic_and_group_only() {
        let handle = R.encode("orders", "billing");
        assert!(handle.len() <= HANDLE_BYTES_MAX);
        assert_eq!(Receipt::decode(&handle, "orders", "billing").unwrap(), R);
        let biggest = Receipt { queue: u32::MAX, offset: u64::MAX, version: u32::MAX, invisible_until_ms: u64::MAX };
        let handle_max = biggest.encode("t", "g");
        assert!(handle_max.len() <= HANDLE_BYTES_MAX, "{} bytes", handle_max.len());
        assert_eq!(Receipt::decode(&handle_max, "t", "g").unwrap(), biggest);

        for (h, topic, group) in [(&handle, "orders", "shipping"), (&handle, "payments", "billing")] {
            let refused = Receipt::decode(h, topic, group).unwrap_err();
            assert_eq!(refused.code, Code::InvalidReceiptHandle as i32);
        }
    }

    #[test]
    fn altered_or_foreign_handles_are_invalid() {
        let handle = R.encode("orders", "billing");
        let altered = handle.replacen(".7.", ".8.", 1);
        assert_ne!(altered, handle);
        let too_long = "a".repeat(HANDLE_BYTES_MAX + 1);
        for h in [altered.as_str(), "", "garbage", &handle[..handle.len() - 1], too_long.as_str(), "r1.x.1.1.1.00000000"] {
            let refused = Receipt::decode(h, "orders", "billing").unwrap_err();
            assert_eq!(refused.code, Code::InvalidReceiptHandle as i32, "{h:?}");
        }
    }
}
