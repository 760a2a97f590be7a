//! The PostgreSQL store against a real private PostgreSQL (tests/pg): the embedded store's behaviour (idempotent readings, dead letters and replays landing once, the same rollup numbers for the same data, current before the journalled windows are folded, corrections and replicas folding at once counted exactly), frame counters shared by two gateways, migrations from gateways starting together, and start errors that name `store.url` without the password.

mod pg;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use messnetz::aggregates::{Interval, Scope};
use messnetz::config::{StoreBackend, StoreSettings};
use messnetz::model::{DeviceId, QualityFlag, Quantity, Reading};
use messnetz::sources::lorawan::FrameCounter;
use messnetz::store::{
    AdminStore, CommitStore, DeadLetter, EmbeddedStore, PostgresStore, ReadStore, ReplayOutcome, StoreError, WriteBatch,
};

fn settings(url: &str) -> StoreSettings {
    StoreSettings { backend: StoreBackend::Postgres, url: url.to_owned(), pool_size: 4, ..Default::default() }
}

fn ms(t: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t).unwrap()
}

fn reading(device: &str, q: &str, t: i64, value: f64, flag: QualityFlag) -> Reading {
    Reading {
        device: DeviceId::parse(device).unwrap(),
        quantity: Quantity::by_name(q).unwrap(),
        value,
        time: ms(t),
        flag,
        reason: Default::default(),
    }
}

fn letter(reason: &str) -> DeadLetter {
    DeadLetter {
        id: 0,
        received_at: ms(5_000),
        topic: "v3/app/devices/x/up".into(),
        format: "ttn-v3".into(),
        device: Some("x".into()),
        reason: reason.into(),
        // Letters of different reasons are different messages (one message is one letter).
        payload: [&[0, 255, 10, b'{'][..], reason.as_bytes()].concat(),
    }
}

#[test]
fn readings_are_idempotent_ordered_and_last_seen_moves_forward() {
    let cluster = pg::Cluster::start();
    let store = PostgresStore::open(&settings(&cluster.database("idem"))).unwrap();
    let mut batch = WriteBatch::default();
    batch.readings.push(reading("a", "air_temperature", 2000, 2.0, QualityFlag::Good));
    batch.readings.push(reading("a", "air_temperature", 1000, 1.0, QualityFlag::Good));
    batch.readings.push(reading("a", "relative_humidity", 1500, 50.0, QualityFlag::Good));
    batch.readings.push(reading("ab", "air_temperature", 1500, 9.0, QualityFlag::Good));
    // Far apart in time: several monthly partitions, created on demand.
    batch.readings.push(reading("ab", "air_temperature", 1_790_000_000_000, 9.5, QualityFlag::Good));
    let a = DeviceId::parse("a").unwrap();
    batch.seen.push((a.clone(), ms(2000)));
    store.write(&batch).unwrap();
    store.write(&batch).unwrap();
    assert_eq!(store.count_readings().unwrap(), 5, "written twice, stored once");

    let t = Quantity::by_name("air_temperature").unwrap();
    let series = store.readings(&a, t, ms(0), ms(3000), 10).unwrap();
    assert_eq!(series.iter().map(|r| r.value).collect::<Vec<_>>(), vec![1.0, 2.0]);
    assert_eq!(store.readings(&a, t, ms(1000), ms(2000), 10).unwrap().len(), 1, "from <= time < to");
    assert_eq!(store.readings(&a, t, ms(0), ms(3000), 1).unwrap().len(), 1, "limit");
    let latest = store.latest(&a).unwrap();
    assert_eq!(
        latest.iter().map(|r| (r.quantity.name(), r.value)).collect::<Vec<_>>(),
        vec![("air_temperature", 2.0), ("relative_humidity", 50.0)]
    );
    assert_eq!(store.latest(&DeviceId::parse("ab").unwrap()).unwrap()[0].value, 9.5);

    store.write(&WriteBatch { seen: vec![(a.clone(), ms(1000))], ..Default::default() }).unwrap();
    assert_eq!(store.last_seen(&a).unwrap(), Some(ms(2000)), "last seen never goes back");
    assert!(store.health().writable);
}

