//! Validation of client input at the edge. Every request is checked here before anything is
//! proposed to Raft, and every violation is an [`InvalidArgument`] naming the field, the value's
//! problem and the limit, so the gRPC layer answers `INVALID_ARGUMENT` with that field.

use std::fmt;

/// The limits on client requests (the `[limits]` section of a broker's options), enforced at
/// the edge before anything is proposed; each has a documented default. All above 0.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message body in bytes. Default 4 MiB.
    pub body_bytes_max: usize,
    /// Largest total size of a message's properties (keys and values, UTF-8 bytes). Default 16 KiB.
    pub properties_bytes_max: usize,
    /// Longest topic or consumer group name. Default 127 (the pattern `[%|a-zA-Z0-9_-]{1,127}`).
    pub name_chars_max: usize,
    /// Most messages in one send request. Default 256.
    pub messages_per_send_max: usize,
    /// Most keys of one message. Default 64.
    pub keys_per_message_max: usize,
    /// Longest tag or key in bytes. Default 1 KiB.
    pub tag_bytes_max: usize,
    /// Longest a fetch may wait for messages. Default 30000.
    pub fetch_wait_ms_max: u64,
    /// Concurrent requests (HTTP/2 streams) per client connection. Default 1,024.
    pub in_flight_requests_per_connection: usize,
    /// Bytes of client requests (every RPC, each body counted whole as it arrives, before it
    /// is decoded) read, decoded or served at once on this broker, over all connections. A
    /// request that finds no room waits, unread (HTTP/2 flow control holds its client back),
    /// until there is, or until just before its deadline: then RESOURCE_EXHAUSTED, nothing
    /// done. At least the largest request ([`crate::size_limits::client_request_bytes_max`]).
    /// Formerly `in_flight_send_bytes_max` (sends only, counted once decoded, BUSY when full),
    /// still read under that name. Default 256 MiB.
    #[serde(alias = "in_flight_send_bytes_max")]
    pub in_flight_request_bytes_max: usize,
    /// The most consumer groups a queue takes commits from; a commit under one more name is
    /// RESOURCE_EXHAUSTED. Stamped by the leader into each commit's entry, so every replica
    /// decides alike; at most [`crate::queue::CONSUMER_GROUPS_PER_QUEUE_MAX`] (16,383, what a
    /// checkpoint holds with the queue's own offset). Default 1,024: a checkpoint of a queue at
    /// the bound is then at most about 270 KiB (names of 255 bytes), and a group holds at most
    /// 65 of them.
    pub consumer_groups_per_queue_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes_max: 4 << 20,
            properties_bytes_max: 16 << 10,
            name_chars_max: 127,
            messages_per_send_max: 256,
            keys_per_message_max: 64,
            tag_bytes_max: 1 << 10,
            fetch_wait_ms_max: 30_000,
            in_flight_requests_per_connection: 1024,
            in_flight_request_bytes_max: 256 << 20,
            consumer_groups_per_queue_max: 1024,
        }
    }
}

impl Limits {
    /// What is wrong with these limits, as (key, reason): each must be above 0, and a
    /// connection's in-flight requests fit HTTP/2's stream count (a u32).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let counts = [
            ("body_bytes_max", self.body_bytes_max),
            ("properties_bytes_max", self.properties_bytes_max),
            ("name_chars_max", self.name_chars_max),
            ("messages_per_send_max", self.messages_per_send_max),
            ("keys_per_message_max", self.keys_per_message_max),
            ("tag_bytes_max", self.tag_bytes_max),
            ("in_flight_requests_per_connection", self.in_flight_requests_per_connection),
            ("in_flight_request_bytes_max", self.in_flight_request_bytes_max),
        ];
        let mut problems: Vec<_> = counts.into_iter().filter(|(_, v)| *v == 0).map(|(k, _)| (k, "must be above 0".to_owned())).collect();
        if self.fetch_wait_ms_max == 0 {
            problems.push(("fetch_wait_ms_max", "must be above 0".to_owned()));
        }
        if self.in_flight_requests_per_connection > u32::MAX as usize {
            problems.push(("in_flight_requests_per_connection", format!("must be at most {}", u32::MAX)));
        }
        problems
    }

    /// The longest a `Fetch` long-polls.
    pub fn fetch_wait_max(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.fetch_wait_ms_max)
    }
}

/// One rejected field: answered as `INVALID_ARGUMENT` with `field` set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidArgument {
    /// The field, with indexes where it is inside a list: `messages[3].body`.
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl fmt::Display, reason: impl Into<String>) -> InvalidArgument {
    InvalidArgument { field: field.to_string(), reason: reason.into() }
}

/// Checks a topic or consumer group name: 1 to `name_chars_max` characters from
/// `[%|a-zA-Z0-9_-]` (RocketMQ's rule; `%` and `|` appear in its namespaced and retry names).
pub fn check_name(field: &str, name: &str, limits: &Limits) -> Result<(), InvalidArgument> {
    if name.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.len() > limits.name_chars_max {
        return Err(invalid(field, format!("{} characters, over the limit of {}", name.len(), limits.name_chars_max)));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-'))) {
        return Err(invalid(field, format!("character {c:?} at byte {at} is not allowed; use [%|a-zA-Z0-9_-]")));
    }
    Ok(())
}

/// What the edge checks of one message.
pub struct MessageParts<'a> {
    pub body: &'a [u8],
    pub properties: &'a [(String, String)],
    pub tag: Option<&'a str>,
    pub keys: &'a [String],
}

