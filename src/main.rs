//! The `messnetz` command line: parse arguments, load config, start tracing, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use messnetz::config::{self, Settings};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "messnetz", version, about = "Gateway for a city's weather and climate sensor network")]
struct Cli {
    /// TOML configuration file (defaults apply without one; MESSNETZ__SECTION__KEY overrides).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate configuration, devices and profiles without starting; non-zero exit on any problem.
    Check,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Sensor profile tools.
    Profiles {
        #[command(subcommand)]
        command: ProfilesCommand,
    },
    /// Rollup maintenance (run while the gateway is stopped: the store is single-process).
    Rollups {
        #[command(subcommand)]
        command: RollupsCommand,
    },
    /// Dead letters: list, show and replay them (run while the gateway is stopped: the store is
    /// single-process; while it runs, use the admin API).
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
    /// Operator API helpers.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Decode one payload with a profile and print the readings as JSON.
    Decode {
        /// Profile id, e.g. dragino-lht65.
        #[arg(long)]
        profile: String,
        /// LoRaWAN FPort of the uplink.
        #[arg(long)]
        fport: Option<u8>,
        /// The payload in hex.
        #[arg(long)]
        hex: String,
    },
    /// Serve JavaScript codec calls on stdin/stdout for a running gateway (started by it).
    #[command(hide = true)]
    CodecWorker,
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// List dead letters, oldest first: id, reception time, device, format, reason.
    List {
        /// Only this device's (as the device registry identifies the message now).
        #[arg(long)]
        device: Option<String>,
        /// Only those whose reason contains this text (any case).
        #[arg(long)]
        reason: Option<String>,
        /// Start after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Most letters to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print one dead letter as JSON, with its message.
    Show { id: u64 },
    /// Replay dead letters through the ingest path: the given ids, or all that match
    /// --device / --reason, or --all. A message that fails again stays, with the new reason.
    Replay {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        ids: Vec<u64>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Read a token from stdin and print its argon2 hash for `[[admin.tokens]] hash`; with
    /// --generate, make a new random token and print both.
    HashToken {
        #[arg(long)]
        generate: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the documented default configuration.
    Default,
}

#[derive(Subcommand)]
enum RollupsCommand {
    /// Recompute the rollups of a time range (widened to whole UTC days) from the stored readings.
    Rebuild {
        /// Start (RFC 3339); default: the beginning of time.
        #[arg(long)]
        from: Option<String>,
        /// End, exclusive (RFC 3339); default: the end of time.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum ProfilesCommand {
    /// List the ids of the loaded profiles.
    List,
    /// Check every profile's examples (or one profile's).
    Test { id: Option<String> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::CodecWorker => ExitCode::from(messnetz::profiles::js::worker::serve()),
        Command::Config { command: ConfigCommand::Default } => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::Run => match load(cli.config) {
            Ok(settings) => run(settings),
            Err(code) => code,
        },
        Command::Check => match load(cli.config) {
            Ok(settings) => check(&settings),
            Err(code) => code,
        },
        Command::Profiles { command } => match load(cli.config) {
            Ok(settings) => profiles(&settings, command),
            Err(code) => code,
        },
        Command::Rollups { command: RollupsCommand::Rebuild { from, to } } => match load(cli.config) {
            Ok(settings) => rebuild_rollups(&settings, from.as_deref(), to.as_deref()),
            Err(code) => code,
        },
        Command::Admin { command: AdminCommand::HashToken { generate } } => hash_token(generate),
        Command::DeadLetters { command } => match load(cli.config) {
            Ok(settings) => dead_letters(&settings, command),
            Err(code) => code,
        },
        Command::Decode { profile, fport, hex } => match load(cli.config) {
            Ok(settings) => decode(&settings, &profile, fport, &hex),
            Err(code) => code,
        },
    }
}

fn load(file: Option<PathBuf>) -> Result<Settings, ExitCode> {
    config::load(file.as_deref()).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

fn run(settings: Settings) -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // rustls needs a process-wide crypto provider for MQTT over TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_signal(cancel.clone()));
        messnetz::app::run(settings, cancel).await
    });
    // Blocking store calls still running after the shutdown deadline are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    cancel.cancel();
}

fn check(settings: &Settings) -> ExitCode {
    match messnetz::registry::load(settings) {
        Ok((profiles, devices)) => {
            let mut failed = false;
            // Raw LoRaWAN session keys: the same checks as at start (file permissions, syntax).
            if let Err(errors) =
                messnetz::sources::lorawan_keys::SessionKeys::load(settings.lorawan.keys_file.as_deref(), std::env::vars())
            {
                for e in errors {
                    eprintln!("{e}");
                }
                failed = true;
            }
            for id in profiles.ids() {
                if let Some(p) = profiles.get(id) {
                    for m in p.check_examples() {
                        eprintln!("profile {id}: example {}: {}", m.example, m.message);
                        failed = true;
                    }
                }
            }
            if failed {
                return ExitCode::from(1);
            }
            println!("ok: configuration, {} profile(s) and {} device(s) are valid", profiles.len(), devices.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}

fn profiles(settings: &Settings, command: ProfilesCommand) -> ExitCode {
    let set = match messnetz::profiles::ProfileSet::load_dir(&settings.profiles.dir) {
        Ok(set) => set,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    match command {
        ProfilesCommand::List => {
            for id in set.ids() {
                println!("{id}");
            }
            ExitCode::SUCCESS
        }
        ProfilesCommand::Test { id } => {
            let ids: Vec<&str> = match &id {
                Some(id) if set.get(id).is_none() => {
                    eprintln!("no profile {id:?}; `messnetz profiles list` shows the ids");
                    return ExitCode::from(1);
                }
                Some(id) => vec![id.as_str()],
                None => set.ids(),
            };
            let mut failures = 0;
            for id in ids {
                let Some(profile) = set.get(id) else { continue };
                let mismatches = profile.check_examples();
                if mismatches.is_empty() {
                    println!("ok   {id}");
                } else {
                    println!("FAIL {id}");
                    for m in &mismatches {
                        println!("     example {}: {}", m.example, m.message);
                    }
                    failures += 1;
                }
            }
            if failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn decode(settings: &Settings, profile: &str, fport: Option<u8>, hex: &str) -> ExitCode {
    let set = match messnetz::profiles::ProfileSet::load_dir(&settings.profiles.dir) {
        Ok(set) => set,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    let Some(p) = set.get(profile) else {
        eprintln!("no profile {profile:?}; `messnetz profiles list` shows the ids");
        return ExitCode::from(1);
    };
    let bytes = match messnetz::profiles::parse_hex(hex) {
        Ok(bytes) => bytes,
        Err(why) => {
            eprintln!("--hex: {why}");
            return ExitCode::from(2);
        }
    };
    match p.decode_bytes(fport, &bytes) {
        Ok(decoded) => {
            let readings: Vec<_> = decoded
                .values
                .iter()
                .map(|v| serde_json::json!({"quantity": v.quantity.name(), "value": v.value, "unit": v.quantity.unit()}))
                .collect();
            let out = serde_json::json!({"readings": readings, "warnings": decoded.warnings});
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot decode: {e}");
            ExitCode::from(1)
        }
    }
}

fn rebuild_rollups(settings: &Settings, from: Option<&str>, to: Option<&str>) -> ExitCode {
    use chrono::{DateTime, Utc};
    let parse = |name: &str, v: Option<&str>, default: DateTime<Utc>| match v {
        None => Ok(default),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("--{name}: expected an RFC 3339 time such as 2026-11-25T00:00:00Z ({e})")),
    };
    let range = parse("from", from, DateTime::<Utc>::MIN_UTC).and_then(|f| Ok((f, parse("to", to, DateTime::<Utc>::MAX_UTC)?)));
    let (from, to) = match range {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let devices = match messnetz::registry::load(settings) {
        Ok((_, devices)) => devices,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    let store = match messnetz::store::EmbeddedStore::open(&settings.store.path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("store.path: {e} (is the gateway still running? stop it first)");
            return ExitCode::from(1);
        }
    };
    let district_of =
        |id: &str| devices.get(id).filter(|d| d.visibility == messnetz::devices::Visibility::Open).map(|d| d.district.clone());
    match store.rebuild_rollups(from, to, &district_of) {
        Ok(summary) => {
            println!(
                "rebuilt the rollups from {} readings ({} device windows, {} district windows)",
                summary.readings, summary.device_windows, summary.district_windows
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rebuild failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_token(generate: bool) -> ExitCode {
    use messnetz::api::admin::auth;
    let token = if generate {
        auth::generate_token()
    } else {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            eprintln!("cannot read the token from stdin: {e}");
            return ExitCode::from(2);
        }
        text.trim_end_matches(['\r', '\n']).to_owned()
    };
    match auth::hash_token(&token) {
        Ok(hash) if generate => {
            println!("token: {token}");
            println!("hash:  {hash}");
            eprintln!("Give the token to its operator (it is not stored anywhere); put the hash in [[admin.tokens]].");
            ExitCode::SUCCESS
        }
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn dead_letters(settings: &Settings, command: DeadLettersCommand) -> ExitCode {
    use messnetz::store::{DeadLetterFilter, EmbeddedStore, ReplayOutcome};
    use std::sync::Arc;
    let (profiles, devices) = match messnetz::registry::load(settings) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    let store = match EmbeddedStore::open(&settings.store.path) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("store.path: {e} (is the gateway still running? stop it first, or use the admin API)");
            return ExitCode::from(1);
        }
    };
    let registry = Arc::new(messnetz::registry::Registry::new(profiles, devices));
    let devices = registry.devices();
    let matching = |filter: &DeadLetterFilter, after: u64, limit: usize| {
        store.dead_letters_matching(after, limit, usize::MAX, &mut |l| filter.matches(l, l.device_in(&devices).as_deref()))
    };
    match command {
        DeadLettersCommand::List { device, reason, after, limit } => {
            match matching(&DeadLetterFilter { device, reason }, after, limit) {
                Ok((letters, next)) => {
                    for l in &letters {
                        let device =
                            l.device_in(&devices).map(|d| d.id.to_string()).or(l.device.clone()).unwrap_or_else(|| "-".into());
                        println!(
                            "{}\t{}\t{}\t{}\t{}",
                            l.id,
                            l.received_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                            device,
                            l.format,
                            l.reason
                        );
                    }
                    if let Some(next) = next {
                        eprintln!("more: --after {next}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot read the dead letters: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        DeadLettersCommand::Show { id } => match store.dead_letter(id) {
            Ok(Some(l)) => {
                let mut v = serde_json::to_value(&l).unwrap_or_default();
                v["payload_text"] = serde_json::json!(std::str::from_utf8(&l.payload).ok());
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(None) => {
                eprintln!("no dead letter {id}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("cannot read the dead letters: {e}");
                ExitCode::FAILURE
            }
        },
        DeadLettersCommand::Replay { device, reason, all, ids } => {
            let filter = DeadLetterFilter { device, reason };
            if ids.is_empty() && filter.is_empty() && !all {
                eprintln!("say which: dead letter ids, --device, --reason, or --all");
                return ExitCode::from(2);
            }
            let letters = if ids.is_empty() {
                match matching(&filter, 0, usize::MAX) {
                    Ok((letters, _)) => letters.into_iter().map(Ok).collect(),
                    Err(e) => {
                        eprintln!("cannot read the dead letters: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                let mut found = Vec::new();
                for id in ids {
                    match store.dead_letter(id) {
                        Ok(Some(l)) => found.push(Ok(l)),
                        Ok(None) => found.push(Err(id)),
                        Err(e) => {
                            eprintln!("cannot read dead letter {id}: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                found
            };
            let lorawan =
                match messnetz::sources::lorawan_keys::SessionKeys::load(settings.lorawan.keys_file.as_deref(), std::env::vars())
                {
                    Ok(k) => Arc::new(k),
                    Err(errors) => {
                        for e in errors {
                            eprintln!("{e}");
                        }
                        return ExitCode::from(1);
                    }
                };
            let metrics = Arc::new(messnetz::metrics::Metrics::default());
            // Readings replayed here are spooled for InfluxDB like any others; the gateway sends them.
            let spool = settings
                .influxdb
                .as_ref()
                .filter(|i| i.enabled)
                .map(|i| Arc::new(messnetz::store::Spool::new(i, metrics.clone(), store.outbox_len().unwrap_or(0))));
            let ingest = messnetz::ingest::Ingest::offline(store.clone(), registry.clone(), metrics, spool, lorawan);
            let audit = match messnetz::audit::AuditLog::open(&settings.admin.audit_log_path(&settings.store)) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("admin.audit_log: {e}");
                    return ExitCode::from(1);
                }
            };
            let mut failed = 0;
            for letter in letters {
                let letter = match letter {
                    Ok(l) => l,
                    Err(id) => {
                        println!("{id}\tgone\tno such dead letter (replayed already?)");
                        failed += 1;
                        continue;
                    }
                };
                let outcome = match letter.message_format(&settings.mqtt.subscriptions) {
                    Err(why) => Ok(ReplayOutcome::Refused { why }),
                    Ok(format) => ingest.replay(&letter, format),
                };
                let outcome = match outcome {
                    Ok(o) => o,
                    Err(e) => {
                        eprintln!("replay of {} failed in the store: {e}", letter.id);
                        return ExitCode::FAILURE;
                    }
                };
                let text = match &outcome {
                    ReplayOutcome::Stored { device, readings } => format!("{device}: {readings} readings"),
                    ReplayOutcome::Failed { reason } => reason.clone(),
                    ReplayOutcome::Refused { why } => why.clone(),
                    ReplayOutcome::Gone => "no such dead letter (replayed already?)".into(),
                };
                println!("{}\t{}\t{text}", letter.id, outcome.as_str());
                if !matches!(outcome, ReplayOutcome::Stored { .. }) {
                    failed += 1;
                }
                let entry = messnetz::audit::AuditEntry::new("cli", "local", "dead_letter.replay", &letter.id.to_string());
                let entry = if matches!(outcome, ReplayOutcome::Stored { .. }) { entry } else { entry.outcome(outcome.as_str()) };
                audit.record_or_log(entry.detail(serde_json::json!({ "outcome": outcome.as_str(), "detail": text })));
            }
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