#[test]
fn dead_letters_get_increasing_ids_and_a_replay_lands_exactly_once() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("letters");
    let store = Arc::new(PostgresStore::open(&settings(&url)).unwrap());
    let batch = WriteBatch { dead_letters: vec![letter("bad 1"), letter("bad 2")], ..Default::default() };
    assert_eq!(store.write(&batch).unwrap(), vec![1, 2]);
    let one = store.dead_letter(1).unwrap().unwrap();
    assert_eq!((one.reason.as_str(), one.payload.as_slice()), ("bad 1", &b"\x00\xff\n{bad 1"[..]));

    // Letter 2 replayed by two gateways at once: stored once, the other finds it gone.
    let other = Arc::new(PostgresStore::open(&settings(&url)).unwrap());
    let produced = || {
        let x = DeviceId::parse("x").unwrap();
        WriteBatch {
            readings: vec![reading("x", "air_temperature", 60_000, 3.5, QualityFlag::Good)],
            seen: vec![(x.clone(), ms(5_000))],
            districts: [(x, "Altstadt".to_owned())].into_iter().collect(),
            ..Default::default()
        }
    };
    let (s1, s2) = (store.clone(), other.clone());
    let (b1, b2) = (produced(), produced());
    let t1 = std::thread::spawn(move || s1.commit_replay(2, b1).unwrap());
    let t2 = std::thread::spawn(move || s2.commit_replay(2, b2).unwrap());
    let mut outcomes = [t1.join().unwrap().as_str(), t2.join().unwrap().as_str()];
    outcomes.sort();
    assert_eq!(outcomes, ["gone", "stored"]);
    assert_eq!(store.dead_letter(2).unwrap(), None);
    let district = Scope::District("Altstadt".into());
    let t = Quantity::by_name("air_temperature").unwrap();
    let days = store.rollups(&district, t, Interval::Day, ms(0), ms(86_400_000)).unwrap();
    assert_eq!(days.iter().map(|(_, w)| w.count).sum::<u64>(), 1, "the replayed reading counted once");

    // Failing again keeps the letter under its id with the new reason.
    let again = WriteBatch { dead_letters: vec![letter("still bad")], ..Default::default() };
    assert_eq!(store.commit_replay(1, again).unwrap(), ReplayOutcome::Failed { reason: "still bad".into() });
    assert_eq!(store.dead_letter(1).unwrap().unwrap().reason, "still bad");
    // Ids are never reused, also after the newest letter was replayed away.
    assert_eq!(store.write(&WriteBatch { dead_letters: vec![letter("new")], ..Default::default() }).unwrap(), vec![3]);
    let (page, next) = store.dead_letters_matching(0, 10, 100, &mut |l| l.reason != "new").unwrap();
    assert_eq!(page.iter().map(|l| l.id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(next, None);
    let (page, next) = store.dead_letters_matching(0, 1, 100, &mut |_| true).unwrap();
    assert_eq!((page.len(), next), (1, Some(1)), "a page of one says where to go on");
}

/// The same batches into both stores: every window and extent the same.
#[test]
fn rollups_have_the_same_numbers_as_the_embedded_store() {
    let cluster = pg::Cluster::start();
    let store = PostgresStore::open(&settings(&cluster.database("rollups"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path()).unwrap();
    let devices = ["r1", "r2", "r3"];
    let mut batches = Vec::new();
    for b in 0..12i64 {
        let mut batch = WriteBatch::default();
        for (i, d) in devices.iter().enumerate() {
            let id = DeviceId::parse(d).unwrap();
            if *d != "r3" {
                batch.districts.insert(id.clone(), if i == 0 { "Altstadt".into() } else { "Hafen".into() });
            }
            for k in 0..7i64 {
                // Values in quarters: exact sums, whatever the order they are added in.
                let t = b * 3_100_000 + k * 420_000 + i as i64 * 1000;
                let v = ((b * 7 + k * 3 + i as i64) % 41) as f64 * 0.25 - 2.0;
                let flag = if k == 3 {
                    QualityFlag::Bad
                } else if k == 5 {
                    QualityFlag::Suspect
                } else {
                    QualityFlag::Good
                };
                batch.readings.push(reading(d, "air_temperature", t, v, flag));
            }
            batch.seen.push((id, ms(b * 3_100_000)));
        }
        batches.push(batch);
    }
    // Redelivered batches, and one corrected reading (another value and flag) later on.
    let mut correction = WriteBatch::default();
    correction.readings.push(reading("r1", "air_temperature", 420_000, 17.25, QualityFlag::Good));
    correction.readings.push(reading("r2", "air_temperature", 3_100_000 + 1000, 3.0, QualityFlag::Bad));
    correction.districts.insert(DeviceId::parse("r1").unwrap(), "Altstadt".into());
    correction.districts.insert(DeviceId::parse("r2").unwrap(), "Hafen".into());
    let order: Vec<&WriteBatch> = batches.iter().chain(batches[3..6].iter()).chain(std::iter::once(&correction)).collect();
    for batch in order {
        store.write(batch).unwrap();
        embedded.write(batch).unwrap();
    }
    embedded.flush_windows().unwrap();
    let t = Quantity::by_name("air_temperature").unwrap();
    let scopes = [
        Scope::Device("r1".into()),
        Scope::Device("r2".into()),
        Scope::Device("r3".into()),
        Scope::District("Altstadt".into()),
        Scope::District("Hafen".into()),
    ];
    let mut compared = 0;
    for scope in &scopes {
        for interval in Interval::ALL {
            let ours = store.rollups(scope, t, interval, ms(0), ms(86_400_000)).unwrap();
            let theirs = embedded.rollups(scope, t, interval, ms(0), ms(86_400_000)).unwrap();
            assert!(!ours.is_empty(), "{scope:?} {interval:?}");
            let show = |w: &[(DateTime<Utc>, messnetz::aggregates::Window)]| {
                // An empty window's `last` is NaN, which equals nothing: compared as absent.
                w.iter()
                    .map(|(s, w)| {
                        (*s, w.count, w.excluded, w.sum, w.min, w.max, (!w.last.is_nan()).then_some(w.last), w.last_time)
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(show(&ours), show(&theirs), "{scope:?} {interval:?}");
            compared += ours.len();
        }
        assert_eq!(store.extent(scope, t).unwrap(), embedded.extent(scope, t).unwrap(), "{scope:?}");
    }
    assert!(compared > 100, "{compared} windows compared");
    assert_eq!(store.extent(&Scope::District("Nowhere".into()), t).unwrap(), None);
}

#[test]
fn a_frame_counter_moved_on_by_another_gateway_refuses_the_whole_batch() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("counters");
    let (a, b) = (PostgresStore::open(&settings(&url)).unwrap(), PostgresStore::open(&settings(&url)).unwrap());
    const ADDR: u32 = 0x260B_1234;
    // Both gateways read "no counter yet" and accept the same frame.
    let (base_a, base_b) = (a.frame_counter(ADDR).unwrap(), b.frame_counter(ADDR).unwrap());
    let mut next = FrameCounter::default();
    next.accept(7, [1, 2, 3, 4], 1000);
    let batch = |base: Option<FrameCounter>| {
        let mut batch = WriteBatch::default();
        batch.readings.push(reading("lora-1", "air_temperature", 60_000, 4.0, QualityFlag::Good));
        batch.frame_counters.insert(ADDR, next.clone());
        batch.frame_counter_bases.insert(ADDR, base);
        batch
    };
    a.write(&batch(base_a)).unwrap();
    match b.write(&batch(base_b)) {
        Err(StoreError::FrameCounterMoved { dev_addr }) => assert_eq!(dev_addr, ADDR),
        other => panic!("the second copy must be refused, got {other:?}"),
    }
    assert!(b.health().writable, "a refused copy is not a failing database");
    assert_eq!(b.frame_counter(ADDR).unwrap(), Some(next.clone()));
    // From the state it now reads, the next frame goes through; from a stale one it does not.
    let mut after = next.clone();
    after.accept(8, [5, 6, 7, 8], 2000);
    let mut ok = WriteBatch::default();
    ok.frame_counters.insert(ADDR, after.clone());
    ok.frame_counter_bases.insert(ADDR, Some(next.clone()));
    b.write(&ok).unwrap();
    let mut stale = WriteBatch::default();
    stale.frame_counters.insert(ADDR, after.clone());
    stale.frame_counter_bases.insert(ADDR, Some(next));
    stale.readings.push(reading("lora-1", "air_temperature", 120_000, 5.0, QualityFlag::Good));
    assert!(matches!(a.write(&stale), Err(StoreError::FrameCounterMoved { .. })));
    assert_eq!(a.count_readings().unwrap(), 1, "nothing of a refused batch is stored");
    assert_eq!(a.frame_counter(ADDR).unwrap(), Some(after));
}

#[test]
fn gateways_starting_together_migrate_once() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("together");
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::open(&settings(&url)).map(|_| ()))
        })
        .collect();
    for s in starts {
        s.join().unwrap().expect("every gateway starts");
    }
    assert_eq!(cluster.psql("together", "SELECT count(*) FROM messnetz_migrations"), "8", "each migration applied once");
    // Started again: nothing to do, the data stays.
    let store = PostgresStore::open(&settings(&url)).unwrap();
    store
        .write(&WriteBatch { readings: vec![reading("m", "air_temperature", 1, 1.0, QualityFlag::Good)], ..Default::default() })
        .unwrap();
    drop(store);
    let store = PostgresStore::open(&settings(&url)).unwrap();
    assert_eq!(store.count_readings().unwrap(), 1);
    // Partitions from last month to two months ahead exist from the start.
    let parts: i64 =
        cluster.psql("together", "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass").parse().unwrap();
    assert!(parts >= 4, "{parts} partitions");
}

#[test]
fn start_errors_name_store_url_and_never_the_password() {
    let mut cluster = pg::Cluster::start();
    cluster.database("exists");
    let wrong_password = cluster.url("exists").replace(pg::PASSWORD, "not-the-password");
    let missing_db = cluster.url("no_such_db");
    for (url, expect) in [(wrong_password, "password authentication failed"), (missing_db, "does not exist")] {
        let error = messnetz::store::open(&settings(&url)).err().expect("refused").to_string();
        assert!(error.starts_with("store.url ("), "{error}");
        assert!(error.contains(expect), "{error}");
        assert!(!error.contains(pg::PASSWORD) && !error.contains("not-the-password"), "{error}");
    }
    let url = cluster.url("exists");
    cluster.stop();
    let error = messnetz::store::open(&settings(&url)).err().expect("refused").to_string();
    assert!(error.starts_with("store.url (") && error.contains("<not shown>"), "{error}");
    assert!(!error.contains(pg::PASSWORD), "{error}");
}

#[test]
fn citizen_sensors_are_kept_and_removed_with_their_data_and_dead_letters_are_deleted() {
    use messnetz::citizens::CitizenSensor;
    use messnetz::store::{AdminStore, BackupError, CitizenStore};
    let cluster = pg::Cluster::start();
    let store = PostgresStore::open(&settings(&cluster.database("citizens"))).unwrap();
    let id = DeviceId::parse("c-0123456789ab").unwrap();
    let sensor: CitizenSensor = serde_json::from_value(serde_json::json!({
        "id": id.as_str(), "name": "Balkon Nord", "lat": 48.138, "lon": 11.576, "district": "Altstadt",
        "token_hash": "00", "approved": false, "registered_at": "2026-11-30T10:00:00Z", "licence": "dl-by-de/2.0"
    }))
    .unwrap();
    store.put_citizen_sensor(&sensor).unwrap();
    let mut approved = sensor.clone();
    approved.approved = true;
    store.put_citizen_sensor(&approved).unwrap();
    assert_eq!(store.citizen_sensors().unwrap().len(), 1, "a second put replaces the registration");
    assert!(store.citizen_sensor(&id).unwrap().unwrap().approved);

    let mut batch = WriteBatch::default();
    batch.readings.push(reading(id.as_str(), "air_temperature", 1000, 4.0, QualityFlag::Good));
    batch.readings.push(reading(id.as_str(), "air_temperature", 2000, 5.0, QualityFlag::Good));
    // A device whose pending windows share the sensor's group row ("g:55").
    batch.readings.push(reading("official-42", "air_temperature", 1000, 3.0, QualityFlag::Good));
    batch.seen.push((id.clone(), ms(2000)));
    batch.dead_letters = vec![letter("a"), letter("b"), letter("c")];
    let ids = store.write(&batch).unwrap();

    let t = Quantity::by_name("air_temperature").unwrap();
    let hours = |device: &str| store.rollups(&Scope::Device(device.into()), t, Interval::Hour, ms(0), ms(3_600_000)).unwrap();
    assert_eq!(hours(id.as_str()).len(), 1);
    let removed = store.remove_citizen_sensor(&id).unwrap().unwrap();
    assert_eq!(removed.readings, 2, "the sensor's readings go with it");
    assert!(hours(id.as_str()).is_empty(), "its windows too, pending or stored");
    store.fold_windows().unwrap();
    assert!(hours(id.as_str()).is_empty(), "and a fold does not bring them back");
    assert_eq!(hours("official-42").len(), 1, "the other device's windows in the same row stay");
    assert_eq!(hours("official-42")[0].1.count, 1);
    assert!(store.citizen_sensor(&id).unwrap().is_none());
    assert!(store.remove_citizen_sensor(&id).unwrap().is_none(), "a second removal finds nothing");
    assert!(store.last_seen(&id).unwrap().is_none());
    assert_eq!(store.count_readings().unwrap(), 1, "other devices' readings stay");

    assert_eq!(store.delete_dead_letters(&[ids[0], ids[2], 999_999]).unwrap(), vec![ids[0], ids[2]]);
    assert!(store.delete_dead_letters(&[ids[0]]).unwrap().is_empty(), "a second delete finds nothing");
    assert!(store.dead_letter(ids[1]).unwrap().is_some());
    let refused = store.backup_to(std::path::Path::new("/nonexistent/backup.redb")).unwrap_err();
    assert!(matches!(refused, BackupError::Unsupported(_)) && refused.to_string().contains("pg_dump"), "{refused}");
}

/// The same message again a minute later: the broker delivering it once more after a
/// replica died between the commit and the acknowledgement.
fn delivered_again(l: &DeadLetter) -> DeadLetter {
    DeadLetter { received_at: l.received_at + chrono::Duration::minutes(1), ..l.clone() }
}

fn letters(store: &impl ReadStore) -> Vec<DeadLetter> {
    store.dead_letters_matching(0, 1000, 1000, &mut |_| true).unwrap().0
}

/// One message is one letter while the letter is kept; replayed or deleted, the message is
/// a new letter when it comes again.
fn one_letter_per_message(store: &(impl CommitStore + ReadStore + AdminStore)) {
    let (a, b) = (letter("not JSON"), letter("unknown device"));
    let write = |l: Vec<DeadLetter>| store.write(&WriteBatch { dead_letters: l, ..Default::default() }).unwrap();
    assert_eq!(write(vec![a.clone(), b.clone()]), vec![1, 2]);
    // Delivered again after the crash, next to a new message, and twice in one batch.
    let c = letter("new");
    let ids = write(vec![delivered_again(&b), c.clone(), delivered_again(&a), delivered_again(&c)]);
    assert_eq!(ids[0], 2);
    assert_eq!(ids[2], 1);
    assert!(ids[1] > 2 && ids[3] == ids[1], "{ids:?}");
    assert_eq!(letters(store).len(), 3);
    assert_eq!(store.dead_letter(1).unwrap().unwrap(), DeadLetter { id: 1, ..a.clone() }, "the first reception is kept");
    // Another topic, format or payload is another message; another reason is not.
    let others = vec![
        DeadLetter { topic: format!("{}/x", a.topic), ..a.clone() },
        DeadLetter { format: "chirpstack-v4".into(), ..a.clone() },
        DeadLetter { payload: [a.payload.as_slice(), b" "].concat(), ..a.clone() },
        DeadLetter { reason: "a changed configuration".into(), ..a.clone() },
    ];
    let c_id = letters(store).last().unwrap().id;
    let ids = write(others);
    assert_eq!(ids[3], 1);
    let mut fresh = ids[..3].to_vec();
    fresh.sort();
    fresh.dedup();
    assert!(fresh.len() == 3 && fresh.iter().all(|id| *id > c_id), "{ids:?}");
    assert_eq!(letters(store).len(), 6);
    // A replay that fails again keeps the letter, which a redelivery still finds.
    let failed = WriteBatch { dead_letters: vec![letter("still bad")], ..Default::default() };
    assert!(matches!(store.commit_replay(1, failed).unwrap(), ReplayOutcome::Failed { .. }));
    assert_eq!(write(vec![delivered_again(&a)]), vec![1]);
    // Replayed: the message is readings now; when it comes again it is a new letter.
    let x = DeviceId::parse("x").unwrap();
    let produced = WriteBatch {
        readings: vec![reading("x", "air_temperature", 60_000, 3.5, QualityFlag::Good)],
        seen: vec![(x.clone(), ms(5_000))],
        districts: [(x, "Altstadt".to_owned())].into_iter().collect(),
        ..Default::default()
    };
    assert!(matches!(store.commit_replay(1, produced).unwrap(), ReplayOutcome::Stored { .. }));
    let replayed_again = write(vec![delivered_again(&a)])[0];
    assert!(replayed_again > 1);
    // Deleted by an operator: the same.
    assert_eq!(store.delete_dead_letters(&[2]).unwrap(), vec![2]);
    let deleted_again = write(vec![delivered_again(&b)])[0];
    assert!(deleted_again > replayed_again);
    assert_eq!(write(vec![delivered_again(&b), delivered_again(&a)]), vec![deleted_again, replayed_again]);
    assert_eq!(letters(store).len(), 6);
}

#[test]
fn a_message_delivered_again_is_one_letter_in_both_stores_until_it_is_replayed_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    one_letter_per_message(&EmbeddedStore::open(dir.path()).unwrap());
    let cluster = pg::Cluster::start();
    let url = cluster.database("again");
    one_letter_per_message(&PostgresStore::open(&settings(&url)).unwrap());
    // PostgreSQL computes the same digest as the gateway (migration 3 fills it in for older letters).
    let same = cluster.psql(
        "again",
        "SELECT count(*) FILTER (WHERE digest = sha256(int8send(octet_length(format)::int8) || convert_to(format, 'UTF8')
                || int8send(octet_length(topic)::int8) || convert_to(topic, 'UTF8') || payload)), count(*) FROM dead_letters",
    );
    assert_eq!(same, "6|6");
}

