//! The schema, as numbered migrations applied at start: each once, in order, under an advisory lock, so replicas that start at the same moment are safe.
//!
//! A migration and the row recording it commit in one transaction; the lock (a session-level
//! advisory lock held by one connection) makes a second gateway wait until the first is done,
//! then find nothing left to do. A database migrated by a newer messnetz (a version this one
//! does not know) is refused rather than written with an old idea of the schema.

use deadpool_postgres::Object;

/// Advisory lock key of the migrations ("messnetz" in ASCII, less one byte).
pub(super) const LOCK: i64 = 0x6d65_7373_6e65_747a >> 8;

/// (version, what it does, SQL). Append only: a released migration never changes.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "readings partitioned by month, rollup windows, last-seen, dead letters, InfluxDB outbox, frame counters",
        r#"
CREATE TABLE readings (
    device   text             NOT NULL,
    quantity text             NOT NULL,
    time     timestamptz      NOT NULL,
    value    double precision NOT NULL,
    flag     smallint         NOT NULL,
    reason   text             NOT NULL DEFAULT '',
    -- The district the reading counts towards (open devices only), as when it was stored.
    district text,
    PRIMARY KEY (device, quantity, time)
) PARTITION BY RANGE (time);
-- District windows recomputed after a corrected reading, and Grafana's district panels.
CREATE INDEX readings_by_district ON readings (district, quantity, time) WHERE district IS NOT NULL;

-- Device ('d:<device>') and district ('z:<district>') windows; interval 0 = 10 min, 1 = 1 h, 2 = 1 d.
CREATE TABLE rollups (
    scope     text             NOT NULL,
    quantity  text             NOT NULL,
    interval  smallint         NOT NULL,
    start     timestamptz      NOT NULL,
    count     bigint           NOT NULL,
    excluded  bigint           NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    last      double precision NOT NULL,
    last_time bigint           NOT NULL,
    PRIMARY KEY (scope, quantity, interval, start)
);

