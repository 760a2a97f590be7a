//! Bearer tokens for the admin API: argon2 verification, a cache of verified tokens, and a
//! per-client limit on failed attempts.
//!
//! Tokens are configured only as argon2 hashes. Verifying one costs tens of milliseconds by
//! design, so it runs on the blocking pool, at most [`MAX_CONCURRENT_VERIFICATIONS`] at a
//! time (a flood of wrong tokens can't take every core), and only after the client's
//! failure count allows it. A token that verified once is remembered by its BLAKE2b-256
//! digest: later requests skip argon2. That is safe because tokens are long random strings
//! (`messnetz admin hash-token` refuses short ones): a digest of 128+ random bits can't be
//! reversed, and only tokens that already proved valid are kept, at most one per configured
//! token. The token itself is never stored, logged or echoed.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::http::{header, HeaderMap};
use blake2::{digest::consts::U32, Blake2b, Digest};

use super::error::AdminError;
use crate::config::AdminSettings;

/// Argon2 verifications running at once; more requests wait for a turn.
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;
/// Shortest token `hash-token` accepts: 24 characters of a random token are ~128 bits or more.
pub const MIN_TOKEN_CHARS: usize = 24;
/// Longest token looked at; longer ones are refused without hashing.
const MAX_TOKEN_BYTES: usize = 512;
/// Client addresses whose failures are tracked; past this, older entries are dropped first
/// and, if all are recent, new clients share one bucket (bounded memory under a wide attack).
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// What a token may see and change.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// Every department (`owners = ["*"]`).
    All,
    /// Only devices whose `owner` is one of these.
    Owners(Vec<String>),
}

/// The authenticated operator of a request.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The token's configured name: the audit log's "who".
    pub name: String,
    pub scope: Scope,
    /// The client's address, for the audit log.
    pub client: String,
}

impl Operator {
    /// May this operator see and change devices of `owner`?
    pub fn sees(&self, owner: &str) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Owners(owners) => owners.iter().any(|o| o == owner),
        }
    }

    pub fn sees_all(&self) -> bool {
        self.scope == Scope::All
    }
}

struct Token {
    name: String,
    hash: String,
    scope: Scope,
}

type Digest32 = [u8; 32];

/// The configured tokens, the cache of verified ones and the failure counts.
pub struct Tokens {
    tokens: Arc<Vec<Token>>,
    /// Digest of a token that verified → its index in `tokens`.
    verified: RwLock<HashMap<Digest32, usize>>,
    permits: tokio::sync::Semaphore,
    failures: Failures,
}

impl Tokens {
    pub fn new(settings: &AdminSettings) -> Self {
        let tokens = settings
            .tokens
            .iter()
            .map(|t| Token {
                name: t.name.clone(),
                hash: t.hash.expose().to_owned(),
                scope: if t.owners.iter().any(|o| o == "*") { Scope::All } else { Scope::Owners(t.owners.clone()) },
            })
            .collect();
        Self {
            tokens: Arc::new(tokens),
            verified: RwLock::new(HashMap::new()),
            permits: tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
            failures: Failures::new(settings.max_failures_per_minute),
        }
    }

    /// Who is asking: checks the client's failure count, then the `Authorization: Bearer` token.
    pub async fn authenticate(&self, client: Option<IpAddr>, headers: &HeaderMap) -> Result<Operator, AdminError> {
        let client_text = client.map(|c| c.to_string()).unwrap_or_else(|| "unknown".to_owned());
        if let Some(wait) = self.failures.blocked(client) {
            return Err(AdminError::TooManyAttempts { retry_after_s: wait.as_secs().max(1) });
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            // No token at all is a client that forgot it, not a guess: not counted.
            return Err(AdminError::Unauthorized("a bearer token is required (Authorization: Bearer <token>)".into()));
        };
        match self.verify(token).await {
            Some(i) => {
                let t = &self.tokens[i];
                Ok(Operator { name: t.name.clone(), scope: t.scope.clone(), client: client_text })
            }
            None => {
                self.failures.record(client);
                // The token is not logged, only that a wrong one came from this client.
                tracing::warn!(client = %client_text, "admin API: wrong token");
                Err(AdminError::Unauthorized("the token is not valid".into()))
            }
        }
    }

    /// The index of the configured token `token` is, if any.
    async fn verify(&self, token: &str) -> Option<usize> {
        if token.len() > MAX_TOKEN_BYTES || self.tokens.is_empty() {
            return None;
        }
        let digest: Digest32 = Blake2b::<U32>::digest(token.as_bytes()).into();
        if let Some(&i) = self.verified.read().unwrap_or_else(|p| p.into_inner()).get(&digest) {
            return Some(i);
        }
        let _permit = self.permits.acquire().await.ok()?;
        let tokens = self.tokens.clone();
        let candidate = token.to_owned();
        let found = tokio::task::spawn_blocking(move || tokens.iter().position(|t| verify_one(&t.hash, &candidate)))
            .await
            .ok()
            .flatten()?;
        self.verified.write().unwrap_or_else(|p| p.into_inner()).insert(digest, found);
        Some(found)
    }
}

