//! Calls that break the log's rules are refused with `LogError::Invalid`, and write nothing:
//! the log reads, and reopens, exactly as before the call.

use raft_log::{LogEngine, LogError, LogOptions, StoredEntry};

fn options() -> LogOptions {
    LogOptions { segment_bytes: 16 * 1024, max_record_bytes: 4096, ..LogOptions::default() }
}

fn entries(engine: &LogEngine) -> Vec<StoredEntry> {
    engine.group(1).read(0, u64::MAX).unwrap()
}

#[test]
fn rule_breaking_calls_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = LogEngine::open(dir.path(), options()).unwrap();
    let log = engine.group(1);
    for i in 1..=5 {
        log.append([(1, i, format!("entry {i}").as_bytes())], Box::new(|_| {})).unwrap();
    }
    log.purge(2, b"p").unwrap();
    engine.sync().unwrap();
    let before = entries(&engine);
    let records_before = engine.stats().records_appended.load(std::sync::atomic::Ordering::SeqCst);

    let big = vec![7u8; 5000];
    let refused: Vec<(&str, Result<(), LogError>)> = vec![
        ("hole", log.append([(1, 7, b"x".as_slice())], Box::new(|_| {}))),
        ("at the purge point", log.append([(1, 2, b"x".as_slice())], Box::new(|_| {}))),
        ("not consecutive", log.append([(1, 6, b"a".as_slice()), (1, 8, b"b".as_slice())], Box::new(|_| {}))),
        ("over max_record_bytes", log.append([(1, 6, b"ok".as_slice()), (1, 7, big.as_slice())], Box::new(|_| {}))),
        ("vote larger than a segment", log.save_vote(&vec![1u8; 20 * 1024])),
        ("truncate below the purge point", log.truncate_from(2)),
    ];
    for (what, result) in refused {
        assert!(matches!(result, Err(LogError::Invalid(_))), "{what}: {result:?}");
    }
    assert_eq!(
        engine.stats().records_appended.load(std::sync::atomic::Ordering::SeqCst),
        records_before,
        "nothing was encoded for the disk"
    );
    assert_eq!(entries(&engine), before);
    assert_eq!(log.state().vote, None);

    // The log goes on, and reopens with exactly what was accepted.
    log.append([(1, 6, b"six".as_slice())], Box::new(|_| {})).unwrap();
    engine.sync().unwrap();
    drop((log, engine));
    let (engine, _) = LogEngine::open(dir.path(), options()).unwrap();
    let after: Vec<(u64, Vec<u8>)> = entries(&engine).into_iter().map(|e| (e.index, e.payload)).collect();
    let want: Vec<(u64, Vec<u8>)> = (3..=5).map(|i| (i, format!("entry {i}").into_bytes())).chain([(6, b"six".to_vec())]).collect();
    assert_eq!(after, want);
}

/// The documented largest payload (`LogOptions::max_payload_bytes`) is stored and read back
/// whole, also after a reopen; one byte more is refused and writes nothing.
#[test]
fn a_record_of_exactly_the_largest_payload_is_stored_and_one_byte_more_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let max = options().max_payload_bytes() as usize;
    assert_eq!(max, 4096);
    let largest: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    {
        let (engine, _) = LogEngine::open(dir.path(), options()).unwrap();
        let log = engine.group(1);
        log.append([(1, 1, largest.as_slice())], Box::new(|_| {})).unwrap();
        let over = vec![1u8; max + 1];
        assert!(matches!(log.append([(1, 2, over.as_slice())], Box::new(|_| {})), Err(LogError::Invalid(_))));
        engine.sync().unwrap();
        assert_eq!(entries(&engine).iter().map(|e| e.payload.to_vec()).collect::<Vec<_>>(), vec![largest.clone()]);
    }
    let (engine, _) = LogEngine::open(dir.path(), options()).unwrap();
    assert_eq!(entries(&engine).iter().map(|e| e.payload.to_vec()).collect::<Vec<_>>(), vec![largest]);
    // A segment smaller than the record limit bounds the payload instead.
    let small_segments = LogOptions { segment_bytes: 2048, max_record_bytes: 4096, ..LogOptions::default() };
    assert!(small_segments.max_payload_bytes() < 2048);
}