#[test]
fn two_replicas_taking_the_same_bad_message_at_once_keep_one_letter() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("racing");
    let stores: Vec<Arc<PostgresStore>> = (0..2).map(|_| Arc::new(PostgresStore::open(&settings(&url)).unwrap())).collect();
    // Not shared subscriptions: both replicas get every message; their batches hold the same
    // letters in different orders.
    let messages: Vec<DeadLetter> = (0..50).map(|i| letter(&format!("bad {i}"))).collect();
    for round in 0..5 {
        let threads: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| {
                let store = store.clone();
                let mut batch: Vec<DeadLetter> = messages.iter().map(delivered_again).collect();
                if n == 1 {
                    batch.reverse();
                }
                std::thread::spawn(move || store.write(&WriteBatch { dead_letters: batch, ..Default::default() }).unwrap())
            })
            .collect();
        let mut ids: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        ids[1].reverse();
        assert_eq!(ids[0], ids[1], "round {round}: both replicas name the same letters");
        assert_eq!(cluster.psql("racing", "SELECT count(*) FROM dead_letters"), "50", "round {round}");
    }
}

#[test]
fn letters_stored_twice_before_migration_3_are_indexed_oldest_first() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("older");
    drop(PostgresStore::open(&settings(&url)).unwrap());
    // The schema as version 2 left it, with one message stored twice and another once.
    cluster.psql(
        "older",
        "DROP TABLE district_devices;
         CREATE INDEX readings_by_district ON readings (district, quantity, time) WHERE district IS NOT NULL;
         DROP TABLE rollup_pending; DROP INDEX dead_letters_digest; ALTER TABLE dead_letters DROP COLUMN digest;
         DELETE FROM messnetz_migrations WHERE version >= 3;
         INSERT INTO dead_letters (id, received_at, topic, format, device, reason, payload) VALUES
           (nextval('dead_letter_ids'), now(), 'v3/app/devices/x/up', 'ttn-v3', NULL, 'r', '\\x7b7d'),
           (nextval('dead_letter_ids'), now(), 'v3/app/devices/x/up', 'ttn-v3', NULL, 'r', '\\x7b7d'),
           (nextval('dead_letter_ids'), now(), 'v3/app/devices/y/up', 'ttn-v3', NULL, 'r', '\\x7b7d')",
    );
    let store = PostgresStore::open(&settings(&url)).unwrap();
    assert_eq!(cluster.psql("older", "SELECT max(version) FROM messnetz_migrations"), "8");
    let x = DeadLetter { payload: b"{}".to_vec(), device: None, ..letter("r") };
    let y = DeadLetter { topic: "v3/app/devices/y/up".into(), ..x.clone() };
    let ids = store.write(&WriteBatch { dead_letters: vec![y, x.clone()], ..Default::default() }).unwrap();
    assert_eq!(ids, vec![3, 1]);
    assert_eq!(letters(&store).len(), 3, "letters stored twice before stay until replayed or deleted");
    // Deleting the indexed one frees the message; the younger twin keeps no digest.
    assert_eq!(store.delete_dead_letters(&[1]).unwrap(), vec![1]);
    let ids = store.write(&WriteBatch { dead_letters: vec![delivered_again(&x)], ..Default::default() }).unwrap();
    assert!(ids[0] > 3, "{ids:?}");
    assert_eq!(letters(&store).len(), 3);
}

