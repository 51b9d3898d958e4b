//! Command-line flags of every subcommand and how they layer over config files.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// shoal: peer-to-peer distribution of files and container images, wire-compatible with
/// Dragonfly v2.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the manager (clusters, scheduler discovery, preheat jobs; REST and gRPC).
    Manager(ManagerArgs),
    /// Run the scheduler (gRPC scheduler.v2.Scheduler).
    Scheduler(SchedulerArgs),
    /// Run the daemon on this node (download engine, piece store, upload servers).
    Daemon(Box<DaemonArgs>),
    /// Download a URL through the local daemon.
    Get(GetArgs),
    /// Point a container runtime's registry mirror configuration at the daemon's proxy.
    Init(InitArgs),
    /// Run a single-node cluster in one process: manager (SQLite), scheduler, seed daemon + proxy.
    AllInOne(AllInOneArgs),
    /// Benchmark lab: shaped multi-node clusters and micro-benchmarks.
    Bench(Box<shoal_bench::BenchArgs>),
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Runtime to configure.
    #[arg(value_enum)]
    runtime: RuntimeArg,
    /// The daemon's proxy URL.
    #[arg(long, default_value = "http://127.0.0.1:4001")]
    proxy: String,
    /// Registry to mirror; repeatable.
    #[arg(long = "registry", default_value = "docker.io")]
    registries: Vec<String>,
    /// Configuration directory (containerd: /etc/containerd/certs.d, crio/podman:
    /// /etc/containers/registries.conf.d, docker: /etc/docker).
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Reach the registries over plain HTTP.
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RuntimeArg {
    Containerd,
    Crio,
    Podman,
    Docker,
}

#[derive(Debug, clap::Args)]
struct SchedulerArgs {
    /// Address to serve gRPC on.
    #[arg(long, default_value = "0.0.0.0:8002", env = "SHOAL_SCHEDULER_LISTEN")]
    listen: SocketAddr,
    /// Peers of one task allowed to download from the origin at once (seeds included).
    #[arg(long, default_value_t = 2)]
    max_back_to_source: usize,
    /// Candidate parents returned per scheduling answer.
    #[arg(long, default_value_t = 4)]
    candidate_parents: usize,
    /// Forget hosts that have not announced for this long.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    host_ttl: Duration,
    /// Longest a peer waits for a parent before being sent to the origin.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    schedule_wait: Duration,
    /// Do not ask seed peers to fetch cold tasks.
    #[arg(long)]
    no_seed_trigger: bool,
    /// Register with this manager (gRPC URL) so daemons can discover this scheduler.
    #[arg(long, env = "SHOAL_SCHEDULER_MANAGER")]
    manager: Option<String>,
    /// IP daemons dial, registered with the manager (default: the listen IP, or 127.0.0.1 when
    /// listening on all addresses).
    #[arg(long)]
    advertise_ip: Option<IpAddr>,
    /// Name registered with the manager (default: the machine's hostname).
    #[arg(long)]
    hostname: Option<String>,
    /// Scheduler cluster to join at the manager (0: the default cluster).
    #[arg(long, default_value_t = 0)]
    cluster_id: u64,
    /// IDC registered with the manager.
    #[arg(long)]
    idc: Option<String>,
    /// Location registered with the manager.
    #[arg(long)]
    location: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ManagerArgs {
    /// Directory for the embedded SQLite database and the credential-sealing key.
    #[arg(
        long,
        default_value = "/var/lib/shoal/manager",
        env = "SHOAL_MANAGER_DATA_DIR"
    )]
    pub(crate) data_dir: PathBuf,
    /// Database URL: postgres://USER:PASSWORD@HOST/DB for HA (default: SQLite in the data dir).
    #[arg(long, env = "SHOAL_MANAGER_DATABASE", hide_env_values = true)]
    pub(crate) database: Option<String>,
    /// REST API (/api/v1, /oapi/v1) address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub(crate) rest_listen: SocketAddr,
    /// gRPC (manager.v2.Manager) address.
    #[arg(long, default_value = "0.0.0.0:65003")]
    pub(crate) grpc_listen: SocketAddr,
    /// Schedulers and seed peers not heard from within this are inactive.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) instance_ttl: Duration,
    /// A running job whose manager stopped renewing it for this long is taken over.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) job_lease: Duration,
    /// Jobs run at once by this manager.
    #[arg(long, default_value_t = 2)]
    pub(crate) job_workers: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AllInOneArgs {
    /// Directory for every role's state.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// IP every role binds and advertises.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) ip: IpAddr,
    /// Manager REST port.
    #[arg(long, default_value_t = 8080)]
    pub(crate) rest_port: u16,
    /// Manager gRPC port.
    #[arg(long, default_value_t = 65003)]
    pub(crate) manager_port: u16,
    /// Scheduler gRPC port.
    #[arg(long, default_value_t = 8002)]
    pub(crate) scheduler_port: u16,
    /// Seed daemon's proxy and registry mirror port.
    #[arg(long, default_value_t = 4001)]
    pub(crate) proxy_port: u16,
    /// Unix socket of the seed daemon's download API (default DATA_DIR/daemon.sock).
    #[arg(long)]
    pub(crate) socket: Option<PathBuf>,
    /// Upstream registry for mirror requests without X-Dragonfly-Registry or ns=.
    #[arg(long)]
    pub(crate) default_registry: Option<String>,
}

