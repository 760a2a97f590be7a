//! Connecting to PostgreSQL: the URL and TLS settings, the connection pool, and error texts that keep the password out.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;

use crate::config::{PgSslMode, StoreSettings};

/// The pool of connections to the database at `settings.url`. Nothing is connected yet.
pub(super) fn pool(settings: &StoreSettings) -> Result<Pool, String> {
    // tokio-postgres' parse errors never quote the URL, so its password stays unprinted.
    let mut config: tokio_postgres::Config =
        settings.url.parse().map_err(|e| format!("not a valid PostgreSQL URL: {}", describe(&e)))?;
    // `prefer` (the default) leaves an `sslmode` written into the URL as it is.
    match settings.sslmode {
        PgSslMode::Prefer => {}
        PgSslMode::Disable => {
            config.ssl_mode(SslMode::Disable);
        }
        PgSslMode::Require => {
            config.ssl_mode(SslMode::Require);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name("messnetz");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    // A server that vanished without closing the connection is noticed within a minute.
    config.keepalives_idle(Duration::from_secs(30));
    let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match config.get_ssl_mode() {
        SslMode::Disable => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        _ => Manager::from_config(config, tls(settings)?, manager_config),
    };
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(15)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| e.to_string())
}

/// rustls with ring (as for MQTT), verifying the server against `ca_file` or the system's roots.
fn tls(settings: &StoreSettings) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("store.ca_file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("store.ca_file {}: no certificate in it", path.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("store.ca_file {}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// An error with its causes: tokio-postgres says only "db error" at the top and keeps the
/// server's message (wrong password, no such database) in the source.
pub(super) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A pool error as text (a connection that could not be made, a timeout).
pub(super) fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        deadpool_postgres::PoolError::Timeout(t) => format!("no connection to PostgreSQL within the time limit ({t:?})"),
        other => describe(other),
    }
}
