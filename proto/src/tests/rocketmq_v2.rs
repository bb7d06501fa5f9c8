//! `apache.rocketmq.v2` as compiled into this crate, checked against the
//! published protocol: apache/rocketmq-apis, branch main at commit 3e60073c
//! (2026-07-30), files apache/rocketmq/v2/{definition,service,admin}.proto.
//!
//! The expected tables were rendered from a descriptor set that protoc built
//! from those published files, then reviewed against their text; a renamed,
//! renumbered, retyped or missing field, value, message or rpc fails here.

use super::*;

const PACKAGE: &str = "apache.rocketmq.v2";

fn rocketmq() -> FileDescriptorSet {
    decode_set(crate::ROCKETMQ_V2_DESCRIPTOR_SET)
}

/// Top-level messages, then enums, of each published file, in order.
const DECLARATIONS: &[(&str, &[&str], &[&str])] = &[
    (
        "apache/rocketmq/v2/definition.proto",
        &[
            "FilterExpression",
            "RetryPolicy",
            "ExponentialBackoff",
            "CustomizedBackoff",
            "Resource",
            "SubscriptionEntry",
            "Address",
            "Endpoints",
            "Broker",
            "MessageQueue",
            "Digest",
            "SystemProperties",
            "DeadLetterQueue",
            "Message",
            "Assignment",
            "Status",
            "UA",
            "Settings",
            "Publishing",
            "Subscription",
            "Metric",
            "OffsetOption",
        ],
        &[
            "TransactionResolution",
            "TransactionSource",
            "Permission",
            "FilterType",
            "AddressScheme",
            "MessageType",
            "DigestType",
            "ClientType",
            "Encoding",
            "Code",
            "Language",
            "LiteSubscriptionAction",
            "QueryOffsetPolicy",
        ],
    ),
    (
        "apache/rocketmq/v2/service.proto",
        &[
            "QueryRouteRequest",
            "QueryRouteResponse",
            "SendMessageRequest",
            "SendResultEntry",
            "SendMessageResponse",
            "QueryAssignmentRequest",
            "QueryAssignmentResponse",
            "ReceiveMessageRequest",
            "ReceiveMessageResponse",
            "AckMessageEntry",
            "AckMessageRequest",
            "AckMessageResultEntry",
            "AckMessageResponse",
            "ForwardMessageToDeadLetterQueueRequest",
            "ForwardMessageToDeadLetterQueueResponse",
            "HeartbeatRequest",
            "HeartbeatResponse",
            "EndTransactionRequest",
            "EndTransactionResponse",
            "PrintThreadStackTraceCommand",
            "ReconnectEndpointsCommand",
            "ThreadStackTrace",
            "VerifyMessageCommand",
            "VerifyMessageResult",
            "RecoverOrphanedTransactionCommand",
            "NotifyUnsubscribeLiteCommand",
            "TelemetryCommand",
            "NotifyClientTerminationRequest",
            "NotifyClientTerminationResponse",
            "ChangeInvisibleDurationRequest",
            "ChangeInvisibleDurationResponse",
            "PullMessageRequest",
            "PullMessageResponse",
            "UpdateOffsetRequest",
            "UpdateOffsetResponse",
            "GetOffsetRequest",
            "GetOffsetResponse",
            "QueryOffsetRequest",
            "QueryOffsetResponse",
            "RecallMessageRequest",
            "RecallMessageResponse",
            "SyncLiteSubscriptionRequest",
            "SyncLiteSubscriptionResponse",
        ],
        &[],
    ),
    (
        "apache/rocketmq/v2/admin.proto",
        &[
            "ChangeLogLevelRequest",
            "ChangeLogLevelResponse",
            "DescribeTopicStatusRequest",
            "DescribeTopicStatusResponse",
            "ListSubscriptionRequest",
            "SubscriptionInfo",
            "ListSubscriptionResponse",
            "DescribeSubscriptionRequest",
            "DescribeSubscriptionResponse",
            "DeleteSubscriptionRequest",
            "DeleteSubscriptionResponse",
            "ClientInfo",
            "MessageQueueItem",
            "ProcessQueueInfo",
            "ConsumeStatus",
            "ConsumerRunningInfo",
            "DescribeGroupAccumulationRequest",
            "DescribeGroupAccumulationResponse",
            "QueryTimeSpanRequest",
            "QueryTimeSpanResponse",
            "ListConsumerConnectionRequest",
            "ListConsumerConnectionResponse",
            "ResetGroupOffsetRequest",
            "ResetGroupOffsetResponse",
            "ListMessageRequest",
            "ListMessageResponse",
            "PrintThreadStackTraceRequest",
            "PrintThreadStackTraceResponse",
            "VerifyMessageRequest",
            "VerifyMessageResponse",
            "AdminSendMessageRequest",
            "AdminSendMessageResponse",
            "GetConsumerRunningInfoRequest",
            "GetConsumerRunningInfoResponse",
            "GetTopicRouteRequest",
            "GetTopicRouteResponse",
            "GetProxyRuntimeStatsRequest",
            "GetProxyRuntimeStatsResponse",
        ],
        &["MessageModel"],
    ),
];

