//! The client-facing edge of a broker: what is checked before a request touches a queue group.
//!
//! - [`validate`]: names, sizes and limits of incoming messages and requests, each violation
//!   a precise error naming the field.

pub mod validate;

pub use validate::{InvalidArgument, Limits, MessageParts, check_message, check_message_count, check_name};