#[test]
fn district_windows_stored_before_migration_5_are_recomputed_through_the_districts_devices() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("districts");
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path()).unwrap();
    let batches = quarter_batches(&["m1", "m2", "m3"], 4, 0);
    {
        let store = PostgresStore::open(&settings_without_fold(&url)).unwrap();
        for batch in &batches[..3] {
            store.write(batch).unwrap();
            embedded.write(batch).unwrap();
        }
    }
    // The schema as version 4 left it: readings indexed by district, no list of devices.
    cluster.psql(
        "districts",
        "DROP TABLE district_devices;
         CREATE INDEX readings_by_district ON readings (district, quantity, time) WHERE district IS NOT NULL;
         DELETE FROM messnetz_migrations WHERE version >= 5;",
    );
    let store = PostgresStore::open(&settings_without_fold(&url)).unwrap();
    assert_eq!(
        cluster.psql(
            "districts",
            "SELECT string_agg(district || ':' || device, ' ' ORDER BY district, device) FROM district_devices"
        ),
        "Altstadt:m1 Altstadt:m3 Hafen:m2",
        "filled from the readings"
    );
    assert_eq!(cluster.psql("districts", "SELECT count(*) FROM pg_indexes WHERE indexname = 'readings_by_district'"), "0");
    // Corrections in both districts (the first hour's readings of m1 and m2 with new values),
    // then a batch more: each district's windows recomputed from its devices' readings.
    let mut correction = WriteBatch { districts: batches[0].districts.clone(), ..Default::default() };
    correction.readings.push(reading("m1", "air_temperature", 300_000, 12.25, QualityFlag::Good));
    correction.readings.push(reading("m2", "air_temperature", 1000, -7.5, QualityFlag::Good));
    correction.readings.push(reading("m3", "air_temperature", 2000, 3.0, QualityFlag::Bad));
    for batch in [&correction, &batches[3]] {
        store.write(batch).unwrap();
        embedded.write(batch).unwrap();
    }
    embedded.flush_windows().unwrap();
    let scopes = [Scope::District("Altstadt".into()), Scope::District("Hafen".into()), Scope::Device("m2".into())];
    same_windows(&store, &embedded, &scopes, "before the fold");
    store.fold_windows().unwrap();
    same_windows(&store, &embedded, &scopes, "after the fold");
}