const MESSAGING_SERVICE_RPCS: &[&str] = &[
    "QueryRoute(QueryRouteRequest) returns (QueryRouteResponse)",
    "Heartbeat(HeartbeatRequest) returns (HeartbeatResponse)",
    "SendMessage(SendMessageRequest) returns (SendMessageResponse)",
    "QueryAssignment(QueryAssignmentRequest) returns (QueryAssignmentResponse)",
    "ReceiveMessage(ReceiveMessageRequest) returns (stream ReceiveMessageResponse)",
    "AckMessage(AckMessageRequest) returns (AckMessageResponse)",
    "ForwardMessageToDeadLetterQueue(ForwardMessageToDeadLetterQueueRequest) returns (ForwardMessageToDeadLetterQueueResponse)",
    "PullMessage(PullMessageRequest) returns (stream PullMessageResponse)",
    "UpdateOffset(UpdateOffsetRequest) returns (UpdateOffsetResponse)",
    "GetOffset(GetOffsetRequest) returns (GetOffsetResponse)",
    "QueryOffset(QueryOffsetRequest) returns (QueryOffsetResponse)",
    "EndTransaction(EndTransactionRequest) returns (EndTransactionResponse)",
    "Telemetry(stream TelemetryCommand) returns (stream TelemetryCommand)",
    "NotifyClientTermination(NotifyClientTerminationRequest) returns (NotifyClientTerminationResponse)",
    "ChangeInvisibleDuration(ChangeInvisibleDurationRequest) returns (ChangeInvisibleDurationResponse)",
    "RecallMessage(RecallMessageRequest) returns (RecallMessageResponse)",
    "SyncLiteSubscription(SyncLiteSubscriptionRequest) returns (SyncLiteSubscriptionResponse)",
];

const ADMIN_RPCS: &[&str] = &[
    "ChangeLogLevel(ChangeLogLevelRequest) returns (ChangeLogLevelResponse)",
    "DescribeTopicStatus(DescribeTopicStatusRequest) returns (DescribeTopicStatusResponse)",
    "ListSubscription(ListSubscriptionRequest) returns (ListSubscriptionResponse)",
    "DescribeSubscription(DescribeSubscriptionRequest) returns (DescribeSubscriptionResponse)",
    "DeleteSubscription(DeleteSubscriptionRequest) returns (DeleteSubscriptionResponse)",
    "DescribeGroupAccumulation(DescribeGroupAccumulationRequest) returns (DescribeGroupAccumulationResponse)",
    "ListConsumerConnection(ListConsumerConnectionRequest) returns (ListConsumerConnectionResponse)",
    "ResetGroupOffset(ResetGroupOffsetRequest) returns (ResetGroupOffsetResponse)",
    "QueryMessage(ListMessageRequest) returns (ListMessageResponse)",
    "PrintThreadStackTrace(PrintThreadStackTraceRequest) returns (PrintThreadStackTraceResponse)",
    "VerifyMessage(VerifyMessageRequest) returns (VerifyMessageResponse)",
    "AdminSendMessage(AdminSendMessageRequest) returns (AdminSendMessageResponse)",
    "GetConsumerRunningInfo(GetConsumerRunningInfoRequest) returns (GetConsumerRunningInfoResponse)",
    "GetTopicRoute(GetTopicRouteRequest) returns (GetTopicRouteResponse)",
    "QueryTimeSpan(QueryTimeSpanRequest) returns (QueryTimeSpanResponse)",
    "GetProxyRuntimeStats(GetProxyRuntimeStatsRequest) returns (GetProxyRuntimeStatsResponse)",
];

