//! What a failed call means to the client: every raftmq.v1 reply carries a [`Status`], and a
//! call fails either with a status other than OK (decided by the broker) or with a gRPC status
//! (decided by the transport). Both become one [`CallError`], which says whether the request
//! may have taken effect anyway ([`CallError::maybe_applied`]).

use proto::raftmq::v1::Status;
use proto::raftmq::v1::status::Code;

/// The replies of raftmq.v1 calls, which all carry their outcome in a `status` field.
pub trait Reply {
    fn status(&self) -> Option<&Status>;
}

macro_rules! impl_reply {
    ($($reply:ty),* $(,)?) => {
        $(impl Reply for $reply {
            fn status(&self) -> Option<&Status> {
                self.status.as_ref()
            }
        })*
    };
}

impl_reply!(
    proto::raftmq::v1::SendReply,
    proto::raftmq::v1::FetchReply,
    proto::raftmq::v1::CommitOffsetReply,
    proto::raftmq::v1::GetOffsetReply,
    proto::raftmq::v1::CreateTopicReply,
    proto::raftmq::v1::ListTopicsReply,
    proto::raftmq::v1::DescribeTopicReply,
    proto::raftmq::v1::ClusterStatusReply,
    proto::raftmq::v1::GroupChecksumReply,
    proto::raftmq::v1::MoveLeaderReply,
);

/// Why one attempt of a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The request is wrong; the same request fails again.
    #[error("invalid argument {field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("not found: {message}")]
    NotFound { message: String },
    /// Nothing was done; `leader` is the leader's client endpoint when the broker knew it.
    #[error("not the leader (leader: {}): {message}", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String>, message: String },
    /// Nothing was done: a bound on in-flight work was reached.
    #[error("busy: {message}")]
    Busy { message: String },
    /// Nothing was done: the group could not serve (no leader, no quorum, its leader
    /// unreachable).
    #[error("unavailable: {message}")]
    Unavailable { message: String },
    /// The request reached the group, but whether it took effect is unknown.
    #[error("outcome unknown: {message}")]
    OutcomeUnknown { message: String },
    #[error("internal error on the broker: {message}")]
    Internal { message: String },
    /// What was to be created exists already.
    #[error("already exists: {message}")]
    AlreadyExists { message: String },
    /// Nothing was done: the cluster is not in the state the request needs (e.g. fewer brokers
    /// than the replication factor); the same request may succeed once it is.
    #[error("failed precondition: {message}")]
    FailedPrecondition { message: String },
    /// Nothing was done: a bound on what the cluster stores is reached (e.g. consumer groups
    /// per queue); the message names it and the setting that raises it.
    #[error("resource exhausted: {message}")]
    ResourceExhausted { message: String },
    /// A reply without a status, with CODE_UNSPECIFIED, or with a code this client does not
    /// know: never taken for success.
    #[error("reply with status code {code} ({message})")]
    BadStatus { code: i32, message: String },
    /// The call failed below raftmq's statuses: connection, deadline, unknown method.
    #[error("gRPC {code:?}: {message}")]
    Transport { code: tonic::Code, message: String },
    /// An endpoint (from the command line or a leader hint) is not a usable address.
    #[error("bad endpoint {endpoint:?}: {message}")]
    BadEndpoint { endpoint: String, message: String },
}

/// OK, or the error the status stands for.
pub fn check(status: Option<&Status>) -> Result<(), CallError> {
    let Some(status) = status else {
        return Err(CallError::BadStatus { code: 0, message: "the reply has no status".into() });
    };
    let message = status.message.clone();
    match Code::try_from(status.code) {
        Ok(Code::Ok) => Ok(()),
        Ok(Code::InvalidArgument) => Err(CallError::InvalidArgument { field: status.field.clone(), message }),
        Ok(Code::NotFound) => Err(CallError::NotFound { message }),
        Ok(Code::NotLeader) => {
            let leader = status.leader_hint.as_ref().map(|h| h.endpoint.clone()).filter(|e| !e.is_empty());
            Err(CallError::NotLeader { leader, message })
        }
        Ok(Code::Busy) => Err(CallError::Busy { message }),
        Ok(Code::Unavailable) => Err(CallError::Unavailable { message }),
        Ok(Code::OutcomeUnknown) => Err(CallError::OutcomeUnknown { message }),
        Ok(Code::Internal) => Err(CallError::Internal { message }),
        Ok(Code::AlreadyExists) => Err(CallError::AlreadyExists { message }),
        Ok(Code::FailedPrecondition) => Err(CallError::FailedPrecondition { message }),
        Ok(Code::ResourceExhausted) => Err(CallError::ResourceExhausted { message }),
        Ok(Code::Unspecified) | Err(_) => Err(CallError::BadStatus { code: status.code, message }),
    }
}

impl From<tonic::Status> for CallError {
    fn from(s: tonic::Status) -> Self {
        CallError::Transport { code: s.code(), message: s.message().to_string() }
    }
}

impl CallError {
    /// The request may have reached the broker and taken effect although no success came back:
    /// a deadline or a dropped connection after sending, or OUTCOME_UNKNOWN (leadership changed
    /// while the entry was being committed, or a forwarded call lost its answer). A transport error is counted here even when the
    /// connection was never made, because tonic does not tell the two apart reliably: "unknown"
    /// is never wrong, only less precise.
    pub fn maybe_applied(&self) -> bool {
        match self {
            CallError::OutcomeUnknown { .. } => true,
            CallError::Transport { code, .. } => transport_is_ambiguous(*code),
            _ => false,
        }
    }
}