#[derive(Debug, clap::Args)]
struct DaemonArgs {
    /// YAML config file; flags override its values.
    #[arg(long, env = "SHOAL_DAEMON_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the piece store.
    #[arg(long, env = "SHOAL_DAEMON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Scheduler URL(s), comma separated or repeated, e.g. http://127.0.0.1:8002.
    #[arg(long, value_delimiter = ',', env = "SHOAL_DAEMON_SCHEDULER")]
    scheduler: Vec<String>,
    /// Discover schedulers through this manager (gRPC URL, e.g. http://127.0.0.1:65003).
    #[arg(long, env = "SHOAL_DAEMON_MANAGER")]
    manager: Option<String>,
    /// Run as a seed peer (fetches from the origin when the scheduler asks).
    #[arg(long)]
    seed: bool,
    /// IP to bind and advertise (give each daemon on one machine its own).
    #[arg(long, env = "SHOAL_DAEMON_IP")]
    ip: Option<IpAddr>,
    /// Hostname used in host and peer ids.
    #[arg(long)]
    hostname: Option<String>,
    /// Upload gRPC port.
    #[arg(long)]
    upload_port: Option<u16>,
    /// Vortex piece port.
    #[arg(long)]
    vortex_port: Option<u16>,
    /// Prometheus metrics port.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Unix socket of the local download API.
    #[arg(long, env = "SHOAL_SOCKET")]
    socket: Option<PathBuf>,
    /// HTTP proxy and registry mirror address (default IP:4001 on loopback).
    #[arg(long)]
    proxy_listen: Option<std::net::SocketAddr>,
    /// Upstream registry for mirror requests without X-Dragonfly-Registry or ns=.
    #[arg(long)]
    default_registry: Option<String>,
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    /// URL to download.
    url: String,
    /// Where to write the content.
    #[arg(short = 'O', long = "output")]
    output: PathBuf,
    /// Unix socket of the local daemon.
    #[arg(long, default_value = shoal_daemon::config::DEFAULT_SOCKET, env = "SHOAL_SOCKET")]
    socket: PathBuf,
    /// Expected digest of the whole content, sha256:HEX or sha512:HEX.
    #[arg(long)]
    digest: Option<String>,
    /// Header sent to the origin, 'Name: value'; repeatable.
    #[arg(short = 'H', long = "header")]
    header: Vec<String>,
    /// Tag: different tags make different tasks for the same URL.
    #[arg(long)]
    tag: Option<String>,
    /// Application name, part of the task id.
    #[arg(long)]
    application: Option<String>,
    /// Query parameter left out of the task id; repeatable (default: signed-URL parameters).
    #[arg(long = "filtered-query-param")]
    filtered_query_param: Vec<String>,
    /// Fixed piece length, e.g. 8MiB (at least 4MiB); part of the task id.
    #[arg(long)]
    piece_length: Option<bytesize::ByteSize>,
    /// Fail instead of downloading from the origin when no peer has the content.
    #[arg(long)]
    disable_back_to_source: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Runs the chosen subcommand.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Manager(args) => crate::roles::run_manager(args).await,
        Command::AllInOne(args) => crate::roles::run_all_in_one(args).await,
        Command::Scheduler(args) => run_scheduler(args).await,
        Command::Daemon(args) => run_daemon(*args).await,
        Command::Get(args) => run_get(args).await,
        Command::Init(args) => run_init(args),
        Command::Bench(args) => {
            shoal_telemetry::init("warn");
            shoal_bench::run(*args).await
        }
    }
}

