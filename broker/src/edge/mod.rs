//! The client-facing edge of a broker: what is checked before a request touches a queue group.
//!
//! - [`validate`]: names, sizes and limits of incoming messages and requests, each violation
//!   a precise error naming the field.
//! - `request_bytes`: one broker-wide budget of request bytes, held before tonic decodes a
//!   request, so memory stays bounded however much clients offer.
//! - `deadline`: the client's `grpc-timeout`, and answering before it runs out.

pub(crate) mod deadline;
pub(crate) mod request_bytes;
pub mod validate;

pub(crate) use deadline::{answer_by, at_most, left};
pub use validate::{InvalidArgument, Limits, MessageParts, check_message, check_message_count, check_name};
