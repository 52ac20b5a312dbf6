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
    /// Write each zone with every pool address as if healthy (no probing), as
    /// <DIR>/<zone>.zone, to bootstrap a secondary. The serial is recorded in the state file,
    /// so the server never publishes it with other content; refused while a server runs.
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
fn fetch_status(base: &str) -> anyhow::Result<serde_json::Value> {
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
        Ok(serde_json::from_slice(&body)?)
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
    let token = token_file
        .map(|path| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_string())
                .with_context(|| format!("cannot read {}", path.display()))
        })
        .transpose()?;
    let url = format!(
        "{}/pools/{pool}/addresses/{address}/force",
        base.trim_end_matches('/')
    );
    with_api_client(|client| async move {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(format!("{{\"state\": \"{state}\"}}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("{url} answered {status}: {}", text.trim());
        }
        print!("{text}");
        Ok(())
    })
}

/// `healthdns status`: a table, or one Nagios line with its exit code.
fn run_status(base: &str, nagios: bool) -> ExitCode {
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
    let empty = Vec::new();
    let pools = report["pools"].as_array().unwrap_or(&empty);
    if nagios {
        let mut critical = Vec::new();
        let mut warning = Vec::new();
        for pool in pools {
            let name = pool["name"].as_str().unwrap_or("?");
            let addresses: Vec<&serde_json::Value> = pool["addresses"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter(|address| address["canary"] != true)
                .collect();
            let up = addresses
                .iter()
                .filter(|address| address["state"] == "up")
                .count();
            if up == 0 && !addresses.is_empty() {
                critical.push(format!("{name} 0/{} up", addresses.len()));
            } else if up < addresses.len() {
                warning.push(format!("{name} {up}/{} up", addresses.len()));
            }
        }
        let (code, word, detail) = if !critical.is_empty() {
            (2, "CRITICAL", [critical, warning].concat().join(", "))
        } else if !warning.is_empty() {
            (1, "WARNING", warning.join(", "))
        } else {
            (0, "OK", format!("{} pools, every address up", pools.len()))
        };
        println!("HEALTHDNS {word} - {detail}");
        return ExitCode::from(code);
    }
    println!(
        "{:<16} {:<40} {:<8} {:>10}  SINCE",
        "POOL", "ADDRESS", "STATE", "LATENCY"
    );
    for pool in pools {
        for address in pool["addresses"].as_array().unwrap_or(&empty) {
            let latency = address["checks"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter_map(|check| check["smoothed_latency_ms"].as_f64())
                .fold(None, |max: Option<f64>, value| {
                    Some(max.map_or(value, |m| m.max(value)))
                });
            let mut text = address["address"].as_str().unwrap_or("?").to_string();
            if address["canary"] == true {
                text.push_str(" (canary)");
            }
            println!(
                "{:<16} {:<40} {:<8} {:>10}  {}",
                pool["name"].as_str().unwrap_or("?"),
                text,
                address["state"].as_str().unwrap_or("?"),
                latency.map_or_else(|| "-".to_string(), |ms| format!("{ms:.1} ms")),
                address["since"].as_str().unwrap_or("-"),
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
            healthdns::zone::serial::digest_with_body(served, &body),
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
        // Bind first, so a taken port or a missing capability shows at once; then probe
        // once, so the first answer is health-checked; then answer.
        let listeners = Listeners::bind(&config.server.listen, config.server.udp_sockets)?;
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
                    .install_recorder()
                    .context("cannot install the metrics recorder")?,
            ),
        };
        let mut service = Service::start(config.clone(), zones).await?;
        if let Some(listener) = api {
            service = service.with_api(listener, metrics);
        }
        service.run(listeners, shutdown).await?;
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(())
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
