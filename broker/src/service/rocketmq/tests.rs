use proto::apache::rocketmq::v2::{AddressScheme, Code, Resource};
use proto::raftmq::v1::status::Code as Native;

use super::*;
use crate::edge::InvalidArgument;

#[test]
fn a_resource_takes_its_namespace_or_the_headers() {
    let mut request = Request::new(());
    let plain = Resource { resource_namespace: String::new(), name: "orders".into() };
    assert_eq!(resolve(Some(&plain), &request).1, "orders");
    request.metadata_mut().insert(NAMESPACE_HEADER, "shop".parse().unwrap());
    let (resource, name) = resolve(Some(&plain), &request);
    assert_eq!((resource.resource_namespace.as_str(), resource.name.as_str(), name.as_str()), ("shop", "orders", "shop%orders"));
    let own = Resource { resource_namespace: "bank".into(), name: "ledger".into() };
    assert_eq!(resolve(Some(&own), &request).1, "bank%ledger", "the resource's own namespace wins");
    assert_eq!(resolve(None, &request).1, "");
    // A consumer group `shop%billing`'s dead-letter topic, named by a client of namespace shop.
    let dead = Resource { resource_namespace: "shop".into(), name: "%DLQ%billing".into() };
    assert_eq!(resolve(Some(&dead), &request).1, "%DLQ%shop%billing");
    let group = Resource { name: "billing".into(), ..dead.clone() };
    assert_eq!(dead_letter::dead_letter_topic(&resolve(Some(&group), &request).1), "%DLQ%shop%billing", "where its messages go");
    let plain_dead = Resource { resource_namespace: String::new(), name: "%DLQ%billing".into() };
    assert_eq!(resolve(Some(&plain_dead), &Request::new(())).1, "%DLQ%billing");
}

#[test]
fn endpoints_carry_their_address_scheme() {
    let e = route::endpoints("127.0.0.2:8081");
    assert_eq!((e.scheme, e.addresses[0].host.as_str(), e.addresses[0].port), (AddressScheme::IPv4 as i32, "127.0.0.2", 8081));
    let e = route::endpoints("[::1]:9000");
    assert_eq!((e.scheme, e.addresses[0].host.as_str(), e.addresses[0].port), (AddressScheme::IPv6 as i32, "::1", 9000));
    let e = route::endpoints("broker-1.internal:8081");
    assert_eq!((e.scheme, e.addresses[0].host.as_str()), (AddressScheme::DomainName as i32, "broker-1.internal"));
}

#[test]
fn a_refused_field_gets_its_own_code() {
    let code = |field: &str| codes::invalid(&InvalidArgument { field: field.into(), reason: "r".into() }).code;
    let table = [
        ("topic", Code::IllegalTopic),
        ("messages[0].body", Code::MessageBodyTooLarge),
        ("messages[3].properties", Code::MessagePropertiesTooLarge),
        ("messages[3].properties[1]", Code::IllegalMessagePropertyKey),
        ("messages[0].tag", Code::IllegalMessageTag),
        ("messages[0].keys", Code::IllegalMessageKey),
        ("messages[0].keys[2]", Code::IllegalMessageKey),
        ("messages[1].message_group", Code::IllegalMessageGroup),
        ("messages[1].message_id", Code::IllegalMessageId),
        ("messages", Code::BadRequest),
    ];
    for (field, expected) in table {
        assert_eq!(code(field), expected as i32, "{field}");
    }
}

#[test]
fn what_may_have_been_stored_is_never_answered_as_nothing_done() {
    let from = |code: Native| codes::from_native(&proto::raftmq::v1::Status { code: code as i32, ..Default::default() }).code;
    assert_eq!(from(Native::OutcomeUnknown), Code::MasterPersistenceTimeout as i32);
    assert_eq!(from(Native::NotLeader), Code::HaNotAvailable as i32);
    assert_eq!(from(Native::Unavailable), Code::HaNotAvailable as i32);
    assert_eq!(from(Native::Busy), Code::TooManyRequests as i32);
    assert_eq!(from(Native::NotFound), Code::TopicNotFound as i32);
    assert_eq!(from(Native::Ok), Code::Ok as i32);
    assert_eq!(from(Native::Internal), Code::InternalServerError as i32);
}
