//! Checks of the generated protocol against the published contract.
//!
//! The descriptor tests read the descriptor sets embedded in this crate, i.e.
//! exactly what protoc compiled, and render each field back into proto
//! syntax, so an expected table reads like the published `.proto` file it was
//! checked against.

mod raftmq_v1;
mod rocketmq_v2;
mod rocketmq_v2_wire;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet, ServiceDescriptorProto,
};

fn decode_set(encoded: &[u8]) -> FileDescriptorSet {
    FileDescriptorSet::decode(encoded).expect("embedded descriptor set decodes")
}

/// The files of `set` that belong to `package`.
fn package_files<'a>(set: &'a FileDescriptorSet, package: &str) -> Vec<&'a FileDescriptorProto> {
    set.file.iter().filter(|file| file.package() == package).collect()
}

fn file<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a FileDescriptorProto {
    set.file.iter().find(|file| file.name() == name).unwrap_or_else(|| panic!("no file {name} in the descriptor set"))
}

/// A top-level or nested (`Outer.Inner`) message of `package`.
fn message<'a>(files: &[&'a FileDescriptorProto], path: &str) -> &'a DescriptorProto {
    let mut names = path.split('.');
    let top = names.next().expect("non-empty path");
    let mut found = files
        .iter()
        .flat_map(|file| &file.message_type)
        .find(|message| message.name() == top)
        .unwrap_or_else(|| panic!("no message {top}"));
    for name in names {
        found = found.nested_type.iter().find(|nested| nested.name() == name).unwrap_or_else(|| panic!("no message {path}"));
    }
    found
}

/// A top-level enum, or one nested in a message (`Outer.Enum`).
fn enumeration<'a>(files: &[&'a FileDescriptorProto], path: &str) -> &'a EnumDescriptorProto {
    let (scope, name): (Vec<&EnumDescriptorProto>, &str) = match path.rsplit_once('.') {
        Some((outer, name)) => (message(files, outer).enum_type.iter().collect(), name),
        None => (files.iter().flat_map(|file| &file.enum_type).collect(), path),
    };
    scope.into_iter().find(|enumeration| enumeration.name() == name).unwrap_or_else(|| panic!("no enum {path}"))
}

fn service<'a>(files: &[&'a FileDescriptorProto], name: &str) -> &'a ServiceDescriptorProto {
    files.iter().flat_map(|file| &file.service).find(|service| service.name() == name).unwrap_or_else(|| panic!("no service {name}"))
}

/// Each rpc as `Name(stream? Input) returns (stream? Output)`, with types
/// shown relative to `package`.
fn rpcs(service: &ServiceDescriptorProto, package: &str) -> Vec<String> {
    let stream = |streaming: bool| if streaming { "stream " } else { "" };
    service
        .method
        .iter()
        .map(|method| {
            format!(
                "{}({}{}) returns ({}{})",
                method.name(),
                stream(method.client_streaming()),
                relative(method.input_type(), package),
                stream(method.server_streaming()),
                relative(method.output_type(), package),
            )
        })
        .collect()
}

/// Each field of `message` rendered as in a `.proto` file, in declaration
/// order: `optional string tag = 1`, `map<string, string> user_properties = 2`,
/// `oneof content: Status status = 1`.
fn fields(message: &DescriptorProto, package: &str) -> Vec<String> {
    message.field.iter().map(|field| render_field(message, field, package)).collect()
}

fn render_field(message: &DescriptorProto, field: &FieldDescriptorProto, package: &str) -> String {
    let declared = format!("{} = {}", field.name(), field.number());
    if let Some((key, value)) = map_entry(message, field, package) {
        return format!("map<{key}, {value}> {declared}");
    }
    let type_name = field_type(field, package);
    if field.label() == Label::Repeated {
        return format!("repeated {type_name} {declared}");
    }
    if field.proto3_optional() {
        return format!("optional {type_name} {declared}");
    }
    match field.oneof_index {
        Some(index) => {
            let oneof = message.oneof_decl[usize::try_from(index).expect("small index")].name();
            format!("oneof {oneof}: {type_name} {declared}")
        }
        None => format!("{type_name} {declared}"),
    }
}

/// Key and value types when `field` is a map (a repeated synthetic entry).
fn map_entry(message: &DescriptorProto, field: &FieldDescriptorProto, package: &str) -> Option<(String, String)> {
    if field.label() != Label::Repeated || field.r#type() != Type::Message {
        return None;
    }
    let entry_name = field.type_name().rsplit('.').next()?;
    let entry = message
        .nested_type
        .iter()
        .find(|nested| nested.name() == entry_name && nested.options.as_ref().is_some_and(prost_types::MessageOptions::map_entry))?;
    Some((field_type(&entry.field[0], package), field_type(&entry.field[1], package)))
}

fn field_type(field: &FieldDescriptorProto, package: &str) -> String {
    let scalar = match field.r#type() {
        Type::Message | Type::Enum | Type::Group => return relative(field.type_name(), package),
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
    };
    scalar.to_owned()
}

/// `.apache.rocketmq.v2.OffsetOption.Policy` -> `OffsetOption.Policy`;
/// types of other packages keep their full name.
fn relative(type_name: &str, package: &str) -> String {
    let full = type_name.trim_start_matches('.');
    full.strip_prefix(package).and_then(|rest| rest.strip_prefix('.')).unwrap_or(full).to_owned()
}

/// Each value of an enum as `NAME = number`, in declaration order.
fn values(enumeration: &EnumDescriptorProto) -> Vec<String> {
    enumeration.value.iter().map(|value| format!("{} = {}", value.name(), value.number())).collect()
}

/// Names of the top-level messages and enums of one file, in order.
fn declarations(file: &FileDescriptorProto) -> (Vec<&str>, Vec<&str>) {
    let messages = file.message_type.iter().map(DescriptorProto::name).collect();
    let enums = file.enum_type.iter().map(EnumDescriptorProto::name).collect();
    (messages, enums)
}

#[test]
fn field_rendering_covers_every_shape() {
    let set = decode_set(crate::ROCKETMQ_V2_DESCRIPTOR_SET);
    let files = package_files(&set, "apache.rocketmq.v2");
    let package = "apache.rocketmq.v2";
    // One field of each shape the tables rely on, rendered on its own so a
    // renderer bug cannot hide behind a table written to match it.
    let message_fields = fields(message(&files, "Message"), package);
    assert_eq!(message_fields[1], "map<string, string> user_properties = 2");
    let props = fields(message(&files, "SystemProperties"), package);
    assert_eq!(props[0], "optional string tag = 1");
    assert_eq!(props[1], "repeated string keys = 2");
    assert_eq!(props[6], "google.protobuf.Timestamp born_timestamp = 7");
    let offset_option = fields(message(&files, "OffsetOption"), package);
    assert_eq!(offset_option[0], "oneof offset_type: OffsetOption.Policy policy = 1");
}
