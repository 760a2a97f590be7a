//! The live registry: the devices and profiles in use, swapped whole when their files change.
//!
//! Readers take a snapshot (`devices()`, `profiles()`) and use it for a whole batch or
//! request, so a reload never mixes old and new. A reload that fails leaves the working
//! registry in place: a broken file never replaces a working one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{CitizenSettings, Settings};
use crate::devices::{Device, DeviceRegistry};
use crate::profiles::ProfileSet;

/// Devices and profiles as currently loaded.
pub struct Registry {
    /// The devices file's devices and the registered citizen sensors, merged.
    devices: ArcSwap<DeviceRegistry>,
    profiles: ArcSwap<ProfileSet>,
    /// The devices file's devices alone, and the citizen sensors with whether they count in
    /// district aggregates: a change to either is merged anew (the file wins on a clash).
    parts: std::sync::Mutex<(Arc<DeviceRegistry>, Vec<Device>, Arc<CitizenSettings>)>,
}

impl Registry {
    pub fn new(profiles: ProfileSet, devices: DeviceRegistry) -> Self {
        let devices = Arc::new(devices);
        Self {
            devices: ArcSwap::new(devices.clone()),
            profiles: ArcSwap::from_pointee(profiles),
            parts: std::sync::Mutex::new((devices, Vec::new(), Default::default())),
        }
    }

    /// Replace the citizen sensors (after a registration, approval or deletion).
    pub fn set_citizens(&self, citizens: Vec<Device>, settings: Arc<CitizenSettings>) {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.1 = citizens;
        parts.2 = settings;
        self.devices.store(Arc::new(parts.0.with_extra(&parts.1, parts.2.clone())));
    }

    /// Swap in new file devices, merged with the citizen sensors.
    fn store_devices(&self, devices: DeviceRegistry) {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.0 = Arc::new(devices);
        self.devices.store(Arc::new(parts.0.with_extra(&parts.1, parts.2.clone())));
    }

    pub fn devices(&self) -> Arc<DeviceRegistry> {
        self.devices.load_full()
    }

    pub fn profiles(&self) -> Arc<ProfileSet> {
        self.profiles.load_full()
    }

    /// Replace both at once (they are checked against each other before).
    pub fn replace(&self, profiles: ProfileSet, devices: DeviceRegistry) {
        self.profiles.store(Arc::new(profiles));
        self.store_devices(devices);
    }

    /// Replace the devices only (checked against the profiles in use before): a device
    /// changed through the admin API.
    pub fn replace_devices(&self, devices: DeviceRegistry) {
        self.store_devices(devices);
    }
}

/// Load profiles and devices and check them against each other. Every problem is listed.
pub fn load(settings: &Settings) -> Result<(ProfileSet, DeviceRegistry), Vec<String>> {
    let profiles = ProfileSet::load_dir(&settings.profiles.dir)
        .map_err(|errors| errors.iter().map(|e| format!("profiles.dir: {e}")).collect::<Vec<_>>())?;
    let devices = DeviceRegistry::load(&settings.devices.file, |id| profiles.get(id).is_some())
        .map_err(|errors| errors.iter().map(|e| format!("devices.file: {e}")).collect::<Vec<_>>())?
        .with_quality(Arc::new(settings.quality.clone()));
    Ok((profiles, devices))
}

/// What the files looked like at the last load: names, sizes and modification times.
fn fingerprint(devices_file: &Path, profiles_dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let stat = |p: PathBuf| {
        let meta = std::fs::metadata(&p).ok();
        let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
        let modified = meta.and_then(|m| m.modified().ok());
        (p, len, modified)
    };
    let mut out = vec![stat(devices_file.to_owned())];
    if let Ok(entries) = std::fs::read_dir(profiles_dir) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        out.extend(files.into_iter().map(stat));
    }
    out
}

/// Poll the devices file and the profiles directory every `interval`; reload on a change.
pub async fn watch(registry: Arc<Registry>, settings: Settings, interval: Duration, cancel: CancellationToken) {
    let mut last = fingerprint(&settings.devices.file, &settings.profiles.dir);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = fingerprint(&settings.devices.file, &settings.profiles.dir);
        if now == last {
            continue;
        }
        last = now;
        let s = settings.clone();
        match tokio::task::spawn_blocking(move || load(&s)).await {
            Ok(Ok((profiles, devices))) => {
                info!(profiles = profiles.len(), devices = devices.len(), "devices and profiles reloaded");
                registry.replace(profiles, devices);
            }
            Ok(Err(errors)) => {
                for e in &errors {
                    error!(problem = %e, "reload refused; the previous devices and profiles stay in use");
                }
            }
            Err(e) => error!(error = %e, "reload task failed"),
        }
    }
}
