//! Tests of `table.rs` (kept in their own file so the module reads as one screenful of code).
use super::*;
use proptest::prelude::*;

fn key(n: u64) -> u128 {
    // Spread small numbers over all shards and buckets like digests would.
    let mixed = u128::from(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) << 64
        | u128::from(n.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    mixed & !0xFF
}

fn slot(n: u64, status: Status, at: i64) -> Slot {
    Slot::new(
        key(n),
        &Record {
            kind: if n.is_multiple_of(2) {
                Kind::Subject
            } else {
                Kind::Credential
            },
            status,
            reason: (status != Status::Active).then_some(Reason::Stolen),
            before: (n.is_multiple_of(3)).then_some(at),
            at,
        },
    )
}

#[test]
fn a_slot_is_24_bytes_and_round_trips() {
    assert_eq!(std::mem::size_of::<Slot>(), SLOT_BYTES);
    let s = slot(3, Status::Suspended, 77);
    let mut bytes = Vec::new();
    s.encode(&mut bytes);
    let array: [u8; SLOT_BYTES] = bytes.try_into().unwrap();
    assert_eq!(Slot::decode(&array), Some(s));
    let record = s.record().unwrap();
    assert_eq!(record.status, Status::Suspended);
    assert_eq!(record.reason, Some(Reason::Stolen));
    assert_eq!(record.before, Some(77));
    assert_eq!(record.kind, Kind::Credential);
}

proptest! {
    /// Whatever the mix of small and large update groups (overlay inserts and merges), the
    /// table equals a plain map that applies the same rule one update at a time.
    #[test]
    fn the_table_equals_a_map_applying_the_rule(
        groups in proptest::collection::vec(
            proptest::collection::vec((0u64..3000, 0u8..3, 0i64..50), 0..3000), 1..6)
    ) {
        let table = Table::default();
        let mut model: std::collections::HashMap<u128, Slot> = Default::default();
        for group in &groups {
            let updates: Vec<Slot> = group
                .iter()
                .map(|&(n, s, at)| slot(n, Status::ALL[s as usize], at))
                .collect();
            table.apply(&updates);
            for u in &updates {
                let old = model.get(&u.key()).copied();
                if old.is_none_or(|o| o.at <= u.at) {
                    model.insert(u.key(), *u);
                }
            }
        }
        for n in 0..3000 {
            prop_assert_eq!(table.get(key(n)), model.get(&key(n)).copied());
        }
        prop_assert_eq!(table.total(), model.len());
        prop_assert_eq!(table.adverse(), model.values().filter(|s| s.is_adverse()).count());
        let captured: usize = table.capture().iter().map(|c| c.sorted().len()).sum();
        prop_assert_eq!(captured, model.len());
    }
}

#[test]
fn shards_out_of_order_are_refused() {
    let mut shards = vec![Vec::new(); SHARDS];
    let mut slots: Vec<Slot> = (0..5000)
        .map(|n| slot(n, Status::Revoked, 1))
        .filter(|s| shard_of(s.key()) == 7)
        .collect();
    slots.sort_by_key(Slot::key);
    slots.swap(0, 1);
    shards[7] = slots;
    assert_eq!(
        Table::from_shards(shards).err().map(|e| e.reason),
        Some("entries out of order")
    );
}
