//! Opening the configured store (`[store] backend`): the one place that knows both implementations.

use std::sync::Arc;

use super::boundary::{Store, StoreError};
use super::embedded::EmbeddedStore;
use super::postgres::PostgresStore;
use crate::config::{StoreBackend, StoreSettings};

/// An open store of either backend; the gateway's stages take it as [`Store`], and the
/// embedded one's window flusher needs it as itself.
pub enum Backend {
    Embedded(Arc<EmbeddedStore>),
    Postgres(Arc<PostgresStore>),
}

impl Backend {
    /// The store as the stages use it.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Embedded(s) => s.clone(),
            Backend::Postgres(s) => s.clone(),
        }
    }
}

/// Why the store could not be opened; the text names the setting to look at and never
/// holds the PostgreSQL password.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("store.path: {0}")]
    Embedded(StoreError),
    #[error("store.url ({url}): {why}")]
    Postgres { url: String, why: String },
}

/// Open the store the settings name: the embedded file in `store.path`, or the PostgreSQL
/// database at `store.url` (connected, its schema migrated).
pub fn open_backend(settings: &StoreSettings) -> Result<Backend, OpenError> {
    match settings.backend {
        StoreBackend::Embedded => {
            let cache_bytes = usize::try_from(settings.cache_mb).unwrap_or(usize::MAX / (1 << 20)) << 20;
            EmbeddedStore::open_with_cache(&settings.path, cache_bytes)
                .map(|s| Backend::Embedded(Arc::new(s)))
                .map_err(OpenError::Embedded)
        }
        StoreBackend::Postgres => PostgresStore::open(settings)
            .map(|s| Backend::Postgres(Arc::new(s)))
            .map_err(|why| OpenError::Postgres { url: crate::config::redact::hide_url_passwords(&settings.url), why }),
    }
}

/// [`open_backend`], as the stages hold it.
pub fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, OpenError> {
    open_backend(settings).map(|b| b.store())
}