#[test]
fn a_devices_ten_minute_windows_come_from_its_readings_and_migration_6_drops_stored_ones() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("tenmin");
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path()).unwrap();
    let store = PostgresStore::open(&settings_without_fold(&url)).unwrap();
    for batch in &quarter_batches(&["t1", "t2", "t3"], 4, 0) {
        store.write(batch).unwrap();
        embedded.write(batch).unwrap();
    }
    embedded.flush_windows().unwrap();
    store.fold_windows().unwrap();
    let count = |sql: &str| cluster.psql("tenmin", sql).parse::<u64>().unwrap();
    assert_eq!(count("SELECT count(*) FROM rollups WHERE interval = 0 AND scope LIKE 'd:%'"), 0, "not stored");
    assert!(count("SELECT count(*) FROM rollups WHERE interval = 0 AND scope LIKE 'z:%'") > 0, "a district's are");
    assert!(count("SELECT count(*) FROM rollups WHERE interval = 1 AND scope LIKE 'd:%'") > 0, "a device's hours are");
    // As version 5 left a database: a device's 10-minute windows stored (one made wrong here,
    // so that an answer from it would show).
    cluster.psql(
        "tenmin",
        "INSERT INTO rollups VALUES ('d:t1', 'air_temperature', 0, to_timestamp(0), 99, 0, 990.0, 1.0, 20.0, 1.0, 0);
         DELETE FROM messnetz_migrations WHERE version >= 6;",
    );
    drop(store);
    let store = PostgresStore::open(&settings_without_fold(&url)).unwrap();
    assert_eq!(count("SELECT count(*) FROM rollups WHERE interval = 0 AND scope LIKE 'd:%'"), 0, "dropped by migration 6");
    let scopes = [Scope::Device("t1".into()), Scope::Device("t2".into()), Scope::District("Altstadt".into())];
    same_windows(&store, &embedded, &scopes, "10-minute windows of devices from their readings");
}

