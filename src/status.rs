//! Readiness of the message input, shared by the sources (which set it) and the health routes (which report it).

use chrono::{DateTime, Utc};

/// Whether the message input takes messages, for `/readyz`: the broker connection is up and
/// every subscription confirmed, or the embedded listener is bound.
#[derive(Debug)]
pub struct InputStatus {
    state: std::sync::Mutex<InputState>,
}

/// A snapshot of [`InputStatus`].
#[derive(Debug, Clone)]
pub struct InputState {
    pub ready: bool,
    /// What is wrong while not ready.
    pub problem: String,
    /// Since when it is not ready (or ready).
    pub since: DateTime<Utc>,
}

impl Default for InputStatus {
    fn default() -> Self {
        let state = InputState { ready: false, problem: "not connected yet".into(), since: Utc::now() };
        Self { state: std::sync::Mutex::new(state) }
    }
}

impl InputStatus {
    pub fn get(&self) -> InputState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Taking messages.
    pub fn ready(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !s.ready {
            *s = InputState { ready: true, problem: String::new(), since: Utc::now() };
        }
    }

    /// Not taking messages, and why; `since` stays at the start of the outage.
    pub fn not_ready(&self, problem: String) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let since = if s.ready { Utc::now() } else { s.since };
        *s = InputState { ready: false, problem, since };
    }
}