fn run_init(args: InitArgs) -> anyhow::Result<()> {
    use shoal_cli::init::{InitOptions, Runtime};
    let runtime = match args.runtime {
        RuntimeArg::Containerd => Runtime::Containerd,
        RuntimeArg::Crio => Runtime::Crio,
        RuntimeArg::Podman => Runtime::Podman,
        RuntimeArg::Docker => Runtime::Docker,
    };
    let options = InitOptions {
        runtime,
        proxy: args.proxy,
        registries: args.registries,
        config_dir: args.config_dir,
        insecure: args.insecure,
    };
    for change in shoal_cli::init::init(&options)? {
        println!("{change}");
    }
    Ok(())
}

async fn run_scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    shoal_telemetry::init("info");
    let config = shoal_scheduler::SchedulerConfig {
        listen: args.listen,
        max_back_to_source_peers: args.max_back_to_source.max(1),
        candidate_parent_limit: args.candidate_parents.max(1),
        host_ttl: args.host_ttl,
        schedule_wait: args.schedule_wait,
        seed_trigger: !args.no_seed_trigger,
        manager: args
            .manager
            .map(|url| shoal_scheduler::ManagerRegistration {
                url: with_scheme(url),
                hostname: args
                    .hostname
                    .unwrap_or_else(shoal_daemon::config::local_hostname),
                advertise_ip: args.advertise_ip.unwrap_or_else(|| {
                    if args.listen.ip().is_unspecified() {
                        IpAddr::from([127, 0, 0, 1])
                    } else {
                        args.listen.ip()
                    }
                }),
                cluster_id: args.cluster_id,
                idc: args.idc,
                location: args.location,
                keep_alive_interval: Duration::from_secs(5),
            }),
        ..Default::default()
    };
    let cancel = shutdown_token();
    shoal_scheduler::run(config, cancel)
        .await
        .context("run scheduler")
}

async fn run_daemon(args: DaemonArgs) -> anyhow::Result<()> {
    shoal_telemetry::init("info");
    let mut toml = match &args.config {
        Some(path) => shoal_daemon::DaemonToml::load(path)?,
        None => shoal_daemon::DaemonToml::default(),
    };
    if args.data_dir.is_some() {
        toml.data_dir = args.data_dir;
    }
    if !args.scheduler.is_empty() {
        toml.schedulers = args.scheduler;
    }
    if let Some(addr) = args.manager {
        let mut manager = toml.manager.take().unwrap_or_default();
        manager.addr = addr;
        toml.manager = Some(manager);
    }
    if args.seed {
        toml.seed = Some(true);
    }
    toml.ip = args.ip.or(toml.ip);
    toml.hostname = args.hostname.or(toml.hostname);
    toml.upload_port = args.upload_port.or(toml.upload_port);
    toml.vortex_port = args.vortex_port.or(toml.vortex_port);
    toml.metrics_port = args.metrics_port.or(toml.metrics_port);
    toml.socket = args.socket.or(toml.socket);
    toml.proxy.listen = args.proxy_listen.or(toml.proxy.listen);
    toml.proxy.default_registry = args.default_registry.or(toml.proxy.default_registry);
    let config = shoal_daemon::DaemonConfig::try_from(toml).context("validate daemon config")?;
    let cancel = shutdown_token();
    shoal_daemon::run(config, cancel)
        .await
        .context("run daemon")
}

async fn run_get(args: GetArgs) -> anyhow::Result<()> {
    let options = shoal_cli::get::GetOptions {
        url: args.url,
        output: args.output.clone(),
        socket: args.socket,
        digest: args.digest,
        headers: args.header,
        tag: args.tag,
        application: args.application,
        filtered_query_params: args.filtered_query_param,
        piece_length: args.piece_length.map(|size| size.as_u64()),
        disable_back_to_source: args.disable_back_to_source,
        no_progress: args.no_progress,
    };
    if let Some(piece_length) = options.piece_length {
        anyhow::ensure!(
            piece_length >= 4 * 1024 * 1024,
            "--piece-length must be at least 4MiB"
        );
    }
    let started = std::time::Instant::now();
    let summary = shoal_cli::get::get(&options).await?;
    println!(
        "{}",
        shoal_cli::get::describe(&summary, &args.output, started.elapsed())
    );
    Ok(())
}

/// `url` with `http://` when it names no scheme.
pub(crate) fn with_scheme(url: String) -> String {
    if url.contains("://") {
        url
    } else {
        format!("http://{url}")
    }
}

/// A token cancelled on SIGINT or SIGTERM.
pub(crate) fn shutdown_token() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    tracing::error!(error = %err, "failed to install SIGTERM handler");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        token.cancel();
    });
    cancel
}