/// A store whose own fold does not run during a test (folded by `fold_windows` only).
fn settings_without_fold(url: &str) -> StoreSettings {
    StoreSettings { window_flush_ms: 600_000, ..settings(url) }
}

/// Windows as compared: an empty window's `last` (NaN) as absent.
type Shown = (DateTime<Utc>, u64, u64, f64, f64, f64, Option<f64>, i64);

fn show(w: &[(DateTime<Utc>, messnetz::aggregates::Window)]) -> Vec<Shown> {
    w.iter()
        .map(|(s, w)| (*s, w.count, w.excluded, w.sum, w.min, w.max, (!w.last.is_nan()).then_some(w.last), w.last_time))
        .collect()
}

/// Every window of `scopes` (air temperature, the first day) of both stores is the same.
fn same_windows(store: &PostgresStore, embedded: &EmbeddedStore, scopes: &[Scope], when: &str) -> usize {
    let t = Quantity::by_name("air_temperature").unwrap();
    let mut compared = 0;
    for scope in scopes {
        for interval in Interval::ALL {
            let ours = store.rollups(scope, t, interval, ms(0), ms(86_400_000)).unwrap();
            let theirs = embedded.rollups(scope, t, interval, ms(0), ms(86_400_000)).unwrap();
            assert!(!ours.is_empty(), "{when}: {scope:?} {interval:?}");
            assert_eq!(show(&ours), show(&theirs), "{when}: {scope:?} {interval:?}");
            compared += ours.len();
        }
        assert_eq!(store.extent(scope, t).unwrap(), embedded.extent(scope, t).unwrap(), "{when}: {scope:?}");
    }
    compared
}

/// The readings and districts of `batch` (all these tests' batches hold).
fn copy(batch: &WriteBatch) -> WriteBatch {
    WriteBatch { readings: batch.readings.clone(), districts: batch.districts.clone(), ..Default::default() }
}