/// Does `token` match the PHC-form argon2 `hash`? The hash's own parameters are used.
pub fn verify_one(hash: &str, token: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(token.as_bytes(), &h).is_ok())
}

/// The argon2id hash (PHC form, the crate's default parameters: 19 MiB, 2 passes) of a token.
pub fn hash_token(token: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(format!(
            "a token must be at least {MIN_TOKEN_CHARS} characters of random text; `messnetz admin hash-token --generate` makes one"
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!("a token must be at most {MAX_TOKEN_BYTES} bytes"));
    }
    let salt = SaltString::generate(&mut rand_core::OsRng);
    Argon2::default().hash_password(token.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// A new random token: 32 bytes from the OS, base64url (43 characters).
pub fn generate_token() -> String {
    use base64::Engine;
    use rand_core::RngCore;
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Failed attempts per client in the last minute.
struct Failures {
    per_minute: usize,
    by_client: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl Failures {
    fn new(per_minute: u32) -> Self {
        Self { per_minute: per_minute.max(1) as usize, by_client: Mutex::new(HashMap::new()) }
    }

    /// The key a client is counted under: its address, an IPv6 client its /64 (one host
    /// usually holds a whole /64); unknown clients (no socket address) share one.
    fn key(client: Option<IpAddr>) -> IpAddr {
        match client {
            Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
            Some(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            Some(ip) => ip,
            None => IpAddr::from([0u8, 0, 0, 0]),
        }
    }

    /// How long the client must wait, if it used up its failures.
    fn blocked(&self, client: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        let times = map.get_mut(&Self::key(client))?;
        while times.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            times.pop_front();
        }
        if times.len() >= self.per_minute {
            times.front().map(|oldest| WINDOW.saturating_sub(now.duration_since(*oldest)))
        } else {
            None
        }
    }

    fn record(&self, client: Option<IpAddr>) {
        let now = Instant::now();
        let mut map = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = Self::key(client);
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED_CLIENTS {
            map.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if map.len() >= MAX_TRACKED_CLIENTS {
                key = IpAddr::from([255u8, 255, 255, 255]);
            }
        }
        let times = map.entry(key).or_default();
        times.push_back(now);
        while times.len() > self.per_minute {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::{Algorithm, Params, Version};

    /// Cheap parameters: these tests are about the logic, not the cost.
    fn cheap_hash(token: &str) -> String {
        let salt = SaltString::generate(&mut rand_core::OsRng);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8, 1, 1, None).unwrap())
            .hash_password(token.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn settings(limit: u32) -> AdminSettings {
        let token = |name: &str, secret: &str, owners: &[&str]| crate::config::AdminToken {
            name: name.into(),
            hash: serde_json::from_value(serde_json::json!(cheap_hash(secret))).unwrap(),
            owners: owners.iter().map(|o| o.to_string()).collect(),
        };
        AdminSettings {
            tokens: vec![
                token("ops", "token-of-ops-0123456789abcdef", &["Umweltamt"]),
                token("root", "token-of-root-0123456789abcdef", &["*"]),
            ],
            audit_log: None,
            max_failures_per_minute: limit,
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    #[tokio::test]
    async fn tokens_map_to_their_scope_and_wrong_ones_are_counted() {
        let tokens = Tokens::new(&settings(2));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let op = tokens.authenticate(Some(ip), &bearer("token-of-ops-0123456789abcdef")).await.unwrap();
        assert_eq!((op.name.as_str(), op.sees("Umweltamt"), op.sees("Gartenamt")), ("ops", true, false));
        // Cached the second time; same answer.
        assert_eq!(tokens.authenticate(Some(ip), &bearer("token-of-ops-0123456789abcdef")).await.unwrap().name, "ops");
        assert!(tokens.authenticate(Some(ip), &bearer("token-of-root-0123456789abcdef")).await.unwrap().sees_all());
        assert!(matches!(tokens.authenticate(Some(ip), &HeaderMap::new()).await, Err(AdminError::Unauthorized(_))));
        for _ in 0..2 {
            assert!(matches!(tokens.authenticate(Some(ip), &bearer("guess")).await, Err(AdminError::Unauthorized(_))));
        }
        // Limit reached: even the right token waits, without being checked.
        assert!(matches!(
            tokens.authenticate(Some(ip), &bearer("token-of-ops-0123456789abcdef")).await,
            Err(AdminError::TooManyAttempts { .. })
        ));
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(tokens.authenticate(Some(other), &bearer("token-of-ops-0123456789abcdef")).await.is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(Failures::key(Some(a)), Failures::key(Some(b)));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(Failures::key(Some(mapped)), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hash_token_refuses_short_tokens_and_its_hashes_verify() {
        assert!(hash_token("short").is_err());
        let token = generate_token();
        assert_eq!(token.len(), 43);
        // Default parameters are slow in unoptimised builds; verify once.
        let hash = hash_token(&token).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_one(&hash, &token) && !verify_one(&hash, "something-else-entirely-000"));
    }
}
