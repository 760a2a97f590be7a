//! `messnetz run` (the default): the gateway on an async runtime until SIGINT or SIGTERM.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// Run the gateway until a shutdown signal; exit 1 if it stops with an error.
pub fn gateway(settings: Settings) -> ExitCode {
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
        crate::app::run(settings, cancel).await
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

/// Cancel on Ctrl-C or (on Unix) SIGTERM.
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
