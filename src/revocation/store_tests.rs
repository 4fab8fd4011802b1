//! Tests of `store.rs` (kept in their own file so the module reads as one screenful of code).
use super::*;
use crate::revocation::{Kind, Reason, Status};

fn entry(n: usize, at: i64) -> Entry {
    Entry {
        kind: if n.is_multiple_of(2) {
            Kind::Subject
        } else {
            Kind::Credential
        },
        id: format!("id-{n}"),
        status: if n.is_multiple_of(5) {
            Status::Active
        } else {
            Status::Revoked
        },
        reason: (!n.is_multiple_of(5)).then_some(Reason::Stolen),
        before: (n.is_multiple_of(4)).then_some(at),
        at,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[test]
fn background_snapshots_fold_the_log_and_a_restart_sees_the_same_list() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = RevocationStore::open(dir.path(), 4096).unwrap();
    // A second opener is refused while the first holds the directory.
    assert!(matches!(
        RevocationStore::open(dir.path(), 4096),
        Err(LogError::Locked { .. })
    ));
    let rt = runtime();
    for batch in 0..60 {
        let entries: Vec<Entry> = (0..100)
            .map(|i| entry((batch * 37 + i) % 3000, batch as i64))
            .collect();
        rt.block_on(store.commit(entries)).unwrap();
    }
    let expected: Vec<_> = (0..3000)
        .map(|n| {
            let e = entry(n, 0);
            store
                .list()
                .lookup(e.kind, crate::id::Id::parse(&e.id).unwrap())
        })
        .collect();
    let (adverse, records) = (store.list().len(), store.list().records());
    store.close();
    assert!(store.stats().snapshots_ok.load(Ordering::Relaxed) >= 2);
    assert_eq!(store.stats().snapshots_failed.load(Ordering::Relaxed), 0);
    drop(store);
    let revocations = revocation_dir(dir.path());
    assert!(snapshot::snapshot_path(&revocations).exists());
    assert!(
        segments(&revocations).unwrap().len() <= 2,
        "covered segments are removed"
    );
    let (reopened, _) = RevocationStore::open(dir.path(), 4096).unwrap();
    for (n, want) in expected.iter().enumerate() {
        let e = entry(n, 0);
        assert_eq!(
            reopened
                .list()
                .lookup(e.kind, crate::id::Id::parse(&e.id).unwrap()),
            *want,
            "id-{n}"
        );
    }
    assert_eq!(reopened.list().len(), adverse);
    assert_eq!(reopened.list().records(), records);
}

#[test]
fn records_written_unsynced_are_applied_at_once_and_kept_across_segments_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A small snapshot threshold: the unsynced records cross several sealed segments.
    let (store, _) = RevocationStore::open(dir.path(), 4096).unwrap();
    let rt = runtime();
    for batch in 0..40 {
        let records: Vec<RecordBuilder> = (0..10)
            .map(|i| {
                let mut builder = RecordBuilder::default();
                for j in 0..5 {
                    builder.push(&entry(batch * 50 + i * 5 + j, 7));
                }
                builder
            })
            .collect();
        rt.block_on(store.write_records(records)).unwrap();
        // Applied before any sync.
        let last = entry(batch * 50 + 49, 7);
        assert!(
            store
                .list()
                .lookup(last.kind, crate::id::Id::parse(&last.id).unwrap())
                .is_some()
        );
        if batch % 7 == 0 {
            rt.block_on(store.sync()).unwrap();
        }
    }
    rt.block_on(store.sync()).unwrap();
    assert!(store.stats().snapshots_ok.load(Ordering::Relaxed) >= 1);
    let records = store.list().records();
    assert_eq!(records, 2000);
    store.close();
    drop(store);
    let (reopened, _) = RevocationStore::open(dir.path(), 4096).unwrap();
    assert_eq!(reopened.list().records(), records);
}

#[test]
fn the_single_log_of_earlier_builds_is_read_as_the_oldest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let revocations = revocation_dir(dir.path());
    std::fs::create_dir_all(&revocations).unwrap();
    let (mut log, _, _) = Log::open(&revocations.join("log")).unwrap();
    log.append(&super::super::log::encode_record(&[entry(1, 5)]))
        .unwrap();
    drop(log);
    let (store, recovery) = RevocationStore::open(dir.path(), 4096).unwrap();
    assert_eq!(recovery.entries, 1);
    let e = entry(1, 5);
    assert!(
        store
            .list()
            .lookup(e.kind, crate::id::Id::parse(&e.id).unwrap())
            .is_some()
    );
}

#[test]
fn a_damaged_snapshot_refuses_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = RevocationStore::open(dir.path(), 4096).unwrap();
    let rt = runtime();
    for batch in 0..20 {
        let entries: Vec<Entry> = (0..100).map(|i| entry(batch * 100 + i, 1)).collect();
        rt.block_on(store.commit(entries)).unwrap();
    }
    drop(store);
    let path = snapshot::snapshot_path(&revocation_dir(dir.path()));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let error = RevocationStore::open(dir.path(), 4096)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("corrupt") && error.contains("checksum"),
        "{error}"
    );
}
