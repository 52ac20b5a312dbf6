//! The `healthdns` command: parse arguments, set up logging, run a subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use healthdns::config::Config;
use healthdns::dns::server::Listeners;
use healthdns::service::Service;

#[derive(Parser)]
#[command(
    version,
    about = "Authoritative DNS that answers only with healthy addresses"
)]
struct Cli {
    /// Log lines as text (the default) or as JSON objects, one per line; RUST_LOG filters.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS in the foreground until SIGTERM or SIGINT.
    Serve {
        /// The config file; zone paths in it are relative to its folder.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Probe and log what would be answered, but answer every configured address
        /// (the same as `[server] dry_run = true`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the config and every zone file; print every error and exit 1 if there is one.
    Check {
        /// The config file; zone paths in it are relative to its folder.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Force an address of a pool down or up for maintenance, or back to its probes (auto),
    /// through the running server's API; the answers change at once.
    Force {
        pool: String,
        address: std::net::IpAddr,
        #[arg(value_parser = ["down", "up", "auto"])]
        state: String,
        /// The server's API address (`[api] listen`).
        #[arg(long, default_value = "http://127.0.0.1:8053")]
        api: String,
        /// A file holding the API's bearer token (`[api] token_file`), if it has one.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Re-read the config and every zone file in the running server (through its API; SIGHUP
    /// does the same). If anything is invalid, the server keeps its old config and this
    /// prints every error and exits 1.
    Reload {
        /// The server's API address (`[api] listen`).
        #[arg(long, default_value = "http://127.0.0.1:8053")]
        api: String,
        /// A file holding the API's bearer token (`[api] token_file`), if it has one.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show every pool and address as the running server sees it (through its HTTP API).
    Status {
        /// The server's API address (`[api] listen`).
        #[arg(long, default_value = "http://127.0.0.1:8053")]
        api: String,
        /// Print one Nagios plugin line and exit 0 (OK), 1 (WARNING: a pool is degraded),
        /// 2 (CRITICAL: a pool has no address up) or 3 (UNKNOWN: the API cannot be read).
        #[arg(long)]
        nagios: bool,
    },
    /// Write each zone with every pool address as if healthy (no probing), as
    /// <DIR>/<zone>.zone, to bootstrap a secondary. The serial is recorded in the state file,
    /// so the server never publishes it with other content; refused while a server runs.
    Export {
        /// The config file; zone paths and the state file are relative to its folder.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// The folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,hickory_server=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        Command::Serve { config, dry_run } => run_serve(&config, dry_run),
        Command::Check { config } => return run_check(&config),
        Command::Export { config, out } => run_export(&config, &out),
        Command::Status { api, nagios } => return run_status(&api, nagios),
        Command::Force {
            pool,
            address,
            state,
            api,
            token_file,
        } => run_force(&api, &pool, address, &state, token_file.as_deref()),
        Command::Reload { api, token_file } => run_reload(&api, token_file.as_deref()),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "healthdns",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("healthdns: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `request` with an HTTP client for the server's API (5 s timeout) on a small runtime.
fn with_api_client<F, T>(request: impl FnOnce(reqwest::Client) -> F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls = healthdns::health::probe::tls_config().map_err(anyhow::Error::msg)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    runtime.block_on(request(client))
}

/// Reads `/status` from the API at `base`.
fn fetch_status(base: &str) -> anyhow::Result<healthdns::publish::StatusReport> {
    let url = format!("{}/status", base.trim_end_matches('/'));
    with_api_client(|client| async move {
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !response.status().is_success() {
            anyhow::bail!("{url} answered {}", response.status());
        }
        let body = response.bytes().await?;
        serde_json::from_slice(&body)
            .with_context(|| format!("{url} did not answer a status report"))
    })
}

/// POSTs `body` (JSON) to `path` of the API at `base`, with the bearer token from
/// `token_file` if given; the response body if it succeeded.
fn post_to_api(
    base: &str,
    path: &str,
    body: String,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let token = token_file
        .map(|path| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_string())
                .with_context(|| format!("cannot read {}", path.display()))
        })
        .transpose()?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    with_api_client(|client| async move {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
            if let Ok(refused) = serde_json::from_str::<serde_json::Value>(&text) {
                let errors: Vec<&str> = refused["errors"]
                    .as_array()
                    .map(|errors| errors.iter().filter_map(|e| e.as_str()).collect())
                    .unwrap_or_default();
                anyhow::bail!(
                    "refused, the old config is still served:\n{}",
                    errors.join("\n")
                );
            }
        }
        if !status.is_success() {
            anyhow::bail!("{url} answered {status}: {}", text.trim());
        }
        Ok(text)
    })
}

/// `healthdns force`: POST the override to the API.
fn run_force(
    base: &str,
    pool: &str,
    address: std::net::IpAddr,
    state: &str,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let path = format!("/pools/{pool}/addresses/{address}/force");
    let body = serde_json::json!({ "state": state }).to_string();
    print!("{}", post_to_api(base, &path, body, token_file)?);
    Ok(())
}

/// `healthdns reload`: POST /reload and print what changed.
fn run_reload(base: &str, token_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text = post_to_api(base, "/reload", String::new(), token_file)?;
    let report: healthdns::reload::ReloadReport = serde_json::from_str(&text)
        .context("the API's reload report is not what this version expects")?;
    println!(
        "reloaded in {} ms: probes {} added, {} removed, {} kept; {} answers changed",
        report.took_ms,
        report.probes_added,
        report.probes_removed,
        report.probes_kept,
        report.answers_changed
    );
    for zone in &report.zones {
        println!(
            "zone {} serial {} ({:?})",
            zone.origin, zone.serial, zone.change
        );
    }
    for key in &report.restart_needed {
        println!("{key} changed: takes effect only after a restart");
    }
    Ok(())
}

/// `healthdns status`: a table, or one Nagios line with its exit code.
fn run_status(base: &str, nagios: bool) -> ExitCode {
    use healthdns::health::verdict::State;
    let report = match fetch_status(base) {
        Ok(report) => report,
        Err(error) => {
            if nagios {
                println!("HEALTHDNS UNKNOWN - {error:#}");
                return ExitCode::from(3);
            }
            eprintln!("healthdns: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if nagios {
        let mut critical = Vec::new();
        let mut warning = Vec::new();
        for pool in &report.pools {
            let addresses: Vec<_> = pool.addresses.iter().filter(|a| !a.canary).collect();
            let up = addresses.iter().filter(|a| a.state == State::Up).count();
            if up == 0 && !addresses.is_empty() {
                critical.push(format!("{} 0/{} up", pool.name, addresses.len()));
            } else if up < addresses.len() {
                warning.push(format!("{} {up}/{} up", pool.name, addresses.len()));
            }
        }
        for problem in &report.write_errors {
            warning.push(format!("{} not written", problem.file.display()));
        }
        let (code, word, detail) = if !critical.is_empty() {
            (2, "CRITICAL", [critical, warning].concat().join(", "))
        } else if !warning.is_empty() {
            (1, "WARNING", warning.join(", "))
        } else {
            (
                0,
                "OK",
                format!("{} pools, every address up", report.pools.len()),
            )
        };
        println!("HEALTHDNS {word} - {detail}");
        return ExitCode::from(code);
    }
    for problem in &report.write_errors {
        println!(
            "not written ({} failures, retried): {}: {}",
            problem.failures,
            problem.file.display(),
            problem.error
        );
    }
    if let Some(cluster) = &report.cluster {
        let members: Vec<String> = cluster
            .members
            .iter()
            .map(|member| {
                format!(
                    "{} ({})",
                    member.node,
                    if member.live { "live" } else { "dead" }
                )
            })
            .collect();
        println!(
            "cluster node {}{}; peers: {}",
            cluster.node,
            if cluster.isolated { " (isolated)" } else { "" },
            if members.is_empty() {
                "none".to_string()
            } else {
                members.join(", ")
            }
        );
    }
    println!(
        "{:<16} {:<40} {:<8} {:>10}  SINCE",
        "POOL", "ADDRESS", "STATE", "LATENCY"
    );
    for pool in &report.pools {
        for address in &pool.addresses {
            let latency = address.latency_ms();
            let mut text = address.address.to_string();
            if address.canary {
                text.push_str(" (canary)");
            }
            if let Some(forced) = address.forced {
                text.push_str(&format!(" (forced {forced})"));
            }
            if let Some(votes) = &address.votes {
                if !votes.down.is_empty() {
                    text.push_str(&format!(
                        " (down: {} of {})",
                        votes.down.join(","),
                        votes.voters
                    ));
                }
            }
            println!(
                "{:<16} {:<40} {:<8} {:>10}  {}",
                pool.name,
                text,
                address.state,
                latency.map_or_else(|| "-".to_string(), |ms| format!("{ms:.1} ms")),
                address.since.map_or_else(
                    || "-".to_string(),
                    |since| humantime::format_rfc3339_seconds(since).to_string()
                ),
            );
        }
    }
    ExitCode::SUCCESS
}

/// Prints every problem in the config and its zones; exit 0 only if there is none.
fn run_check(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    match healthdns::zone::load_zones(&config) {
        Ok(zones) => {
            for zone in &zones {
                println!(
                    "{}: zone {} serial {}, {} records",
                    config.path.display(),
                    zone.origin,
                    zone.soa_serial(),
                    zone.records.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            ExitCode::FAILURE
        }
    }
}

fn load(
    path: &std::path::Path,
) -> anyhow::Result<(Config, Vec<healthdns::zone::zonefile::ZoneData>)> {
    let config = Config::load(path)?;
    let zones = healthdns::zone::load_zones(&config).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("zone errors:\n{}", text.join("\n"))
    })?;
    Ok((config, zones))
}

fn run_export(path: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let (config, zones) = load(path)?;
    let state_file = &config.server.state_file;
    let mut state = healthdns::zone::serial::State::load(state_file)?;
    // The exported serial is recorded in the state, so the server never publishes it later
    // with other content; that needs the state to be the server's final word.
    if state.reserved() {
        anyhow::bail!(
            "{}: a server is running with this state file, or stopped without recording its \
             last serials; export would issue a serial it may publish with other content. \
             Stop the server (or start and stop it once), or read its snapshot files instead",
            state_file.display()
        );
    }
    let answers = healthdns::health::configured_answers(&config.pools);
    let snapshot = healthdns::zone::first_snapshot(&zones, &answers, &state, &config.zones);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for zone in &zones {
        let served = snapshot
            .zone(&healthdns::zone::snapshot::name_key(&zone.origin))
            .expect("every loaded zone is served");
        let origin = zone.origin.to_string();
        let stem = match origin.trim_end_matches('.') {
            "" => "root",
            stem => stem,
        };
        let file = out.join(format!("{stem}.zone"));
        let body = healthdns::zone::render::body(served);
        let text = healthdns::zone::render::with_body(
            served,
            &body,
            "static records and every pool address as if healthy (healthdns export)",
        );
        healthdns::atomic::write_atomically(&file, text.as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
        state.record(
            served,
            healthdns::zone::serial::content_digest(served),
            false,
        );
        println!(
            "{}: zone {} serial {}",
            file.display(),
            zone.origin,
            served.serial()
        );
    }
    state.save(state_file)?;
    Ok(())
}

fn run_serve(path: &std::path::Path, dry_run: bool) -> anyhow::Result<()> {
    let (mut config, zones) = load(path)?;
    config.server.dry_run |= dry_run;
    for zone in &zones {
        tracing::info!(zone = %zone.origin, serial = zone.soa_serial(), records = zone.records.len(), "loaded zone");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        // Installed before the slow start, so an early SIGHUP waits instead of killing.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP handler")?;
        // Bind first, so a taken port or a missing capability shows at once; then probe
        // once, so the first answer is health-checked; then answer.
        let listeners = Listeners::bind(
            &config.server.listen,
            config.server.udp_sockets,
            config.server.udp_receive_buffer,
        )?;
        let api = match &config.api {
            None => None,
            Some(api) => Some(
                std::net::TcpListener::bind(api.listen)
                    .with_context(|| format!("cannot listen on {} (api)", api.listen))?,
            ),
        };
        // The recorder comes before the first probe round, so nothing it counts is lost.
        let metrics = match api {
            None => None,
            Some(_) => Some(
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    // Every `*_seconds` metric is a histogram with these buckets (not a
                    // summary), so it can be aggregated across instances.
                    .set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                        &[
                            0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                            5.0, 10.0,
                        ],
                    )
                    .context("metrics buckets")?
                    .install_recorder()
                    .context("cannot install the metrics recorder")?,
            ),
        };
        let mut service = Service::start(config.clone(), zones).await?;
        // The zone files' parsed records are gone now; give their memory back to the system.
        healthdns::zone::release_freed_memory();
        if let Some(listener) = api {
            service = service.with_api(listener, metrics);
        }
        let token = shutdown.clone();
        service
            .run_with_reload(listeners, shutdown, move |handle| {
                tokio::spawn(reload_on_hangup(hangups, handle, token));
            })
            .await?;
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Reloads on every SIGHUP until `shutdown` (the reloader logs the outcome).
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    handle: healthdns::reload::ReloadHandle,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangups.recv() => {}
        }
        tracing::info!("SIGHUP: reloading the config and zone files");
        let _ = handle.reload().await;
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