-- District windows for dashboards (Grafana's PostgreSQL data source).
CREATE VIEW district_windows AS
SELECT substr(scope, 3) AS district, quantity,
       CASE interval WHEN 0 THEN '10m' WHEN 1 THEN '1h' ELSE '1d' END AS interval,
       start AS time, count, excluded,
       CASE WHEN count > 0 THEN sum / count END AS mean,
       CASE WHEN count > 0 THEN min END AS min,
       CASE WHEN count > 0 THEN max END AS max
FROM rollups WHERE scope LIKE 'z:%';

CREATE TABLE last_seen (
    device text        PRIMARY KEY,
    at     timestamptz NOT NULL
);

-- Ids are never reused, also after a replay removed the newest letter.
CREATE SEQUENCE dead_letter_ids;
CREATE TABLE dead_letters (
    id          bigint      PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text        NOT NULL,
    format      text        NOT NULL,
    device      text,
    reason      text        NOT NULL,
    payload     bytea       NOT NULL
);

CREATE TABLE outbox (
    id   bigserial PRIMARY KEY,
    line bytea     NOT NULL
);

-- recent: 16 bytes per frame (FCnt, MIC, time in ms; little-endian), oldest first.
CREATE TABLE frame_counters (
    dev_addr bigint PRIMARY KEY,
    last     bigint NOT NULL,
    recent   bytea  NOT NULL
);
"#,
    ),
    (
        2,
        "registered citizen sensors",
        r#"
CREATE TABLE citizen_sensors (
    id           text  PRIMARY KEY,
    registration text NOT NULL
);
"#,
    ),
    (
        3,
        "dead letters kept once per message",
        r#"
-- SHA-256 over the format, the topic (each after its length, 8 bytes big-endian) and the
-- payload: DeadLetter::digest. A message delivered again while its letter is kept finds it
-- here instead of becoming a second letter; a replayed or deleted letter frees its digest.
ALTER TABLE dead_letters ADD COLUMN digest bytea;
UPDATE dead_letters SET digest = sha256(
    int8send(octet_length(format)::int8) || convert_to(format, 'UTF8')
    || int8send(octet_length(topic)::int8) || convert_to(topic, 'UTF8') || payload);
-- Letters stored twice before this version: the oldest keeps the digest, the others stay
-- (without one) until they are replayed or deleted.
UPDATE dead_letters AS d SET digest = NULL
WHERE EXISTS (SELECT 1 FROM dead_letters AS e WHERE e.digest = d.digest AND e.id < d.id);
CREATE UNIQUE INDEX dead_letters_digest ON dead_letters (digest);
"#,
    ),
    (
        4,
        "rollup windows journalled per batch and folded in by the replicas",
        r#"
-- One row per scope ('d:<device>' / 'z:<district>') a batch touched: its new readings'
-- windows, folded, in the encoding of rollups.rs (leading version byte). Folded into
-- `rollups` every store.window_flush_ms and deleted; answers merge them meanwhile.
CREATE TABLE rollup_pending (
    id      bigserial PRIMARY KEY,
    scope   text      NOT NULL,
    windows bytea     NOT NULL
);
CREATE INDEX rollup_pending_by_scope ON rollup_pending (scope);
"#,
    ),
    (
        5,
        "district windows recomputed through the district's devices; no index of every reading by district",
        r#"
-- The devices whose readings count towards a district (readings.district), kept by each
-- batch. A district window is recomputed from these devices' series through the primary
-- key; the index over every reading by district cost about a third of each insert.
-- Filling it reads the readings once.
CREATE TABLE district_devices (
    district text NOT NULL,
    device   text NOT NULL,
    PRIMARY KEY (district, device)
);
INSERT INTO district_devices SELECT DISTINCT district, device FROM readings WHERE district IS NOT NULL;
DROP INDEX readings_by_district;
"#,
    ),
    (
        6,
        "a device's 10-minute windows computed from its readings, not stored",
        r#"
-- Such a window mostly holds one reading (sensors send every 5 to 20 minutes): stored, it
-- wrote every reading twice. Answers fold them from the readings; hour and day windows,
-- and every district window, stay stored.
DELETE FROM rollups WHERE interval = 0 AND scope LIKE 'd:%';
"#,
    ),
    (
        7,
        "room in the window rows' pages for their updates",
        r#"
-- A fold updates window rows in place of inserting them; with room on the page the new
-- version stays there and the primary key is not touched (a heap-only update). New pages
-- keep a fifth free; existing ones as they are rewritten.
ALTER TABLE rollups SET (fillfactor = 80);
"#,
    ),
    (
        8,
        "pending windows of a batch's devices in rows per group, stored uncompressed",
        r#"
-- A batch journals its devices' windows in rows of 64 groups ('g:<n>'), each some kilobytes,
-- beyond the size PostgreSQL keeps in the row: stored out of line as they are, not
-- compressed first (the batch's commit would pay for compressing every row). Rows
-- journalled before keep their scope and encoding and are read alike.
ALTER TABLE rollup_pending ALTER COLUMN windows SET STORAGE EXTERNAL;
"#,
    ),
];

/// Bring the schema up to date; returns the versions applied now (empty when it was).
pub(super) async fn run(client: &mut Object) -> Result<Vec<i32>, String> {
    let e = |e: tokio_postgres::Error| super::connect::describe(&e);
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK]).await.map_err(e)?;
    let result = apply(client).await;
    // Released whatever happened (the connection may be reused by the pool).
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK]).await.map_err(e);
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply(client: &mut Object) -> Result<Vec<i32>, String> {
    let e = |e: tokio_postgres::Error| super::connect::describe(&e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS messnetz_migrations (
                version    integer     PRIMARY KEY,
                what       text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(e)?;
    let newest: Option<i32> = client.query_one("SELECT max(version) FROM messnetz_migrations", &[]).await.map_err(e)?.get(0);
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if let Some(newest) = newest.filter(|n| *n > known) {
        return Err(format!(
            "the database's schema is version {newest}, newer than this messnetz knows ({known}): upgrade messnetz"
        ));
    }
    let mut applied = Vec::new();
    for (version, what, sql) in MIGRATIONS.iter().filter(|m| Some(m.0) > newest) {
        let tx = client.transaction().await.map_err(e)?;
        tx.batch_execute(sql).await.map_err(|err| format!("migration {version} ({what}): {}", e(err)))?;
        tx.execute("INSERT INTO messnetz_migrations (version, what) VALUES ($1, $2)", &[version, what]).await.map_err(e)?;
        tx.commit().await.map_err(e)?;
        tracing::info!(version, what, "PostgreSQL schema migrated");
        applied.push(*version);
    }
    Ok(applied)
}