impl CallError {
    /// The broker's answer promises the request changed nothing, so a history checker may
    /// count it as failed: NOT_LEADER, BUSY, UNAVAILABLE, INVALID_ARGUMENT, NOT_FOUND and
    /// RESOURCE_EXHAUSTED are answered before anything is proposed. Stricter than
    /// `!maybe_applied()`: an INTERNAL error or a status this client does not know promises
    /// nothing either way, and a transport failure only when [`crate::transport::never_sent`]
    /// says so.
    pub fn promises_nothing_done(&self) -> bool {
        matches!(
            self,
            CallError::NotLeader { .. }
                | CallError::Busy { .. }
                | CallError::Unavailable { .. }
                | CallError::InvalidArgument { .. }
                | CallError::NotFound { .. }
                | CallError::ResourceExhausted { .. }
        )
    }
}

/// gRPC codes that a client sees when a request was lost in flight or its answer was (a
/// connection reset surfaces as `Unknown` or `Cancelled` in tonic, a closed connection as
/// `Unavailable`). Other codes come from a server that refused the call before handling it.
pub fn transport_is_ambiguous(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(code, C::Unavailable | C::DeadlineExceeded | C::Unknown | C::Cancelled | C::Aborted | C::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::raftmq::v1::LeaderHint;

    fn status(code: Code) -> Status {
        Status { code: code as i32, message: "m".into(), field: String::new(), leader_hint: None }
    }

    #[test]
    fn only_ok_is_success() {
        assert_eq!(check(Some(&status(Code::Ok))), Ok(()));
        assert!(matches!(check(None), Err(CallError::BadStatus { code: 0, .. })));
        assert!(matches!(check(Some(&status(Code::Unspecified))), Err(CallError::BadStatus { code: 0, .. })));
        let unknown = Status { code: 99, ..status(Code::Ok) };
        assert!(matches!(check(Some(&unknown)), Err(CallError::BadStatus { code: 99, .. })));
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let s = Status { field: "messages[3].body".into(), ..status(Code::InvalidArgument) };
        let e = check(Some(&s)).expect_err("invalid");
        assert_eq!(e, CallError::InvalidArgument { field: "messages[3].body".into(), message: "m".into() });
        assert_eq!(e.to_string(), "invalid argument messages[3].body: m");
    }

    #[test]
    fn not_leader_carries_a_non_empty_hint_only() {
        let hint = |endpoint: &str| Status {
            leader_hint: Some(LeaderHint { broker_id: 2, endpoint: endpoint.into() }),
            ..status(Code::NotLeader)
        };
        assert_eq!(check(Some(&hint("b2:8081"))), Err(CallError::NotLeader { leader: Some("b2:8081".into()), message: "m".into() }));
        assert_eq!(check(Some(&hint(""))), Err(CallError::NotLeader { leader: None, message: "m".into() }));
        assert_eq!(check(Some(&status(Code::NotLeader))), Err(CallError::NotLeader { leader: None, message: "m".into() }));
    }

    #[test]
    fn which_statuses_promise_nothing_was_done() {
        let nothing_done = [Code::NotLeader, Code::Busy, Code::Unavailable, Code::InvalidArgument, Code::NotFound, Code::ResourceExhausted];
        for code in nothing_done {
            assert!(check(Some(&status(code))).expect_err("e").promises_nothing_done(), "{code:?}");
        }
        for code in [Code::OutcomeUnknown, Code::Internal, Code::AlreadyExists, Code::FailedPrecondition, Code::Unspecified] {
            assert!(!check(Some(&status(code))).expect_err("e").promises_nothing_done(), "{code:?}");
        }
        assert!(!CallError::from(tonic::Status::unavailable("tcp connect error")).promises_nothing_done(), "transport: see never_sent");
    }

    #[test]
    fn which_failures_may_have_been_applied() {
        let cases = [
            (check(Some(&status(Code::OutcomeUnknown))).expect_err("e"), true),
            (check(Some(&status(Code::Unavailable))).expect_err("e"), false),
            (check(Some(&status(Code::Busy))).expect_err("e"), false),
            (check(Some(&status(Code::NotLeader))).expect_err("e"), false),
            (check(Some(&status(Code::InvalidArgument))).expect_err("e"), false),
            (check(Some(&status(Code::Internal))).expect_err("e"), false),
            (check(Some(&status(Code::AlreadyExists))).expect_err("e"), false),
            (check(Some(&status(Code::FailedPrecondition))).expect_err("e"), false),
            (check(Some(&status(Code::ResourceExhausted))).expect_err("e"), false),
            (CallError::from(tonic::Status::unavailable("reset")), true),
            (CallError::from(tonic::Status::deadline_exceeded("slow")), true),
            (CallError::from(tonic::Status::unimplemented("no such method")), false),
            (CallError::from(tonic::Status::resource_exhausted("too large")), false),
        ];
        for (e, want) in cases {
            assert_eq!(e.maybe_applied(), want, "{e}");
        }
    }
}