/// Fields of the messages clients use, as declared in the published files.
const MESSAGE_FIELDS: &[(&str, &[&str])] = &[
    (
        "Message",
        &["Resource topic = 1", "map<string, string> user_properties = 2", "SystemProperties system_properties = 3", "bytes body = 4"],
    ),
    (
        "SystemProperties",
        &[
            "optional string tag = 1",
            "repeated string keys = 2",
            "string message_id = 3",
            "Digest body_digest = 4",
            "Encoding body_encoding = 5",
            "MessageType message_type = 6",
            "google.protobuf.Timestamp born_timestamp = 7",
            "string born_host = 8",
            "optional google.protobuf.Timestamp store_timestamp = 9",
            "string store_host = 10",
            "optional google.protobuf.Timestamp delivery_timestamp = 11",
            "optional string receipt_handle = 12",
            "int32 queue_id = 13",
            "optional int64 queue_offset = 14",
            "optional google.protobuf.Duration invisible_duration = 15",
            "optional int32 delivery_attempt = 16",
            "optional string message_group = 17",
            "optional string trace_context = 18",
            "optional google.protobuf.Duration orphaned_transaction_recovery_duration = 19",
            "optional DeadLetterQueue dead_letter_queue = 20",
            "optional string lite_topic = 21",
            "optional int32 priority = 22",
        ],
    ),
    ("Resource", &["string resource_namespace = 1", "string name = 2"]),
    ("SendMessageRequest", &["repeated Message messages = 1"]),
    ("SendMessageResponse", &["Status status = 1", "repeated SendResultEntry entries = 2"]),
    (
        "SendResultEntry",
        &["Status status = 1", "string message_id = 2", "string transaction_id = 3", "int64 offset = 4", "string recall_handle = 5"],
    ),
    (
        "ReceiveMessageRequest",
        &[
            "Resource group = 1",
            "MessageQueue message_queue = 2",
            "FilterExpression filter_expression = 3",
            "int32 batch_size = 4",
            "optional google.protobuf.Duration invisible_duration = 5",
            "bool auto_renew = 6",
            "optional google.protobuf.Duration long_polling_timeout = 7",
            "optional string attempt_id = 8",
        ],
    ),
    (
        "ReceiveMessageResponse",
        &[
            "oneof content: Status status = 1",
            "oneof content: Message message = 2",
            "oneof content: google.protobuf.Timestamp delivery_timestamp = 3",
        ],
    ),
    ("AckMessageRequest", &["Resource group = 1", "Resource topic = 2", "repeated AckMessageEntry entries = 3"]),
    ("AckMessageEntry", &["string message_id = 1", "string receipt_handle = 2", "optional string lite_topic = 3"]),
    ("AckMessageResultEntry", &["string message_id = 1", "string receipt_handle = 2", "Status status = 3"]),
    ("AckMessageResponse", &["Status status = 1", "repeated AckMessageResultEntry entries = 2"]),
    ("QueryRouteRequest", &["Resource topic = 1", "Endpoints endpoints = 2"]),
    ("QueryRouteResponse", &["Status status = 1", "repeated MessageQueue message_queues = 2"]),
    (
        "MessageQueue",
        &[
            "Resource topic = 1",
            "int32 id = 2",
            "Permission permission = 3",
            "Broker broker = 4",
            "repeated MessageType accept_message_types = 5",
        ],
    ),
    ("Broker", &["string name = 1", "int32 id = 2", "Endpoints endpoints = 3"]),
    ("Endpoints", &["AddressScheme scheme = 1", "repeated Address addresses = 2"]),
    ("Address", &["string host = 1", "int32 port = 2"]),
    ("Status", &["Code code = 1", "string message = 2"]),
    (
        "Settings",
        &[
            "optional ClientType client_type = 1",
            "optional Endpoints access_point = 2",
            "optional RetryPolicy backoff_policy = 3",
            "optional google.protobuf.Duration request_timeout = 4",
            "oneof pub_sub: Publishing publishing = 5",
            "oneof pub_sub: Subscription subscription = 6",
            "UA user_agent = 7",
            "Metric metric = 8",
            "map<string, string> client_properties = 9",
        ],
    ),
    ("Publishing", &["repeated Resource topics = 1", "int32 max_body_size = 2", "bool validate_message_type = 3"]),
    (
        "Subscription",
        &[
            "optional Resource group = 1",
            "repeated SubscriptionEntry subscriptions = 2",
            "optional bool fifo = 3",
            "optional int32 receive_batch_size = 4",
            "optional google.protobuf.Duration long_polling_timeout = 5",
            "optional int32 lite_subscription_quota = 6",
            "optional int32 max_lite_topic_size = 7",
        ],
    ),
    ("HeartbeatRequest", &["optional Resource group = 1", "ClientType client_type = 2"]),
    (
        "TelemetryCommand",
        &[
            "optional Status status = 1",
            "oneof command: Settings settings = 2",
            "oneof command: ThreadStackTrace thread_stack_trace = 3",
            "oneof command: VerifyMessageResult verify_message_result = 4",
            "oneof command: RecoverOrphanedTransactionCommand recover_orphaned_transaction_command = 5",
            "oneof command: PrintThreadStackTraceCommand print_thread_stack_trace_command = 6",
            "oneof command: VerifyMessageCommand verify_message_command = 7",
            "oneof command: ReconnectEndpointsCommand reconnect_endpoints_command = 8",
            "oneof command: NotifyUnsubscribeLiteCommand notify_unsubscribe_lite_command = 9",
        ],
    ),
    ("FilterExpression", &["FilterType type = 1", "string expression = 2"]),
    ("SubscriptionEntry", &["Resource topic = 1", "FilterExpression expression = 2"]),
    ("Digest", &["DigestType type = 1", "string checksum = 2"]),
    ("DeadLetterQueue", &["string topic = 1", "string message_id = 2"]),
    (
        "RetryPolicy",
        &[
            "int32 max_attempts = 1",
            "oneof strategy: ExponentialBackoff exponential_backoff = 2",
            "oneof strategy: CustomizedBackoff customized_backoff = 3",
        ],
    ),
    ("ExponentialBackoff", &["google.protobuf.Duration initial = 1", "google.protobuf.Duration max = 2", "float multiplier = 3"]),
    ("CustomizedBackoff", &["repeated google.protobuf.Duration next = 1"]),
    ("UA", &["Language language = 1", "string version = 2", "string platform = 3", "string hostname = 4"]),
    ("Metric", &["bool on = 1", "optional Endpoints endpoints = 2"]),
    (
        "ChangeInvisibleDurationRequest",
        &[
            "Resource group = 1",
            "Resource topic = 2",
            "string receipt_handle = 3",
            "google.protobuf.Duration invisible_duration = 4",
            "string message_id = 5",
            "optional string lite_topic = 6",
            "optional bool suspend = 7",
        ],
    ),
    ("ChangeInvisibleDurationResponse", &["Status status = 1", "string receipt_handle = 2"]),
    (
        "ForwardMessageToDeadLetterQueueRequest",
        &[
            "Resource group = 1",
            "Resource topic = 2",
            "string receipt_handle = 3",
            "string message_id = 4",
            "int32 delivery_attempt = 5",
            "int32 max_delivery_attempts = 6",
            "optional string lite_topic = 7",
        ],
    ),
    (
        "EndTransactionRequest",
        &[
            "Resource topic = 1",
            "string message_id = 2",
            "string transaction_id = 3",
            "TransactionResolution resolution = 4",
            "TransactionSource source = 5",
            "string trace_context = 6",
        ],
    ),
    ("NotifyClientTerminationRequest", &["optional Resource group = 1"]),
    ("QueryAssignmentRequest", &["Resource topic = 1", "Resource group = 2", "Endpoints endpoints = 3"]),
    ("QueryAssignmentResponse", &["Status status = 1", "repeated Assignment assignments = 2"]),
    ("Assignment", &["MessageQueue message_queue = 1"]),
    ("ThreadStackTrace", &["string nonce = 1", "optional string thread_stack_trace = 2"]),
    ("VerifyMessageCommand", &["string nonce = 1", "Message message = 2"]),
    ("VerifyMessageResult", &["string nonce = 1"]),
    ("RecoverOrphanedTransactionCommand", &["Message message = 1", "string transaction_id = 2"]),
    ("PrintThreadStackTraceCommand", &["string nonce = 1"]),
    ("ReconnectEndpointsCommand", &["string nonce = 1"]),
    ("NotifyUnsubscribeLiteCommand", &["string lite_topic = 1"]),
    (
        "PullMessageRequest",
        &[
            "Resource group = 1",
            "MessageQueue message_queue = 2",
            "int64 offset = 3",
            "int32 batch_size = 4",
            "FilterExpression filter_expression = 5",
            "google.protobuf.Duration long_polling_timeout = 6",
        ],
    ),
    (
        "PullMessageResponse",
        &["oneof content: Status status = 1", "oneof content: Message message = 2", "oneof content: int64 next_offset = 3"],
    ),
    ("UpdateOffsetRequest", &["Resource group = 1", "MessageQueue message_queue = 2", "int64 offset = 3"]),
    ("GetOffsetRequest", &["Resource group = 1", "MessageQueue message_queue = 2"]),
    ("GetOffsetResponse", &["Status status = 1", "int64 offset = 2"]),
    (
        "QueryOffsetRequest",
        &[
            "MessageQueue message_queue = 1",
            "QueryOffsetPolicy query_offset_policy = 2",
            "optional google.protobuf.Timestamp timestamp = 3",
        ],
    ),
    ("QueryOffsetResponse", &["Status status = 1", "int64 offset = 2"]),
    ("RecallMessageRequest", &["Resource topic = 1", "string recall_handle = 2"]),
    ("RecallMessageResponse", &["Status status = 1", "string message_id = 2"]),
    (
        "SyncLiteSubscriptionRequest",
        &[
            "LiteSubscriptionAction action = 1",
            "Resource topic = 2",
            "Resource group = 3",
            "repeated string lite_topic_set = 4",
            "optional int64 version = 5",
            "optional OffsetOption offset_option = 6",
        ],
    ),
    (
        "OffsetOption",
        &[
            "oneof offset_type: OffsetOption.Policy policy = 1",
            "oneof offset_type: int64 offset = 2",
            "oneof offset_type: int64 tail_n = 3",
            "oneof offset_type: int64 timestamp = 4",
        ],
    ),
];

