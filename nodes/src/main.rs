//! `strom`: the streaming server binary. Thin: parse the command line, load the configuration, set up logging,
//! run a node until SIGTERM/SIGINT, then shut it down gracefully.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use strom_engine::config::LogFormat;
use strom_engine::{Config, Node};
use tracing::{error, info};

/// strom: an actor-based live-streaming server (RTMP in; HLS, HTTP-FLV and RTMP out).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (every key can also be set as STROM_<SECTION>_<KEY>).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// RTMP listen address (rtmp.listen; default 0.0.0.0:1935).
    #[arg(long, value_name = "ADDR")]
    rtmp_listen: Option<String>,
    /// HTTP listen address (http.listen; default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Node name in logs and metrics (node_name; default: the hostname).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Cluster listen address (cluster.listen; default 0.0.0.0:4697). Clustering is on when STROM_CLUSTER_COOKIE
    /// (or cluster.cookie_file) is set.
    #[arg(long, value_name = "ADDR")]
    cluster_listen: Option<String>,
    /// A peer to join, HOST:PORT (cluster.seeds; repeatable).
    #[arg(long = "seed", value_name = "HOST:PORT")]
    seeds: Vec<String>,
    /// A DNS name resolving to every node, HOST:PORT, re-resolved periodically (cluster.dns), e.g. a
    /// StatefulSet's headless Service.
    #[arg(long, value_name = "HOST:PORT")]
    cluster_dns: Option<String>,
    /// The host other nodes dial to reach this one (cluster.advertise; default: the node name).
    #[arg(long, value_name = "HOST")]
    cluster_advertise: Option<String>,
    /// Log format (log_format).
    #[arg(long, value_enum)]
    log_format: Option<CliLogFormat>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the query string that lets a player play a stream (signed play URLs): `token=...`, to append to
    /// its playlist, FLV or RTMP URL. The key is the stream application's play key from the configuration.
    Sign {
        /// The stream's path prefix, `/APP/NAME` (covers its playlists, segments, FLV, RTMP and ABR rungs).
        #[arg(long, value_name = "PATH")]
        path: String,
        /// Seconds the token stays valid.
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        ttl: u64,
        /// Bind the token to this client address: it plays from nowhere else.
        #[arg(long, value_name = "ADDRESS")]
        ip: Option<std::net::IpAddr>,
    },
}

fn sign(config: &Config, path: &str, ttl: u64, ip: Option<std::net::IpAddr>) -> Result<String, String> {
    let mut parts = path.trim_start_matches('/').split('/');
    let (Some(app), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("--path must be /APP/NAME or /vod/ID, not {path:?}"));
    };
    strom_engine::stream::StreamKey::new(app, name).map_err(|e| e.to_string())?;
    let key = config.auth.play_key_for(app)?.ok_or_else(|| {
        format!("no play key for application {app:?}: set auth.play_key, auth.play_key_file or [auth.apps.{app}] play")
    })?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(format!("token={}", strom_engine::formats::token::sign(&key, &format!("/{app}/{name}"), now + ttl, ip)))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

fn load(cli: &Cli) -> Result<Config, String> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    // Command-line flags are applied as the highest-precedence variables, so they are validated the same way.
    let mut flag = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            env.push((name.to_string(), format!("{v:?}")));
        }
    };
    flag("STROM_RTMP_LISTEN", &cli.rtmp_listen);
    flag("STROM_HTTP_LISTEN", &cli.http_listen);
    flag("STROM_NODE_NAME", &cli.node_name);
    flag("STROM_CLUSTER_LISTEN", &cli.cluster_listen);
    flag("STROM_CLUSTER_DNS", &cli.cluster_dns);
    flag("STROM_CLUSTER_ADVERTISE", &cli.cluster_advertise);
    let seeds = (!cli.seeds.is_empty()).then(|| format!("{:?}", cli.seeds));
    let format = cli.log_format.map(|f| match f {
        CliLogFormat::Text => "text".to_string(),
        CliLogFormat::Json => "json".to_string(),
    });
    flag("STROM_LOG_FORMAT", &format);
    if let Some(seeds) = seeds {
        // An array: pushed as is, not quoted like the other flags.
        env.push(("STROM_CLUSTER_SEEDS".into(), seeds));
    }
    Config::load(cli.config.as_deref(), env).map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STROM_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new("info,ractor_cluster=warn,ractor=warn"))
        .unwrap_or_default();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strom: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Sign { path, ttl, ip }) = &cli.command {
        return match sign(&config, path, *ttl, *ip) {
            Ok(query) => {
                println!("{query}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("strom sign: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Headroom for recursive parsers in dependencies (rml_amf0); commands are also size-limited.
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strom: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let node = match Node::start(config).await {
            Ok(n) => n,
            Err(e) => {
                error!("{e}");
                return ExitCode::from(1);
            }
        };
        wait_for_signal().await;
        let clean = node.shutdown().await;
        if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}
