//! Read access for a dashboard role (`store.dashboard_role`): the tables and the view Grafana's PostgreSQL data source shows, granted at every start, nothing else.

use deadpool_postgres::Object;

use super::connect;

/// What a dashboard may read. Dead letters (raw payloads, also of internal devices), citizens'
/// registrations (locations before approval, token hashes), frame counters and the spool are
/// left out on purpose.
pub(super) const DASHBOARD_TABLES: [&str; 4] = ["readings", "rollups", "district_windows", "last_seen"];

/// Grant SELECT on [`DASHBOARD_TABLES`] to `role`; the error names the setting.
pub(super) async fn grant(client: &Object, role: &str) -> Result<(), String> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(|e| connect::describe(&e))?
        .is_some();
    if !exists {
        return Err(format!(
            "store.dashboard_role: the role \"{role}\" does not exist in the database; create it first \
             (deploy/postgres/initdb/10-dashboard-role.sh) or remove the setting"
        ));
    }
    // Granted already (every start after the first): nothing to change.
    let granted: i64 = client
        .query_one(
            "SELECT count(*) FROM unnest($2::text[]) AS t(name) WHERE has_table_privilege($1, t.name, 'SELECT')",
            &[&role, &DASHBOARD_TABLES.as_slice()],
        )
        .await
        .map_err(|e| format!("store.dashboard_role: {}", connect::describe(&e)))?
        .get(0);
    if granted == DASHBOARD_TABLES.len() as i64 {
        return Ok(());
    }
    // The name is checked at load (letters, digits, _) and quoted here as well. Under the
    // migrations' lock: replicas granting at the same moment would otherwise update the same
    // catalogue rows at once, and PostgreSQL refuses the second ("tuple concurrently updated").
    let quoted = format!("\"{}\"", role.replace('"', "\"\""));
    let sql = format!(
        "BEGIN; SELECT pg_advisory_xact_lock({}); GRANT SELECT ON {} TO {quoted}; COMMIT;",
        super::migrations::LOCK,
        DASHBOARD_TABLES.join(", ")
    );
    client.batch_execute(&sql).await.map_err(|e| format!("store.dashboard_role: {}", connect::describe(&e)))
}