const ENUM_VALUES: &[(&str, &[&str])] = &[
    (
        "Code",
        &[
            "CODE_UNSPECIFIED = 0",
            "OK = 20000",
            "MULTIPLE_RESULTS = 30000",
            "BAD_REQUEST = 40000",
            "ILLEGAL_ACCESS_POINT = 40001",
            "ILLEGAL_TOPIC = 40002",
            "ILLEGAL_CONSUMER_GROUP = 40003",
            "ILLEGAL_MESSAGE_TAG = 40004",
            "ILLEGAL_MESSAGE_KEY = 40005",
            "ILLEGAL_MESSAGE_GROUP = 40006",
            "ILLEGAL_MESSAGE_PROPERTY_KEY = 40007",
            "INVALID_TRANSACTION_ID = 40008",
            "ILLEGAL_MESSAGE_ID = 40009",
            "ILLEGAL_FILTER_EXPRESSION = 40010",
            "ILLEGAL_INVISIBLE_TIME = 40011",
            "ILLEGAL_DELIVERY_TIME = 40012",
            "INVALID_RECEIPT_HANDLE = 40013",
            "MESSAGE_PROPERTY_CONFLICT_WITH_TYPE = 40014",
            "UNRECOGNIZED_CLIENT_TYPE = 40015",
            "MESSAGE_CORRUPTED = 40016",
            "CLIENT_ID_REQUIRED = 40017",
            "ILLEGAL_POLLING_TIME = 40018",
            "ILLEGAL_OFFSET = 40019",
            "ILLEGAL_LITE_TOPIC = 40020",
            "INVALID_CLIENT_PROPERTIES = 40021",
            "UNAUTHORIZED = 40100",
            "PAYMENT_REQUIRED = 40200",
            "FORBIDDEN = 40300",
            "NOT_FOUND = 40400",
            "MESSAGE_NOT_FOUND = 40401",
            "TOPIC_NOT_FOUND = 40402",
            "CONSUMER_GROUP_NOT_FOUND = 40403",
            "OFFSET_NOT_FOUND = 40404",
            "REQUEST_TIMEOUT = 40800",
            "PAYLOAD_TOO_LARGE = 41300",
            "MESSAGE_BODY_TOO_LARGE = 41301",
            "MESSAGE_BODY_EMPTY = 41302",
            "PRECONDITION_FAILED = 42800",
            "TOO_MANY_REQUESTS = 42900",
            "LITE_TOPIC_QUOTA_EXCEEDED = 42901",
            "LITE_SUBSCRIPTION_QUOTA_EXCEEDED = 42902",
            "REQUEST_HEADER_FIELDS_TOO_LARGE = 43100",
            "MESSAGE_PROPERTIES_TOO_LARGE = 43101",
            "INTERNAL_ERROR = 50000",
            "INTERNAL_SERVER_ERROR = 50001",
            "HA_NOT_AVAILABLE = 50002",
            "NOT_IMPLEMENTED = 50100",
            "PROXY_TIMEOUT = 50400",
            "MASTER_PERSISTENCE_TIMEOUT = 50401",
            "SLAVE_PERSISTENCE_TIMEOUT = 50402",
            "UNSUPPORTED = 50500",
            "VERSION_UNSUPPORTED = 50501",
            "VERIFY_FIFO_MESSAGE_UNSUPPORTED = 50502",
            "FAILED_TO_CONSUME_MESSAGE = 60000",
        ],
    ),
    (
        "MessageType",
        &["MESSAGE_TYPE_UNSPECIFIED = 0", "NORMAL = 1", "FIFO = 2", "DELAY = 3", "TRANSACTION = 4", "LITE = 5", "PRIORITY = 6"],
    ),
    (
        "ClientType",
        &[
            "CLIENT_TYPE_UNSPECIFIED = 0",
            "PRODUCER = 1",
            "PUSH_CONSUMER = 2",
            "SIMPLE_CONSUMER = 3",
            "PULL_CONSUMER = 4",
            "LITE_PUSH_CONSUMER = 5",
            "LITE_SIMPLE_CONSUMER = 6",
        ],
    ),
    ("Permission", &["PERMISSION_UNSPECIFIED = 0", "NONE = 1", "READ = 2", "WRITE = 3", "READ_WRITE = 4"]),
    ("AddressScheme", &["ADDRESS_SCHEME_UNSPECIFIED = 0", "IPv4 = 1", "IPv6 = 2", "DOMAIN_NAME = 3"]),
    ("FilterType", &["FILTER_TYPE_UNSPECIFIED = 0", "TAG = 1", "SQL = 2"]),
    ("DigestType", &["DIGEST_TYPE_UNSPECIFIED = 0", "CRC32 = 1", "MD5 = 2", "SHA1 = 3"]),
    ("Encoding", &["ENCODING_UNSPECIFIED = 0", "IDENTITY = 1", "GZIP = 2"]),
    (
        "Language",
        &[
            "LANGUAGE_UNSPECIFIED = 0",
            "JAVA = 1",
            "CPP = 2",
            "DOT_NET = 3",
            "GOLANG = 4",
            "RUST = 5",
            "PYTHON = 6",
            "PHP = 7",
            "NODE_JS = 8",
            "RUBY = 9",
            "OBJECTIVE_C = 10",
            "DART = 11",
            "KOTLIN = 12",
        ],
    ),
    ("TransactionResolution", &["TRANSACTION_RESOLUTION_UNSPECIFIED = 0", "COMMIT = 1", "ROLLBACK = 2"]),
    ("TransactionSource", &["SOURCE_UNSPECIFIED = 0", "SOURCE_CLIENT = 1", "SOURCE_SERVER_CHECK = 2"]),
    ("QueryOffsetPolicy", &["BEGINNING = 0", "END = 1", "TIMESTAMP = 2"]),
    ("LiteSubscriptionAction", &["PARTIAL_ADD = 0", "PARTIAL_REMOVE = 1", "COMPLETE_ADD = 2", "COMPLETE_REMOVE = 3"]),
    ("OffsetOption.Policy", &["LAST = 0", "MIN = 1", "MAX = 2"]),
];

