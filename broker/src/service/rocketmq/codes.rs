//! The RocketMQ [`Code`] of each outcome the core reports, so a client sees the protocol's own
//! reason: a broken limit names the field's code (`MESSAGE_BODY_TOO_LARGE`, ...), and what may
//! have taken effect is never answered as if it had not.

use proto::apache::rocketmq::v2::{Code, Status};
use proto::raftmq::v1::status::Code as Native;

use super::status;
use crate::edge::InvalidArgument;

/// The code of an edge check's refusal, by the field it names (`messages[2].body`, `topic`).
pub(super) fn invalid(e: &InvalidArgument) -> Status {
    let field = e.field.as_str();
    let last = field.rsplit('.').next().unwrap_or(field);
    let code = match last.split('[').next().unwrap_or(last) {
        "topic" => Code::IllegalTopic,
        "consumer_group" | "group" => Code::IllegalConsumerGroup,
        "body" => Code::MessageBodyTooLarge,
        "properties" if last.contains('[') => Code::IllegalMessagePropertyKey,
        "properties" => Code::MessagePropertiesTooLarge,
        "tag" => Code::IllegalMessageTag,
        "keys" => Code::IllegalMessageKey,
        "message_group" => Code::IllegalMessageGroup,
        "message_id" => Code::IllegalMessageId,
        "offset" => Code::IllegalOffset,
        _ => Code::BadRequest,
    };
    status(code, e.to_string())
}

/// The RocketMQ status of a native one from the core (routing, the send path).
pub(super) fn from_native(s: &proto::raftmq::v1::Status) -> Status {
    let code = match Native::try_from(s.code) {
        Ok(Native::Ok) => Code::Ok,
        Ok(Native::InvalidArgument) => {
            return invalid(&InvalidArgument { field: s.field.clone(), reason: s.message.clone() });
        }
        Ok(Native::NotFound) => Code::TopicNotFound,
        // Nothing was done: the client may retry (after refreshing its route).
        Ok(Native::NotLeader | Native::Unavailable) => Code::HaNotAvailable,
        Ok(Native::Busy | Native::ResourceExhausted) => Code::TooManyRequests,
        // The write reached its group and may still commit: RocketMQ's "not persisted in time".
        Ok(Native::OutcomeUnknown) => Code::MasterPersistenceTimeout,
        Ok(Native::AlreadyExists) => Code::BadRequest,
        Ok(Native::FailedPrecondition) => Code::PreconditionFailed,
        Ok(Native::Internal | Native::Unspecified) | Err(_) => Code::InternalServerError,
    };
    status(code, s.message.clone())
}