/// Batches of `devices` (district by index: even Altstadt, odd Hafen), values in quarters.
fn quarter_batches(devices: &[&str], n: i64, seed: i64) -> Vec<WriteBatch> {
    (0..n)
        .map(|b| {
            let mut batch = WriteBatch::default();
            for (i, d) in devices.iter().enumerate() {
                let id = DeviceId::parse(d).unwrap();
                batch.districts.insert(id, if i % 2 == 0 { "Altstadt".into() } else { "Hafen".into() });
                for k in 0..5i64 {
                    let t = b * 1_900_000 + k * 300_000 + i as i64 * 1000 + seed;
                    let v = ((b * 5 + k * 3 + i as i64 + seed) % 37) as f64 * 0.25 - 3.0;
                    let flag = if (b + k) % 7 == 3 { QualityFlag::Bad } else { QualityFlag::Good };
                    batch.readings.push(reading(d, "air_temperature", t, v, flag));
                }
            }
            batch
        })
        .collect()
}

#[test]
fn windows_are_current_right_after_a_write_and_the_same_after_the_fold() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("current");
    let store = PostgresStore::open(&settings_without_fold(&url)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path()).unwrap();
    for batch in &quarter_batches(&["c1", "c2", "c3"], 10, 0) {
        store.write(batch).unwrap();
        embedded.write(batch).unwrap();
    }
    embedded.flush_windows().unwrap();
    let scopes = [
        Scope::Device("c1".into()),
        Scope::Device("c2".into()),
        Scope::Device("c3".into()),
        Scope::District("Altstadt".into()),
        Scope::District("Hafen".into()),
    ];
    // Ten batches, each one pending row per device and district it touched.
    assert_eq!(store.count_pending_windows().unwrap(), 50, "journalled, not folded yet");
    let compared = same_windows(&store, &embedded, &scopes, "before the fold");
    assert!(compared > 50, "{compared} windows compared");
    assert_eq!(store.fold_windows().unwrap(), 50);
    assert_eq!(store.count_pending_windows().unwrap(), 0);
    assert_eq!(same_windows(&store, &embedded, &scopes, "after the fold"), compared);
    // A store opened later folds what another left pending, and the numbers stay.
    for batch in &quarter_batches(&["c1", "c2"], 3, 7) {
        store.write(batch).unwrap();
        embedded.write(batch).unwrap();
    }
    embedded.flush_windows().unwrap();
    assert_eq!(store.count_pending_windows().unwrap(), 12);
    let other = PostgresStore::open(&settings_without_fold(&url)).unwrap();
    assert_eq!(other.count_pending_windows().unwrap(), 0, "folded at start");
    same_windows(&other, &embedded, &scopes, "folded at another's start");
}

#[test]
fn a_batch_of_many_devices_journals_their_windows_in_rows_per_group_read_and_folded_like_a_devices_own() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("groups");
    let store = PostgresStore::open(&settings_without_fold(&url)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path()).unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("m{i:03}")).collect();
    let devices: Vec<&str> = names.iter().map(String::as_str).collect();
    let batches = quarter_batches(&devices, 2, 0);
    for batch in &batches {
        store.write(batch).unwrap();
        embedded.write(batch).unwrap();
    }
    embedded.flush_windows().unwrap();
    // Per batch: one row per district, one per group of devices (64 groups), not one per device.
    let rows = |sql: &str| cluster.psql("groups", sql).parse::<u64>().unwrap();
    assert_eq!(rows("SELECT count(*) FROM rollup_pending WHERE scope LIKE 'z:%'"), 2 * 2);
    assert_eq!(rows("SELECT count(*) FROM rollup_pending WHERE scope LIKE 'g:%'"), 2 * 64);
    assert_eq!(rows("SELECT count(*) FROM rollup_pending WHERE scope LIKE 'd:%'"), 0);
    // The group of a device is fixed (FNV-1a of its scope key, modulo 64): every replica and
    // version must find a device's pending windows in the same row.
    assert_eq!(rows("SELECT count(*) FROM rollup_pending WHERE position('d:m000'::bytea in windows) > 0"), 2);
    assert_eq!(rows("SELECT count(*) FROM rollup_pending WHERE scope = 'g:22' AND position('d:m000'::bytea in windows) > 0"), 2);
    let scopes: Vec<Scope> = ["m000", "m007", "m151", "m299"]
        .iter()
        .map(|d| Scope::Device((*d).into()))
        .chain([Scope::District("Altstadt".into()), Scope::District("Hafen".into())])
        .collect();
    let compared = same_windows(&store, &embedded, &scopes, "before the fold");
    assert!(compared > 20, "{compared} windows compared");
    assert_eq!(store.fold_windows().unwrap(), 2 * (64 + 2));
    assert_eq!(store.count_pending_windows().unwrap(), 0);
    assert_eq!(same_windows(&store, &embedded, &scopes, "after the fold"), compared);
}