#[test]
fn files_declare_the_published_messages_and_enums() {
    let set = rocketmq();
    let files = package_files(&set, PACKAGE);
    let names: Vec<&str> = files.iter().map(|file| file.name()).collect();
    assert_eq!(names, ["apache/rocketmq/v2/definition.proto", "apache/rocketmq/v2/service.proto", "apache/rocketmq/v2/admin.proto",]);
    for (name, messages, enums) in DECLARATIONS {
        let (found_messages, found_enums) = declarations(file(&set, name));
        assert_eq!(found_messages, *messages, "messages of {name}");
        assert_eq!(found_enums, *enums, "enums of {name}");
    }
}

#[test]
fn messaging_service_has_the_published_rpcs() {
    let set = rocketmq();
    let service_file = file(&set, "apache/rocketmq/v2/service.proto");
    let messaging = service(&[service_file], "MessagingService");
    let full_name = format!("{}.{}", service_file.package(), messaging.name());
    assert_eq!(full_name, "apache.rocketmq.v2.MessagingService");
    // The generated server routes on this name: it is the HTTP/2 path prefix.
    assert_eq!(crate::apache::rocketmq::v2::messaging_service_server::SERVICE_NAME, full_name);
    assert_eq!(rpcs(messaging, PACKAGE), MESSAGING_SERVICE_RPCS);
}

