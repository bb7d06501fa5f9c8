//! Exact wire bytes of a few RocketMQ messages. Each expected byte string was
//! derived by hand from the field numbers and confirmed with
//! `protoc --encode` run on the published apache/rocketmq-apis files.

use prost::Message as _;
use prost::bytes::Bytes;

use crate::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, Message, MessageType, ReceiveMessageResponse, Resource, SendMessageRequest, SystemProperties,
    receive_message_response,
};

fn resource(name: &str) -> Resource {
    Resource { resource_namespace: String::new(), name: name.to_owned() }
}

fn small_send() -> SendMessageRequest {
    SendMessageRequest {
        messages: vec![Message {
            topic: Some(resource("t")),
            user_properties: [("k".to_owned(), "v".to_owned())].into(),
            system_properties: Some(SystemProperties {
                tag: Some("a".to_owned()),
                keys: vec!["k1".to_owned()],
                message_id: "id".to_owned(),
                message_type: MessageType::Normal.into(),
                born_timestamp: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
                message_group: Some("g".to_owned()),
                ..SystemProperties::default()
            }),
            body: Bytes::from_static(b"hi"),
        }],
    }
}

#[rustfmt::skip]
const SMALL_SEND_BYTES: &[u8] = &[
    0x0a, 0x28,                         // messages (1), 40 bytes
      0x0a, 0x03,                       //   topic (1)
        0x12, 0x01, b't',               //     name (2)
      0x12, 0x06,                       //   user_properties (2), one entry
        0x0a, 0x01, b'k',               //     key (1)
        0x12, 0x01, b'v',               //     value (2)
      0x1a, 0x15,                       //   system_properties (3), 21 bytes
        0x0a, 0x01, b'a',               //     tag (1)
        0x12, 0x02, b'k', b'1',         //     keys (2)
        0x1a, 0x02, b'i', b'd',         //     message_id (3)
        0x30, 0x01,                     //     message_type (6) = NORMAL
        0x3a, 0x02, 0x08, 0x01,         //     born_timestamp (7) { seconds: 1 }
        0x8a, 0x01, 0x01, b'g',         //     message_group (17): a two-byte tag
      0x22, 0x02, b'h', b'i',           //   body (4)
];

#[test]
fn send_message_request_has_the_published_wire_bytes() {
    let request = small_send();
    assert_eq!(request.encode_to_vec(), SMALL_SEND_BYTES);
    assert_eq!(SendMessageRequest::decode(SMALL_SEND_BYTES).unwrap(), request);
}

#[test]
fn receive_message_response_oneof_uses_tag_3_for_delivery_timestamp() {
    let response = ReceiveMessageResponse {
        content: Some(receive_message_response::Content::DeliveryTimestamp(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 })),
    };
    // field 3, 8 bytes: seconds (1) as a varint, nanos (2) = 5
    let expected = [0x1a, 0x08, 0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x10, 0x05];
    assert_eq!(response.encode_to_vec(), expected);
    assert_eq!(ReceiveMessageResponse::decode(&expected[..]).unwrap(), response);
}

#[test]
fn ack_message_request_has_the_published_wire_bytes() {
    let request = AckMessageRequest {
        group: Some(resource("g")),
        topic: Some(resource("t")),
        entries: vec![AckMessageEntry { message_id: "m".to_owned(), receipt_handle: "r".to_owned(), lite_topic: Some("l".to_owned()) }],
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x03, 0x12, 0x01, b'g',   // group (1) { name (2) }
        0x12, 0x03, 0x12, 0x01, b't',   // topic (2) { name (2) }
        0x1a, 0x09,                     // entries (3)
          0x0a, 0x01, b'm',             //   message_id (1)
          0x12, 0x01, b'r',             //   receipt_handle (2)
          0x1a, 0x01, b'l',             //   lite_topic (3)
    ];
    assert_eq!(request.encode_to_vec(), expected);
    assert_eq!(AckMessageRequest::decode(&expected[..]).unwrap(), request);
}