#[test]
fn a_correction_between_write_and_fold_counts_once() {
    let cluster = pg::Cluster::start();
    let store = PostgresStore::open(&settings_without_fold(&cluster.database("correction"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path()).unwrap();
    let batches = quarter_batches(&["k1", "k2"], 6, 0);
    // The correction: k1's reading of the third batch stored again with another value and
    // flag, and k2's flagged bad, while their windows are still pending.
    let mut correction = WriteBatch { districts: batches[2].districts.clone(), ..Default::default() };
    correction.readings.push(reading("k1", "air_temperature", 2 * 1_900_000 + 300_000, 41.5, QualityFlag::Good));
    correction.readings.push(reading("k2", "air_temperature", 2 * 1_900_000 + 1000, -2.5, QualityFlag::Bad));
    // And a new reading in the same batch, in a window the correction recomputes.
    correction.readings.push(reading("k1", "air_temperature", 2 * 1_900_000 + 301_000, 1.75, QualityFlag::Good));
    for batch in batches[..4].iter().chain(std::iter::once(&correction)).chain(&batches[4..]) {
        store.write(batch).unwrap();
        embedded.write(batch).unwrap();
    }
    embedded.flush_windows().unwrap();
    assert!(store.count_pending_windows().unwrap() > 0, "the batches after the correction are pending");
    let scopes = [
        Scope::Device("k1".into()),
        Scope::Device("k2".into()),
        Scope::District("Altstadt".into()),
        Scope::District("Hafen".into()),
    ];
    same_windows(&store, &embedded, &scopes, "before the fold");
    store.fold_windows().unwrap();
    same_windows(&store, &embedded, &scopes, "after the fold");
    // The corrected hour of k1 counts its readings once: 5 of the batch, 1 new.
    let t = Quantity::by_name("air_temperature").unwrap();
    let hour = store.rollups(&Scope::Device("k1".into()), t, Interval::Hour, ms(3_600_000), ms(7_200_000)).unwrap();
    let from_readings = store.readings(&DeviceId::parse("k1").unwrap(), t, ms(3_600_000), ms(7_200_000), 1000).unwrap();
    assert_eq!(hour.len(), 1);
    assert_eq!(hour[0].1.count + hour[0].1.excluded, from_readings.len() as u64);
}

/// The windows the readings now stored make, computed here (values in quarters: exact).
fn windows_from_readings(store: &PostgresStore, devices: &[&str], interval: Interval) -> Vec<Shown> {
    let t = Quantity::by_name("air_temperature").unwrap();
    let mut readings = Vec::new();
    for d in devices {
        readings.extend(store.readings(&DeviceId::parse(d).unwrap(), t, ms(0), ms(86_400_000), 100_000).unwrap());
    }
    readings.sort_by_key(|r| r.time);
    let mut windows: std::collections::BTreeMap<i64, messnetz::aggregates::Window> = Default::default();
    for r in &readings {
        let ms_ = r.time.timestamp_millis();
        windows.entry(interval.window_start(ms_)).or_insert(messnetz::aggregates::Window::EMPTY).add(r.value, ms_, r.flag);
    }
    show(&windows.into_iter().map(|(s, w)| (ms(s), w)).collect::<Vec<_>>())
}

#[test]
fn two_replicas_writing_correcting_and_folding_at_once_give_the_exact_windows() {
    let cluster = pg::Cluster::start();
    let url = cluster.database("replicas");
    // Both fold every 10 ms on their own, besides the explicit folds below.
    let fast = StoreSettings { window_flush_ms: 10, ..settings(&url) };
    let a = Arc::new(PostgresStore::open(&fast).unwrap());
    let b = Arc::new(PostgresStore::open(&fast).unwrap());
    // Both replicas' devices are in both districts: every batch touches both district windows.
    let (devices_a, devices_b) = (["p1", "p2"], ["p3", "p4"]);
    let batches = || (quarter_batches(&devices_a, 30, 0), quarter_batches(&devices_b, 30, 500));
    let ((batches_a, others_b), (others_a, batches_b)) = (batches(), batches());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = |store: Arc<PostgresStore>, own: Vec<WriteBatch>, others: Vec<WriteBatch>| {
        std::thread::spawn(move || {
            for (i, batch) in own.iter().enumerate() {
                store.write(batch).unwrap();
                if i >= 2 && i % 3 == 0 {
                    // A correction of an earlier batch's readings (another value, the flag
                    // flipped), and the other replica's batch delivered again (which changes
                    // its readings back if that replica corrected them meanwhile).
                    let mut fix = copy(&own[i - 2]);
                    for r in &mut fix.readings {
                        r.value += 0.5;
                        r.flag = if r.flag == QualityFlag::Bad { QualityFlag::Good } else { QualityFlag::Bad };
                    }
                    store.write(&fix).unwrap();
                    store.write(&others[i - 1]).unwrap();
                }
            }
        })
    };
    let folder = {
        let (a, b, done) = (a.clone(), b.clone(), done.clone());
        std::thread::spawn(move || {
            let mut folded = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                folded += a.fold_windows().unwrap() + b.fold_windows().unwrap();
            }
            folded
        })
    };
    let wa = writer(a.clone(), batches_a, others_b);
    let wb = writer(b.clone(), batches_b, others_a);
    wa.join().unwrap();
    wb.join().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    folder.join().unwrap();
    let all = ["p1", "p2", "p3", "p4"];
    let check = |when: &str| {
        let t = Quantity::by_name("air_temperature").unwrap();
        let mut compared = 0;
        for (scope, devices) in [
            (Scope::Device("p1".into()), &all[0..1]),
            (Scope::Device("p4".into()), &all[3..4]),
            (Scope::District("Altstadt".into()), &["p1", "p3"][..]),
            (Scope::District("Hafen".into()), &["p2", "p4"][..]),
        ] {
            for interval in Interval::ALL {
                let expected = windows_from_readings(&a, devices, interval);
                for store in [&a, &b] {
                    let got = store.rollups(&scope, t, interval, ms(0), ms(86_400_000)).unwrap();
                    assert_eq!(show(&got), expected, "{when}: {scope:?} {interval:?}");
                }
                compared += expected.len();
            }
        }
        compared
    };
    assert_eq!(a.count_readings().unwrap(), 60 * 2 * 5);
    let compared = check("as answered");
    assert!(compared > 100, "{compared} windows compared");
    a.fold_windows().unwrap();
    assert_eq!(a.count_pending_windows().unwrap(), 0);
    assert_eq!(check("all folded"), compared);
}