#[test]
fn admin_service_has_the_published_rpcs() {
    let set = rocketmq();
    let admin = service(&package_files(&set, PACKAGE), "Admin");
    assert_eq!(crate::apache::rocketmq::v2::admin_server::SERVICE_NAME, "apache.rocketmq.v2.Admin");
    assert_eq!(rpcs(admin, PACKAGE), ADMIN_RPCS);
}

#[test]
fn client_messages_have_the_published_fields() {
    let set = rocketmq();
    let files = package_files(&set, PACKAGE);
    for (name, expected) in MESSAGE_FIELDS {
        assert_eq!(fields(message(&files, name), PACKAGE), *expected, "fields of {name}");
    }
}

#[test]
fn enums_have_the_published_values() {
    let set = rocketmq();
    let files = package_files(&set, PACKAGE);
    for (name, expected) in ENUM_VALUES {
        assert_eq!(values(enumeration(&files, name)), *expected, "values of {name}");
    }
}

#[test]
fn generated_code_keeps_the_wire_numbers() {
    use crate::apache::rocketmq::v2::{Code, MessageType};
    assert_eq!(Code::Ok as i32, 20000);
    assert_eq!(Code::TooManyRequests as i32, 42900);
    assert_eq!(MessageType::Fifo as i32, 2);
    assert_eq!(Code::from_str_name("MESSAGE_BODY_TOO_LARGE"), Some(Code::MessageBodyTooLarge));
}

#[test]
fn descriptor_set_includes_the_imported_well_known_types() {
    // gRPC reflection clients resolve imports from the same set.
    let set = rocketmq();
    for name in ["google/protobuf/timestamp.proto", "google/protobuf/duration.proto"] {
        assert_eq!(file(&set, name).package(), "google.protobuf");
    }
}
