//! The values producers send: unique, of varied length, and checksummed, so that a read value
//! that was damaged anywhere (disk, replication, the client path) is told apart from one that
//! was merely never sent.
//!
//! Layout: `{label}.{padding}~{crc}`: `label` names the producer and sequence number (`p3-17`),
//! `padding` is a seeded run of letters that varies the size, and `crc` is the CRC-32C of
//! everything before the `~`, as eight lowercase hex digits.

/// The value for `label` with `padding`, checksummed.
pub fn checksummed(label: &str, padding: &str) -> String {
    let body = format!("{label}.{padding}");
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body}~{crc:08x}")
}

/// Whether `value` carries a checksum that matches its content.
pub fn verifies(value: &str) -> bool {
    let Some((body, crc)) = value.rsplit_once('~') else { return false };
    crc.len() == 8
        && crc.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && u32::from_str_radix(crc, 16).is_ok_and(|crc| crc == crc32c::crc32c(body.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksummed_value_verifies_and_any_damage_to_it_does_not() {
        let v = checksummed("p3-17", "qwertyuiop");
        assert!(v.starts_with("p3-17.qwertyuiop~"), "{v}");
        assert!(verifies(&v));
        // Every single-byte change, anywhere in the value, is caught.
        for i in 0..v.len() {
            let mut bytes = v.clone().into_bytes();
            bytes[i] ^= 0x01;
            let damaged = String::from_utf8_lossy(&bytes);
            assert!(!verifies(&damaged), "{damaged} verifies");
        }
        // Truncated, extended or without a checksum at all.
        assert!(!verifies(&v[..v.len() - 1]));
        assert!(!verifies(&format!("{v}0")));
        assert!(!verifies("p3-17"));
        assert!(!verifies(""));
    }
}