/// Checks one message (`field` is its place, e.g. `messages[2]`).
pub fn check_message(field: &str, m: &MessageParts<'_>, limits: &Limits) -> Result<(), InvalidArgument> {
    if m.body.len() > limits.body_bytes_max {
        return Err(invalid(format!("{field}.body"), format!("{} bytes, over the limit of {}", m.body.len(), limits.body_bytes_max)));
    }
    let mut properties_bytes = 0usize;
    for (i, (k, v)) in m.properties.iter().enumerate() {
        if k.is_empty() {
            return Err(invalid(format!("{field}.properties[{i}]"), "empty property name"));
        }
        properties_bytes += k.len() + v.len();
    }
    if properties_bytes > limits.properties_bytes_max {
        return Err(invalid(
            format!("{field}.properties"),
            format!("{properties_bytes} bytes, over the limit of {}", limits.properties_bytes_max),
        ));
    }
    if let Some(tag) = m.tag {
        if tag.is_empty() || tag.len() > limits.tag_bytes_max {
            return Err(invalid(format!("{field}.tag"), format!("{} bytes; must be 1 to {}", tag.len(), limits.tag_bytes_max)));
        }
        if tag.contains(['|', '*']) || tag.chars().any(char::is_whitespace) {
            // `||` and `*` are tag-filter syntax on the consumer side; a tag holding them could
            // never be matched exactly.
            return Err(invalid(format!("{field}.tag"), "must not contain '|', '*' or whitespace"));
        }
    }
    if m.keys.len() > limits.keys_per_message_max {
        return Err(invalid(format!("{field}.keys"), format!("{} keys, over the limit of {}", m.keys.len(), limits.keys_per_message_max)));
    }
    for (i, k) in m.keys.iter().enumerate() {
        if k.is_empty() || k.len() > limits.tag_bytes_max {
            return Err(invalid(format!("{field}.keys[{i}]"), format!("{} bytes; must be 1 to {}", k.len(), limits.tag_bytes_max)));
        }
    }
    Ok(())
}

/// Checks the count of messages in one send.
pub fn check_message_count(count: usize, limits: &Limits) -> Result<(), InvalidArgument> {
    if count == 0 {
        return Err(invalid("messages", "a send needs at least one message"));
    }
    if count > limits.messages_per_send_max {
        return Err(invalid("messages", format!("{count} messages, over the limit of {}", limits.messages_per_send_max)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of<T>(r: Result<T, InvalidArgument>) -> Option<String> {
        r.err().map(|e| e.field)
    }

    #[test]
    fn names_follow_the_rocketmq_pattern() {
        let l = Limits::default();
        let table: &[(&str, bool)] = &[
            ("orders", true),
            ("%RETRY%cg_1", true),
            ("ns|topic-A_9", true),
            ("", false),
            ("has space", false),
            ("dot.ted", false),
            ("ünï", false),
            ("slash/", false),
        ];
        for (name, ok) in table {
            assert_eq!(check_name("topic", name, &l).is_ok(), *ok, "{name:?}");
        }
        assert!(check_name("topic", &"a".repeat(127), &l).is_ok());
        let err = check_name("topic", &"a".repeat(128), &l).unwrap_err();
        assert_eq!(err.field, "topic");
        assert!(err.reason.contains("128"), "{err}");
    }

    #[test]
    fn message_limits_name_the_field_that_broke_them() {
        let l = Limits { body_bytes_max: 10, properties_bytes_max: 8, keys_per_message_max: 2, tag_bytes_max: 4, ..Limits::default() };
        let props = vec![("k".to_string(), "v".to_string())];
        let ok = MessageParts { body: b"0123456789", properties: &props, tag: Some("t"), keys: &[] };
        assert_eq!(check_message("messages[0]", &ok, &l), Ok(()));

        let big_props = vec![("key".to_string(), "value!".to_string())];
        let keys3 = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let empty_key = vec![String::new()];
        let empty_prop = vec![(String::new(), "v".to_string())];
        let cases: Vec<(MessageParts<'_>, &str)> = vec![
            (MessageParts { body: b"01234567890", properties: &[], tag: None, keys: &[] }, "messages[0].body"),
            (MessageParts { body: b"", properties: &big_props, tag: None, keys: &[] }, "messages[0].properties"),
            (MessageParts { body: b"", properties: &empty_prop, tag: None, keys: &[] }, "messages[0].properties[0]"),
            (MessageParts { body: b"", properties: &[], tag: Some("toolong"), keys: &[] }, "messages[0].tag"),
            (MessageParts { body: b"", properties: &[], tag: Some(""), keys: &[] }, "messages[0].tag"),
            (MessageParts { body: b"", properties: &[], tag: Some("a||b"), keys: &[] }, "messages[0].tag"),
            (MessageParts { body: b"", properties: &[], tag: None, keys: &keys3 }, "messages[0].keys"),
            (MessageParts { body: b"", properties: &[], tag: None, keys: &empty_key }, "messages[0].keys[0]"),
        ];
        for (m, field) in cases {
            assert_eq!(field_of(check_message("messages[0]", &m, &l)).as_deref(), Some(field));
        }
    }

    #[test]
    fn a_send_holds_one_to_the_limit_of_messages() {
        let l = Limits::default();
        assert!(check_message_count(0, &l).is_err());
        assert!(check_message_count(1, &l).is_ok());
        assert!(check_message_count(256, &l).is_ok());
        assert_eq!(field_of(check_message_count(257, &l)).as_deref(), Some("messages"));
    }
}
