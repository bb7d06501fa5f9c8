//! `raftmq admin`: operator commands over AdminService. `topic create|list|describe` manage
//! topics; `cluster status` shows the brokers and every Raft group's progress; `group checksum
//! TOPIC` compares the state digests of every replica of the topic's groups and exits 1 unless
//! all agree; `group move-leader GROUP --to BROKER` hands a group's leadership to another of its
//! replicas. Text on stdout by default, one JSON object with `--json`.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use proto::raftmq::v1::{
    BrokerInfo, CreateTopicRequest, GroupChecksumReply, GroupChecksumRequest, GroupStatus, ListTopicsRequest, MessageType,
    MoveLeaderRequest, QueueInfo, ReplicaChecksum, ReplicaRole, Topic,
};
use serde::Serialize;
use serde_json::json;

use super::table::write_table;
use client::connection::{admin_client, request};
use client::status;
use client::{Cluster, Target};

use super::{CommonArgs, EXIT_CHECK_FAILED};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create, list and describe topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Brokers and Raft groups of the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Checks on the Raft groups that hold a topic's queues.
    #[command(subcommand)]
    Group(GroupCommand),
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic; prints it as created, with the server's defaults filled in.
    Create(CreateArgs),
    /// List every topic.
    List(CommonArgs),
    /// Show a topic's queues: Raft group, leader, replicas, end offset.
    Describe(DescribeArgs),
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Brokers (endpoint, alive) and every Raft group: leader, term, commit and applied index,
    /// and each replica's role, matched and applied index and lag.
    Status(CommonArgs),
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Compare the state digests of every replica of each group holding TOPIC's queues, at an
    /// index all of them applied. Exits 1 if any group's replicas disagree or one could not answer.
    Checksum(ChecksumArgs),
    /// Hand a queue group's leadership to another of its replicas (Raft leader transfer) and
    /// wait until that replica leads. The group takes no writes for the moment of the hand-over
    /// (clients retry); a replica far behind the leader is refused.
    MoveLeader(MoveLeaderArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Topic name: 1 to 127 characters from [%|a-zA-Z0-9_-].
    name: String,
    /// Queues of the topic; 0 takes the cluster's default.
    #[arg(long, default_value_t = 0)]
    queues: u32,
    /// Replicas of each queue's Raft group; 0 takes the cluster's default.
    #[arg(long, default_value_t = 0)]
    replication_factor: u32,
    /// Message type [default: the cluster's default].
    #[arg(long = "type", value_enum)]
    message_type: Option<TopicType>,
    /// Each queue group records a checkpoint (a possible trim point and snapshot) every this
    /// many Raft entries; retention frees messages a checkpoint at a time. Fixed for the topic.
    /// 0 takes the cluster's default.
    #[arg(long, default_value_t = 0)]
    checkpoint_interval_entries: u64,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
pub struct DescribeArgs {
    /// Topic name.
    name: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
pub struct ChecksumArgs {
    /// Topic whose queue groups are checked.
    topic: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
pub struct MoveLeaderArgs {
    /// The queue group (`topic describe` names each queue's).
    group: u64,
    /// The broker to lead it: one holding a replica of the group.
    #[arg(long)]
    to: u64,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopicType {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

impl From<TopicType> for MessageType {
    fn from(t: TopicType) -> Self {
        match t {
            TopicType::Normal => MessageType::Normal,
            TopicType::Fifo => MessageType::Fifo,
            TopicType::Delay => MessageType::Delay,
            TopicType::Transaction => MessageType::Transaction,
        }
    }
}

/// Pages of ListTopics followed at most: far more topics than a cluster holds.
const LIST_PAGES_MAX: usize = 100_000;

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async move {
        match cmd {
            AdminCommand::Topic(TopicCommand::Create(args)) => create_topic(&args).await,
            AdminCommand::Topic(TopicCommand::List(args)) => list_topics(&args).await,
            AdminCommand::Topic(TopicCommand::Describe(args)) => describe_topic(&args).await,
            AdminCommand::Cluster(ClusterCommand::Status(args)) => cluster_status(&args).await,
            AdminCommand::Group(GroupCommand::Checksum(args)) => group_checksum(&args).await,
            AdminCommand::Group(GroupCommand::MoveLeader(args)) => move_leader(&args).await,
        }
    })
}

async fn create_topic(args: &CreateArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.common.connect.cluster();
    let topic = Topic {
        name: args.name.clone(),
        queue_count: args.queues,
        replication_factor: args.replication_factor,
        message_type: args.message_type.map_or(MessageType::Unspecified, MessageType::from) as i32,
        checkpoint_interval_entries: args.checkpoint_interval_entries,
    };
    let req = CreateTopicRequest { topic: Some(topic) };
    let reply = cluster
        .call(Target::Bootstrap, |ch, left| {
            let req = req.clone();
            async move { admin_client(ch).create_topic(request(req, left)).await }
        })
        .await
        .with_context(|| format!("creating topic {}", args.name))?;
    let created = TopicView::from(&reply.topic.unwrap_or_default());
    let mut out = io::stdout().lock();
    if args.common.json {
        writeln!(out, "{}", serde_json::to_string(&created)?)?;
    } else {
        writeln!(out, "created topic {}", created.describe())?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list_topics(args: &CommonArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.connect.cluster();
    let mut topics = Vec::new();
    let mut page_token = String::new();
    for _ in 0..LIST_PAGES_MAX {
        let req = ListTopicsRequest { page_size: 0, page_token: page_token.clone() };
        let reply = cluster
            .call(Target::Bootstrap, |ch, left| {
                let req = req.clone();
                async move { admin_client(ch).list_topics(request(req, left)).await }
            })
            .await
            .context("listing topics")?;
        topics.extend(reply.topics.iter().map(TopicView::from));
        if reply.next_page_token.is_empty() {
            return print_topics(&topics, args.json);
        }
        if reply.next_page_token == page_token {
            bail!("listing topics: the broker answered the page token {page_token:?} with itself");
        }
        page_token = reply.next_page_token;
    }
    bail!("listing topics: more than {LIST_PAGES_MAX} pages")
}

fn print_topics(topics: &[TopicView], json: bool) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", json!({ "topics": topics }))?;
    } else {
        let rows: Vec<Vec<String>> = topics
            .iter()
            .map(|t| vec![t.name.clone(), t.queue_count.to_string(), t.replication_factor.to_string(), t.message_type.clone()])
            .collect();
        write_table(&mut out, &["NAME", "QUEUES", "REPLICAS", "TYPE"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn describe_topic(args: &DescribeArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.common.connect.cluster();
    let reply = cluster.describe_topic(&args.name).await.with_context(|| format!("describing topic {}", args.name))?;
    let topic = TopicView::from(&reply.topic.unwrap_or_default());
    let queues: Vec<QueueView> = reply.queues.iter().map(QueueView::from).collect();
    let mut out = io::stdout().lock();
    if args.common.json {
        writeln!(out, "{}", json!({ "topic": topic, "queues": queues }))?;
    } else {
        write_description(&mut out, &topic, &queues)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn cluster_status(args: &CommonArgs) -> anyhow::Result<ExitCode> {
    let reply = args.connect.cluster().cluster_status().await.context("reading the cluster status")?;
    let brokers: Vec<BrokerView> = reply.brokers.iter().map(BrokerView::from).collect();
    let groups: Vec<GroupView> = reply.groups.iter().map(GroupView::from).collect();
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json!({ "brokers": brokers, "groups": groups }))?;
    } else {
        write_cluster_status(&mut out, &brokers, &groups)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn group_checksum(args: &ChecksumArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.common.connect.cluster();
    let described = cluster.describe_topic(&args.topic).await.with_context(|| format!("describing topic {}", args.topic))?;
    let mut reports = Vec::new();
    for group_id in group_ids(&described.queues) {
        let reply = checksum(&cluster, group_id).await;
        let report = match reply {
            Ok(reply) => GroupChecksumView::from_reply(group_id, &reply),
            Err(e) => GroupChecksumView::failed(group_id, format!("{e:#}")),
        };
        reports.push(report);
    }
    let all_agree = reports.iter().all(|r| r.verdict == Verdict::Agree);
    let mut out = io::stdout().lock();
    if args.common.json {
        writeln!(out, "{}", json!({ "topic": args.topic, "ok": all_agree, "groups": reports }))?;
    } else {
        write_checksums(&mut out, &args.topic, &reports)?;
    }
    Ok(if all_agree { ExitCode::SUCCESS } else { ExitCode::from(EXIT_CHECK_FAILED) })
}

async fn move_leader(args: &MoveLeaderArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.common.connect.cluster();
    let req = MoveLeaderRequest { group_id: args.group, to_broker_id: args.to };
    let reply = cluster
        .call(Target::Bootstrap, |ch, left| async move { admin_client(ch).move_leader(request(req, left)).await })
        .await
        .with_context(|| format!("moving group {}'s leadership to broker {}", args.group, args.to))?;
    let mut out = io::stdout().lock();
    if args.common.json {
        writeln!(out, "{}", json!({ "group": args.group, "leader": reply.leader_broker_id, "term": reply.term }))?;
    } else {
        writeln!(out, "group {}: led by broker {} (term {})", args.group, reply.leader_broker_id, reply.term)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn checksum(cluster: &Cluster, group_id: u64) -> anyhow::Result<GroupChecksumReply> {
    let req = GroupChecksumRequest { group_id, applied_index: 0 };
    let reply = cluster
        .call(Target::Bootstrap, |ch, left| async move { admin_client(ch).group_checksum(request(req, left)).await })
        .await
        .with_context(|| format!("checksum of group {group_id}"))?;
    Ok(reply)
}

/// The distinct groups of `queues`, in queue order.
fn group_ids(queues: &[QueueInfo]) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::with_capacity(queues.len());
    for q in queues {
        if !ids.contains(&q.group_id) {
            ids.push(q.group_id);
        }
    }
    ids
}

fn message_type_name(t: i32) -> String {
    MessageType::try_from(t).map_or_else(|_| "unspecified".to_owned(), |t| short_name(t.as_str_name(), "MESSAGE_TYPE_"))
}

fn role_name(r: i32) -> String {
    match ReplicaRole::try_from(r) {
        Ok(ReplicaRole::Unspecified) | Err(_) => "unknown".to_owned(),
        Ok(role) => short_name(role.as_str_name(), "REPLICA_ROLE_"),
    }
}

/// A protobuf enum value's name without its type's prefix, in lower case: "fifo" for
/// `MESSAGE_TYPE_FIFO`.
fn short_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

/// A broker id where 0 means "none".
fn known(id: u64) -> Option<u64> {
    (id != 0).then_some(id)
}

fn or_dash(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct TopicView {
    name: String,
    queue_count: u32,
    replication_factor: u32,
    message_type: String,
    checkpoint_interval_entries: u64,
}

impl From<&Topic> for TopicView {
    fn from(t: &Topic) -> Self {
        Self {
            name: t.name.clone(),
            queue_count: t.queue_count,
            replication_factor: t.replication_factor,
            message_type: message_type_name(t.message_type),
            checkpoint_interval_entries: t.checkpoint_interval_entries,
        }
    }
}

impl TopicView {
    fn describe(&self) -> String {
        format!(
            "{}: {} queues, replication factor {}, type {}, checkpoint every {} entries",
            self.name, self.queue_count, self.replication_factor, self.message_type, self.checkpoint_interval_entries
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct QueueView {
    queue_id: u32,
    group_id: u64,
    /// None when the group has no known leader.
    leader_broker_id: Option<u64>,
    replica_broker_ids: Vec<u64>,
    end_offset: u64,
}

impl From<&QueueInfo> for QueueView {
    fn from(q: &QueueInfo) -> Self {
        Self {
            queue_id: q.queue_id,
            group_id: q.group_id,
            leader_broker_id: known(q.leader_broker_id),
            replica_broker_ids: q.replica_broker_ids.clone(),
            end_offset: q.end_offset,
        }
    }
}

fn write_description(out: &mut impl Write, topic: &TopicView, queues: &[QueueView]) -> io::Result<()> {
    writeln!(out, "topic {}", topic.describe())?;
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let replicas: Vec<String> = q.replica_broker_ids.iter().map(u64::to_string).collect();
            vec![q.queue_id.to_string(), q.group_id.to_string(), or_dash(q.leader_broker_id), replicas.join(","), q.end_offset.to_string()]
        })
        .collect();
    write_table(out, &["QUEUE", "GROUP", "LEADER", "REPLICAS", "END_OFFSET"], &rows)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct BrokerView {
    broker_id: u64,
    endpoint: String,
    alive: bool,
    /// Sorted by key, for stable output.
    labels: std::collections::BTreeMap<String, String>,
}

impl From<&BrokerInfo> for BrokerView {
    fn from(b: &BrokerInfo) -> Self {
        Self { broker_id: b.broker_id, endpoint: b.endpoint.clone(), alive: b.alive, labels: b.labels.clone().into_iter().collect() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct ReplicaView {
    broker_id: u64,
    role: String,
    matched_index: u64,
    applied_index: u64,
    lag: u64,
    snapshot_index: u64,
    purged_index: u64,
    hibernating: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct GroupView {
    group_id: u64,
    leader_broker_id: Option<u64>,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    replicas: Vec<ReplicaView>,
}

impl From<&GroupStatus> for GroupView {
    fn from(g: &GroupStatus) -> Self {
        let replicas = g
            .replicas
            .iter()
            .map(|r| ReplicaView {
                broker_id: r.broker_id,
                role: role_name(r.role),
                matched_index: r.matched_index,
                applied_index: r.applied_index,
                lag: r.lag,
                snapshot_index: r.snapshot_index,
                purged_index: r.purged_index,
                hibernating: r.hibernating,
            })
            .collect();
        Self {
            group_id: g.group_id,
            leader_broker_id: known(g.leader_broker_id),
            term: g.term,
            commit_index: g.commit_index,
            applied_index: g.applied_index,
            replicas,
        }
    }
}

fn write_cluster_status(out: &mut impl Write, brokers: &[BrokerView], groups: &[GroupView]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = brokers
        .iter()
        .map(|b| {
            let labels: Vec<String> = b.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![b.broker_id.to_string(), b.endpoint.clone(), if b.alive { "yes" } else { "NO" }.into(), labels.join(",")]
        })
        .collect();
    writeln!(out, "brokers: {}", brokers.len())?;
    write_table(out, &["BROKER", "ENDPOINT", "ALIVE", "LABELS"], &rows)?;
    writeln!(out, "\ngroups: {}", groups.len())?;
    // One row per replica; the group's own columns only on its first row.
    let mut rows = Vec::new();
    for g in groups {
        let group = vec![
            g.group_id.to_string(),
            or_dash(g.leader_broker_id),
            g.term.to_string(),
            g.commit_index.to_string(),
            g.applied_index.to_string(),
        ];
        if g.replicas.is_empty() {
            rows.push(group);
            continue;
        }
        for (i, r) in g.replicas.iter().enumerate() {
            let mut row = if i == 0 { group.clone() } else { vec![String::new(); group.len()] };
            row.extend([
                r.broker_id.to_string(),
                r.role.clone(),
                r.matched_index.to_string(),
                r.applied_index.to_string(),
                r.lag.to_string(),
                r.snapshot_index.to_string(),
                r.purged_index.to_string(),
                if r.hibernating { "yes" } else { "no" }.into(),
            ]);
            rows.push(row);
        }
    }
    let header = [
        "GROUP",
        "LEADER",
        "TERM",
        "COMMIT",
        "APPLIED",
        "REPLICA",
        "ROLE",
        "MATCHED",
        "APPLIED",
        "LAG",
        "SNAPSHOT",
        "PURGED",
        "HIBERNATING",
    ];
    write_table(out, &header, &rows)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Agree,
    Disagree,
    /// Not every replica answered (or the call failed): agreement is not shown.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct ReplicaChecksumView {
    broker_id: u64,
    /// Hex; None when the replica did not answer.
    digest: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct GroupChecksumView {
    group_id: u64,
    /// The index every digest was taken at; None when the call failed.
    applied_index: Option<u64>,
    verdict: Verdict,
    /// Why the group's checksum could not be read at all.
    error: Option<String>,
    replicas: Vec<ReplicaChecksumView>,
}

impl GroupChecksumView {
    fn from_reply(group_id: u64, reply: &GroupChecksumReply) -> Self {
        let replicas: Vec<ReplicaChecksumView> = reply.replicas.iter().map(replica_view).collect();
        Self { group_id, applied_index: Some(reply.applied_index), verdict: verdict(&replicas), error: None, replicas }
    }

    fn failed(group_id: u64, error: String) -> Self {
        Self { group_id, applied_index: None, verdict: Verdict::Error, error: Some(error), replicas: Vec::new() }
    }
}

fn replica_view(r: &ReplicaChecksum) -> ReplicaChecksumView {
    let error = match r.error.as_ref().map(|s| status::check(Some(s))) {
        Some(Err(e)) => Some(e.to_string()),
        // No error status, or one that says OK.
        None | Some(Ok(())) if r.digest.is_empty() => Some("empty digest".to_string()),
        None | Some(Ok(())) => None,
    };
    let digest = if error.is_none() { Some(hex(&r.digest)) } else { None };
    ReplicaChecksumView { broker_id: r.broker_id, digest, error }
}

/// Disagreement among the replicas that answered is the worst finding and is reported even
/// when others failed; all must answer, and alike, to agree.
fn verdict(replicas: &[ReplicaChecksumView]) -> Verdict {
    let digests: Vec<&String> = replicas.iter().filter_map(|r| r.digest.as_ref()).collect();
    if digests.windows(2).any(|w| w[0] != w[1]) {
        Verdict::Disagree
    } else if replicas.is_empty() || digests.len() < replicas.len() {
        Verdict::Error
    } else {
        Verdict::Agree
    }
}

fn write_checksums(out: &mut impl Write, topic: &str, groups: &[GroupChecksumView]) -> io::Result<()> {
    for g in groups {
        let verdict = match g.verdict {
            Verdict::Agree => "replicas agree",
            Verdict::Disagree => "REPLICAS DISAGREE",
            Verdict::Error => "NOT CHECKED: a replica did not answer",
        };
        match &g.error {
            Some(e) => writeln!(out, "group {}: NOT CHECKED: {e}", g.group_id)?,
            None => writeln!(out, "group {} at applied index {}: {verdict}", g.group_id, or_dash(g.applied_index))?,
        }
        for r in &g.replicas {
            match (&r.digest, &r.error) {
                (Some(d), _) => writeln!(out, "  broker {}  {d}", r.broker_id)?,
                (None, e) => writeln!(out, "  broker {}  error: {}", r.broker_id, e.as_deref().unwrap_or("no digest"))?,
            }
        }
    }
    let count = |v: Verdict| groups.iter().filter(|g| g.verdict == v).count();
    let (disagree, unchecked) = (count(Verdict::Disagree), count(Verdict::Error));
    if disagree + unchecked == 0 {
        writeln!(out, "topic {topic}: all {} group(s) agree", groups.len())
    } else {
        writeln!(out, "topic {topic}: of {} group(s), {disagree} disagree and {unchecked} were not checked", groups.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::raftmq::v1::status::Code;
    use proto::raftmq::v1::{ReplicaStatus, Status};
    use std::collections::HashMap;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(args: &[&str]) -> Result<AdminCommand, clap::Error> {
        crate::cli::args_in_tests::parse_subcommand("admin", args)
    }

    #[test]
    fn enum_values_are_shown_by_their_short_names() {
        assert_eq!(message_type_name(MessageType::Fifo as i32), "fifo");
        assert_eq!(message_type_name(MessageType::Transaction as i32), "transaction");
        assert_eq!((message_type_name(0), message_type_name(99)), ("unspecified".to_owned(), "unspecified".to_owned()));
        assert_eq!(role_name(ReplicaRole::Learner as i32), "learner");
        assert_eq!((role_name(0), role_name(99)), ("unknown".to_owned(), "unknown".to_owned()));
    }

    #[test]
    fn the_command_tree_is_consistent() {
        crate::cli::args_in_tests::check_subcommand::<AdminCommand>();
    }

    #[test]
    fn create_arguments() {
        let Ok(AdminCommand::Topic(TopicCommand::Create(a))) = parse(&[
            "topic",
            "create",
            "orders",
            "--queues",
            "8",
            "--replication-factor",
            "3",
            "--type",
            "fifo",
            "--checkpoint-interval-entries",
            "64",
            "--broker",
            "b1:9000",
            "--json",
        ]) else {
            panic!("not a create");
        };
        assert_eq!((a.name.as_str(), a.queues, a.replication_factor, a.message_type), ("orders", 8, 3, Some(TopicType::Fifo)));
        assert_eq!(a.checkpoint_interval_entries, 64);
        assert_eq!((a.common.connect.broker, a.common.json), (vec!["b1:9000".to_string()], true));

        let Ok(AdminCommand::Topic(TopicCommand::Create(a))) = parse(&["topic", "create", "t"]) else { panic!("not a create") };
        assert_eq!((a.queues, a.replication_factor, a.message_type, a.common.json), (0, 0, None, false));

        assert!(parse(&["topic", "create", "t", "--type", "weird"]).is_err());
        assert!(parse(&["topic", "create"]).is_err());
        assert!(parse(&["topic", "create", "t", "--broker", "no-port"]).is_err());
        assert!(parse(&["topic", "create", "t", "--broker", "b1:1,no-port"]).is_err(), "every endpoint of the list is checked");
        assert!(parse(&["topic", "create", "t", "--broker", ""]).is_err());
        assert!(matches!(parse(&["group", "checksum", "t"]), Ok(AdminCommand::Group(GroupCommand::Checksum(_)))));
        assert!(matches!(
            parse(&["cluster", "status", "--json"]),
            Ok(AdminCommand::Cluster(ClusterCommand::Status(CommonArgs { json: true, .. })))
        ));
    }

    #[test]
    fn distinct_groups_in_queue_order() {
        let q = |queue_id, group_id| QueueInfo { queue_id, group_id, ..Default::default() };
        assert_eq!(group_ids(&[q(0, 7), q(1, 3), q(2, 7), q(3, 9)]), [7, 3, 9]);
    }

    fn replica(broker_id: u64, digest: &[u8], error: Option<Code>) -> ReplicaChecksum {
        let error = error.map(|c| Status { code: c as i32, message: "behind".into(), ..Default::default() });
        ReplicaChecksum { broker_id, digest: digest.to_vec().into(), error }
    }

    fn verdict_of(replicas: &[ReplicaChecksum]) -> Verdict {
        GroupChecksumView::from_reply(1, &GroupChecksumReply { status: None, applied_index: 10, replicas: replicas.to_vec() }).verdict
    }

    #[test]
    fn checksum_verdicts() {
        use Verdict::*;
        let d1: &[u8] = &[0xab, 0x01];
        let d2: &[u8] = &[0xab, 0x02];
        assert_eq!(verdict_of(&[replica(1, d1, None), replica(2, d1, None), replica(3, d1, None)]), Agree);
        assert_eq!(verdict_of(&[replica(1, d1, None)]), Agree);
        assert_eq!(verdict_of(&[replica(1, d1, None), replica(2, d1, Some(Code::Ok))]), Agree, "an OK error status is no error");
        assert_eq!(verdict_of(&[replica(1, d1, None), replica(2, d2, None), replica(3, d1, None)]), Disagree);
        assert_eq!(verdict_of(&[replica(1, d1, None), replica(2, b"", Some(Code::Unavailable)), replica(3, d2, None)]), Disagree);
        assert_eq!(verdict_of(&[replica(1, d1, None), replica(2, b"", Some(Code::Unavailable))]), Error);
        assert_eq!(verdict_of(&[replica(1, d1, None), replica(2, b"", None)]), Error, "an empty digest is no digest");
        assert_eq!(verdict_of(&[]), Error);
    }

    #[test]
    fn checksum_report() {
        let ok = GroupChecksumView::from_reply(
            4,
            &GroupChecksumReply {
                status: None,
                applied_index: 12,
                replicas: vec![replica(1, &[0, 0xff], None), replica(2, &[0, 0xff], None)],
            },
        );
        let bad = GroupChecksumView::from_reply(
            5,
            &GroupChecksumReply {
                status: None,
                applied_index: 30,
                replicas: vec![replica(1, &[1], None), replica(3, b"", Some(Code::Unavailable))],
            },
        );
        let failed = GroupChecksumView::failed(6, "checksum of group 6: not found: no such group".into());
        let mut out = Vec::new();
        write_checksums(&mut out, "orders", &[ok.clone(), bad, failed]).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "group 4 at applied index 12: replicas agree\n  broker 1  00ff\n  broker 2  00ff\n\
             group 5 at applied index 30: NOT CHECKED: a replica did not answer\n  broker 1  01\n  broker 3  error: unavailable: behind\n\
             group 6: NOT CHECKED: checksum of group 6: not found: no such group\n\
             topic orders: of 3 group(s), 0 disagree and 2 were not checked\n"
        );
        let json = serde_json::to_value(&ok).expect("json");
        assert_eq!(json["verdict"], "agree");
        assert_eq!(json["replicas"][0]["digest"], "00ff");
    }

    #[test]
    fn describe_and_status_text() {
        let topic = TopicView::from(&Topic {
            name: "orders".into(),
            queue_count: 2,
            replication_factor: 3,
            message_type: MessageType::Fifo as i32,
            checkpoint_interval_entries: 64,
        });
        let queues: Vec<QueueView> = [
            QueueInfo { queue_id: 0, group_id: 11, leader_broker_id: 2, replica_broker_ids: vec![1, 2, 3], end_offset: 42 },
            QueueInfo { queue_id: 1, group_id: 12, leader_broker_id: 0, replica_broker_ids: vec![2, 3, 1], end_offset: 0 },
        ]
        .iter()
        .map(QueueView::from)
        .collect();
        let mut out = Vec::new();
        write_description(&mut out, &topic, &queues).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "topic orders: 2 queues, replication factor 3, type fifo, checkpoint every 64 entries\n\
             QUEUE  GROUP  LEADER  REPLICAS  END_OFFSET\n\
             0      11     2       1,2,3     42\n\
             1      12     -       2,3,1     0\n"
        );

        let brokers =
            [BrokerView::from(&BrokerInfo { broker_id: 1, endpoint: "b1:8081".into(), alive: true, labels: labels(&[("zone", "a")]) })];
        let replica = |broker_id, role: ReplicaRole, lag| ReplicaStatus {
            broker_id,
            role: role as i32,
            matched_index: 9 - lag,
            applied_index: 9 - lag,
            lag,
            snapshot_index: 8 - lag,
            purged_index: 8 - lag,
            hibernating: lag == 0,
        };
        let groups = [GroupView::from(&GroupStatus {
            group_id: 11,
            leader_broker_id: 1,
            term: 4,
            commit_index: 9,
            applied_index: 9,
            replicas: vec![replica(1, ReplicaRole::Leader, 0), replica(2, ReplicaRole::Follower, 2)],
        })];
        let mut out = Vec::new();
        write_cluster_status(&mut out, &brokers, &groups).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..7],
            [
                "brokers: 1",
                "BROKER  ENDPOINT  ALIVE  LABELS",
                "1       b1:8081   yes    zone=a",
                "",
                "groups: 1",
                "GROUP  LEADER  TERM  COMMIT  APPLIED  REPLICA  ROLE      MATCHED  APPLIED  LAG  SNAPSHOT  PURGED  HIBERNATING",
                "11     1       4     9       9        1        leader    9        9        0    8         8       yes",
            ]
        );
        // The group's columns stay blank on its other replicas' rows.
        assert_eq!(lines[7], format!("{}2        follower  7        7        2    6         6       no", " ".repeat(38)));
        assert_eq!(lines.len(), 8);
    }
}
