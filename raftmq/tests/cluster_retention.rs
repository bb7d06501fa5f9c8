//! Retention and the bounds that keep it working, on three broker processes (real gRPC, real
//! fsync): a queue takes consumer groups up to its bound and refuses the next one clearly, and
//! with retention on, a quiet and a busy topic both trim, segment files are deleted on every
//! broker, and what is retained reads back intact.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{CommitOffsetRequest, FetchRequest, GetOffsetRequest, Message, SendRequest, Topic};
use support::{Cluster, code};

const FAST_RAFT: &str = "[raft]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n";
const DEADLINE: Duration = Duration::from_secs(60);

async fn create_topic(cluster: &Cluster, name: &str, checkpoint_interval_entries: u64) {
    cluster
        .create_topic(Topic { name: name.into(), queue_count: 1, replication_factor: 3, message_type: 0, checkpoint_interval_entries })
        .await;
}

fn commit(topic: &str, consumer_group: &str, offset: u64) -> tonic::Request<CommitOffsetRequest> {
    let mut r =
        tonic::Request::new(CommitOffsetRequest { consumer_group: consumer_group.into(), topic: topic.into(), queue_id: 0, offset });
    r.set_timeout(Duration::from_secs(10));
    r
}

/// Commits through any broker until one answers with something other than "try again"
/// (NOT_LEADER, UNAVAILABLE: nothing was done, so another try is safe).
async fn commit_until_answered(cluster: &Cluster, topic: &str, consumer_group: &str, offset: u64) -> proto::raftmq::v1::CommitOffsetReply {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for b in cluster.brokers.iter().filter(|b| b.pid().is_some()) {
            if let Ok(r) = b.queue().await.commit_offset(commit(topic, consumer_group, offset)).await {
                let r = r.into_inner();
                if !matches!(code(&r.status), Code::NotLeader | Code::Unavailable) {
                    return r;
                }
            }
        }
        assert!(Instant::now() < deadline, "no broker answered the commit of {consumer_group:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A queue at exactly `limits.consumer_groups_per_queue_max` consumer groups takes their commits
/// on every replica (the leader's broker is killed and the new leader has them); one more name is
/// RESOURCE_EXHAUSTED naming the bound and the key, under the new leader too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_takes_consumer_groups_up_to_the_bound_and_refuses_one_more_clearly() {
    let mut cluster = Cluster::start(3, &format!("{FAST_RAFT}[limits]\nconsumer_groups_per_queue_max = 4\n")).await;
    create_topic(&cluster, "offsets", 0).await;
    for (i, cg) in ["cg-0", "cg-1", "cg-2", "cg-3"].iter().enumerate() {
        let r = commit_until_answered(&cluster, "offsets", cg, 0).await;
        assert_eq!(code(&r.status), Code::Ok, "consumer group {i} of 4: {:?}", r.status);
    }
    let over = commit_until_answered(&cluster, "offsets", "cg-4", 0).await;
    assert_eq!(code(&over.status), Code::ResourceExhausted, "{:?}", over.status);
    let why = over.status.unwrap().message;
    assert!(why.contains("queue 0 has 4 consumer groups, at most 4") && why.contains("limits.consumer_groups_per_queue_max"), "{why}");

    let leader = cluster.leader_of_first_queue("offsets").await;
    cluster.brokers[leader as usize - 1].kill9();
    let again = commit_until_answered(&cluster, "offsets", "cg-5", 0).await;
    assert_eq!(code(&again.status), Code::ResourceExhausted, "the new leader refuses too: {:?}", again.status);
    let at_bound = commit_until_answered(&cluster, "offsets", "cg-3", 0).await;
    assert_eq!(code(&at_bound.status), Code::Ok, "a consumer group at the bound goes on: {:?}", at_bound.status);
    let alive = cluster.brokers.iter().find(|b| b.pid().is_some()).expect("a live broker");
    for cg in ["cg-0", "cg-3", "cg-4"] {
        let get = GetOffsetRequest { consumer_group: cg.into(), topic: "offsets".into(), queue_id: 0 };
        let r = alive.queue().await.get_offset(get).await.expect("get offset").into_inner();
        assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
        assert_eq!(r.offset, (cg != "cg-4").then_some(0), "{cg} on the new leader");
    }
}

/// Retention: messages older than 4 s go, checked every 200 ms, checkpoints by time after 500 ms;
/// 4 MiB segments (entries of at most 2 MiB, bodies of at most 1 MiB, to fit them).
const RETENTION: &str = "[retention]\nmax_age_ms = 4000\ncheck_interval_ms = 200\ncheckpoint_interval_ms = 500\n\
    [log]\nsegment_bytes = 4194304\nreclaim_after_segments = 4\n[send]\nentry_bytes_max = 2097152\n[limits]\nbody_bytes_max = 1048576\n";
const SEGMENT_BYTES: u64 = 4 << 20;
/// What the busy topic takes: 48 sends of 16 bodies of 64 KiB, 48 MiB, 12 segments' worth.
const BUSY_SENDS: u64 = 48;
const BODIES_PER_SEND: u64 = 16;
const BODY_BYTES: usize = 64 << 10;
/// Segments the log keeps before it copies the live entries of the oldest forward (the
/// `reclaim_after_segments` of [`RETENTION`]).
const RECLAIM_AFTER_SEGMENTS: u64 = 4;
/// Disk the log may keep once everything sent is older than the retention age: as many
/// segments as reclaim leaves alone (the active one, and those the newest entries of the
/// metadata and quiet queue groups pin, wherever the busy phase left them) and the spare file
/// preallocated for the next. The earlier bound of four files in all held only while those
/// entries happened to share segments: a CI run kept four segment files and the spare, 20 MiB.
const LOG_BYTES_BOUND: u64 = (RECLAIM_AFTER_SEGMENTS + 1) * SEGMENT_BYTES;

fn body(send: u64, k: u64) -> Vec<u8> {
    format!("send {send} message {k} ").into_bytes().into_iter().cycle().take(BODY_BYTES).collect()
}

async fn send(cluster: &Cluster, topic: &str, bodies: Vec<Vec<u8>>) -> Vec<u64> {
    let req = SendRequest {
        topic: topic.into(),
        target: Some(Target::QueueId(0)),
        messages: bodies.into_iter().map(|b| Message { body: b.into(), ..Default::default() }).collect(),
        producer_id: String::new(),
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        for b in &cluster.brokers {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(Duration::from_secs(10));
            if let Ok(r) = b.queue().await.send(r).await {
                let r = r.into_inner();
                match code(&r.status) {
                    Code::Ok => return r.results.iter().map(|r| r.offset).collect(),
                    // Nothing was stored: another try is safe.
                    Code::NotLeader | Code::Unavailable | Code::Busy => {}
                    other => panic!("send to {topic} failed: {other:?} {:?}", r.status),
                }
            }
        }
        assert!(Instant::now() < deadline, "no broker stored the send to {topic}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker's log directory: its segment files (`NNN.seg`), the highest segment number ever
/// reached (numbers only grow, so it counts the segments created) and the bytes of every file
/// there (the preallocated spare included).
fn log_files(cluster: &Cluster, broker: usize) -> (usize, u64, u64) {
    let dir = cluster.brokers[broker].dir.join("data").join("log");
    let (mut segments, mut highest, mut bytes) = (0, 0, 0);
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).filter_map(|e| e.ok()) {
        bytes += e.metadata().map_or(0, |m| m.len());
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_suffix(".seg").and_then(|d| d.parse::<u64>().ok()) {
            segments += 1;
            highest = highest.max(n);
        }
    }
    assert!(segments > 0, "no segment file in {}", dir.display());
    (segments, highest, bytes)
}

/// Everything `broker`'s replica of queue 0 of `topic` holds: its start and end offsets and the
/// messages from the start on, as of one read that no trim overtook. Retention keeps trimming
/// while the test reads (messages expire after `max_age_ms`), so a read during which the start
/// offset moved is begun again; the queue's end bounds every read.
async fn fetch_all(cluster: &Cluster, broker: usize, topic: &str) -> (u64, u64, Vec<(u64, Vec<u8>)>) {
    let mut queue = cluster.brokers[broker].queue().await;
    let deadline = Instant::now() + DEADLINE;
    'read: loop {
        assert!(Instant::now() < deadline, "broker {}: no read of {topic} outran its trims within {DEADLINE:?}", broker + 1);
        let mut got = Vec::new();
        let (mut start, mut from) = (None, 0);
        // Each page moves past at least one message; ends at the queue's end.
        loop {
            let req =
                FetchRequest { topic: topic.into(), queue_id: 0, offset: from, max_messages: 64, local_only: true, ..Default::default() };
            let r = queue.fetch(req).await.expect("fetch").into_inner();
            assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
            if *start.get_or_insert(r.start_offset) != r.start_offset {
                continue 'read;
            }
            if r.messages.is_empty() {
                // A reply that names messages below its end but holds none was overtaken by a
                // trim between the broker's reading of the offsets and of the messages.
                if from.max(r.start_offset) < r.end_offset {
                    continue 'read;
                }
                return (r.start_offset, r.end_offset, got);
            }
            from = r.next_offset;
            got.extend(r.messages.into_iter().map(|m| (m.offset, m.message.map(|m| m.body.to_vec()).unwrap_or_default())));
        }
    }
}

/// Both topics trim, the quiet one at a checkpoint by time (before those, its start offset
/// stayed 0), and what is retained reads back on every broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_retention_on_a_quiet_and_a_busy_topic_trim_and_what_is_retained_reads_back() {
    retention_run(false).await;
}

/// As above, and the segment files are deleted on every broker down to [`LOG_BYTES_BOUND`].
/// Before the metadata group snapshotted and purged its log, all 16 segments (64 MiB) stayed on
/// every broker with both topics trimmed: its first entries pinned the oldest segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_retention_on_segments_are_deleted_on_every_broker_and_what_is_retained_reads_back() {
    retention_run(true).await;
}

