//! The `raftmq.v1.Status` of every reply, built in one place so each failure maps to one code.

use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{LeaderHint, Status};

use crate::edge::InvalidArgument;
use crate::raft::BrokerId;

pub(crate) fn ok() -> Status {
    Status { code: Code::Ok as i32, ..Default::default() }
}

fn with(code: Code, message: impl Into<String>) -> Status {
    Status { code: code as i32, message: message.into(), ..Default::default() }
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Status {
    Status { field: field.into(), ..with(Code::InvalidArgument, message) }
}

impl From<InvalidArgument> for Status {
    fn from(e: InvalidArgument) -> Self {
        invalid(e.field, e.reason)
    }
}

pub(crate) fn not_found(message: impl Into<String>) -> Status {
    with(Code::NotFound, message)
}

pub(crate) fn already_exists(message: impl Into<String>) -> Status {
    with(Code::AlreadyExists, message)
}

/// NOT_LEADER, with the leader this broker knows (`(id, endpoint)`) as the hint.
pub(crate) fn not_leader(leader: Option<(BrokerId, String)>, message: impl Into<String>) -> Status {
    Status { leader_hint: leader.map(|(broker_id, endpoint)| LeaderHint { broker_id, endpoint }), ..with(Code::NotLeader, message) }
}

/// FAILED_PRECONDITION: nothing was done; the cluster is not in the state the request needs.
pub(crate) fn failed_precondition(message: impl Into<String>) -> Status {
    with(Code::FailedPrecondition, message)
}

/// RESOURCE_EXHAUSTED: nothing was done; a bound on stored state is reached.
pub(crate) fn resource_exhausted(message: impl Into<String>) -> Status {
    with(Code::ResourceExhausted, message)
}

pub(crate) fn busy(message: impl Into<String>) -> Status {
    with(Code::Busy, message)
}

/// UNAVAILABLE: nothing was done (see [`outcome_unknown`] for when that is not certain).
pub(crate) fn unavailable(message: impl Into<String>) -> Status {
    with(Code::Unavailable, message)
}

/// OUTCOME_UNKNOWN: the request may or may not have taken effect.
pub(crate) fn outcome_unknown(message: impl Into<String>) -> Status {
    with(Code::OutcomeUnknown, message)
}

/// The status of a write forwarded to `endpoint` whose call failed with `e`: UNAVAILABLE when
/// the request never left this broker (the connection could not be made), else
/// OUTCOME_UNKNOWN (the leader may have stored it and lost the answer).
pub(crate) fn forwarded_write_failed(endpoint: &str, e: &tonic::Status) -> Status {
    if client::transport::never_sent(e) {
        unavailable(format!("the leader at {endpoint} could not be reached: {e}"))
    } else {
        outcome_unknown(format!("forwarded to {endpoint}; outcome unknown: {e}"))
    }
}

pub(crate) fn internal(message: impl Into<String>) -> Status {
    with(Code::Internal, message)
}

pub(crate) fn is_ok(status: &Option<Status>) -> bool {
    status.as_ref().is_some_and(|s| s.code == Code::Ok as i32)
}