async fn retention_run(check_disk: bool) {
    let cluster = Cluster::start(3, &format!("{FAST_RAFT}{RETENTION}")).await;
    // The quiet topic reaches no checkpoint by entries (default interval 4,096): only by time.
    create_topic(&cluster, "quiet", 0).await;
    create_topic(&cluster, "busy", 4).await;
    let quiet: Vec<u64> = send(&cluster, "quiet", vec![b"q0".to_vec(), b"q1".to_vec(), b"q2".to_vec()]).await;
    assert_eq!(quiet, vec![0, 1, 2]);
    let mut sent: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for s in 0..BUSY_SENDS {
        let bodies: Vec<Vec<u8>> = (0..BODIES_PER_SEND).map(|k| body(s, k)).collect();
        let offsets = send(&cluster, "busy", bodies.clone()).await;
        sent.extend(offsets.into_iter().zip(bodies));
    }
    let written = BUSY_SENDS * BODIES_PER_SEND * BODY_BYTES as u64;
    assert!(written >= 12 * SEGMENT_BYTES, "several segments' worth: {written} bytes");

    // Both topics trim (the quiet one at a checkpoint by time), and every broker's log shrinks.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut done = true;
        for b in 0..3 {
            let (quiet_start, _, _) = fetch_all(&cluster, b, "quiet").await;
            let (busy_start, _, _) = fetch_all(&cluster, b, "busy").await;
            let (segments, highest, bytes) = log_files(&cluster, b);
            // At least 12 segments were written; at most what reclaim leaves, and the spare, remain.
            let deleted = !check_disk || (highest >= 12 && bytes <= LOG_BYTES_BOUND);
            let broker_done = quiet_start == 3 && busy_start > 0 && deleted;
            done &= broker_done;
            // Only a broker still short of the goal at the deadline fails the test: one that
            // reached it just then (the slow CI run of c8fb47b) is not a failure.
            if !broker_done && Instant::now() >= deadline {
                panic!(
                    "broker {}: quiet start {quiet_start}, busy start {busy_start}, {segments} segment files (highest {highest}), \
                     {bytes} bytes of log (bound {LOG_BYTES_BOUND})",
                    b + 1
                );
            }
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing retained is lost: on every broker, from its start offset on, exactly what was sent.
    for b in 0..3 {
        let (start, end, got) = fetch_all(&cluster, b, "busy").await;
        assert_eq!(end, sent.len() as u64, "broker {}: the end offset", b + 1);
        let want: Vec<(u64, Vec<u8>)> = sent.range(start..).map(|(o, v)| (*o, v.clone())).collect();
        assert!(got == want, "broker {}: {} messages from {start} read back, {} sent from there", b + 1, got.len(), want.len());
    }
}
