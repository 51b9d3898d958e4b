//! The manager role and `all-in-one`, which composes manager, scheduler and a seed daemon in
//! one process. Only the binary may depend on every role, so the composition lives here.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{shutdown_token, AllInOneArgs, ManagerArgs};

/// Environment variable holding the first admin token (instead of a random one).
const BOOTSTRAP_TOKEN_ENV: &str = "SHOAL_BOOTSTRAP_TOKEN";
/// Environment variable holding the hex key that seals registry credentials of jobs.
const SECRET_KEY_ENV: &str = "SHOAL_MANAGER_SECRET_KEY";

/// `shoal manager`.
pub(crate) async fn run_manager(args: ManagerArgs) -> anyhow::Result<()> {
    shoal_telemetry::init("info");
    let mut config = shoal_manager::ManagerConfig::new(args.data_dir);
    config.database = args.database;
    config.rest_listen = args.rest_listen;
    config.grpc_listen = args.grpc_listen;
    config.instance_ttl = args.instance_ttl;
    config.job_lease = args.job_lease;
    config.job_workers = args.job_workers.max(1);
    apply_env(&mut config)?;
    shoal_manager::run(config, shutdown_token())
        .await
        .context("run manager")
}

fn apply_env(config: &mut shoal_manager::ManagerConfig) -> anyhow::Result<()> {
    config.bootstrap_token = std::env::var(BOOTSTRAP_TOKEN_ENV)
        .ok()
        .filter(|token| !token.is_empty());
    if let Ok(text) = std::env::var(SECRET_KEY_ENV) {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .with_context(|| format!("{SECRET_KEY_ENV} must be 64 hex digits"))?;
        config.secret_key = Some(bytes);
    }
    Ok(())
}

/// `shoal all-in-one`: manager (SQLite), scheduler and one seed daemon with the proxy.
pub(crate) async fn run_all_in_one(args: AllInOneArgs) -> anyhow::Result<()> {
    shoal_telemetry::init("info");
    let cancel = shutdown_token();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create data dir {}", args.data_dir.display()))?;

    let mut manager_config = shoal_manager::ManagerConfig::new(args.data_dir.join("manager"));
    manager_config.rest_listen = SocketAddr::new(args.ip, args.rest_port);
    manager_config.grpc_listen = SocketAddr::new(args.ip, args.manager_port);
    apply_env(&mut manager_config)?;
    let manager = shoal_manager::start(manager_config, cancel.clone())
        .await
        .context("start manager")?;
    let manager_url = format!("http://{}", manager.grpc_addr());
    let rest_url = format!("http://{}", manager.rest_addr());
    let root_token = manager.created_root_token().map(str::to_string);

    let scheduler_listen = SocketAddr::new(args.ip, args.scheduler_port);
    let listener = tokio::net::TcpListener::bind(scheduler_listen)
        .await
        .with_context(|| format!("bind scheduler on {scheduler_listen}"))?;
    let scheduler_addr = listener.local_addr().context("read scheduler address")?;
    let hostname = shoal_daemon::config::local_hostname();
    let scheduler_config = shoal_scheduler::SchedulerConfig {
        listen: scheduler_addr,
        manager: Some(shoal_scheduler::ManagerRegistration {
            url: manager_url.clone(),
            hostname: format!("{hostname}-scheduler"),
            advertise_ip: args.ip,
            cluster_id: 0,
            idc: None,
            location: None,
            keep_alive_interval: Duration::from_secs(5),
        }),
        ..Default::default()
    };
    let scheduler = tokio::spawn(shoal_scheduler::serve(
        listener,
        scheduler_config,
        cancel.clone(),
    ));

    wait_for_registration(&manager_url, scheduler_addr).await;

    let socket = args
        .socket
        .unwrap_or_else(|| args.data_dir.join("daemon.sock"));
    let mut daemon = shoal_daemon::DaemonToml {
        data_dir: Some(args.data_dir.join("daemon")),
        schedulers: vec![format!("http://{scheduler_addr}")],
        manager: Some(shoal_daemon::config::ManagerToml {
            addr: manager_url.clone(),
            ..Default::default()
        }),
        seed: Some(true),
        ip: Some(args.ip),
        hostname: Some(hostname),
        socket: Some(socket.clone()),
        ..Default::default()
    };
    daemon.proxy.listen = Some(SocketAddr::new(args.ip, args.proxy_port));
    daemon.proxy.default_registry = args.default_registry;
    let daemon_config =
        shoal_daemon::DaemonConfig::try_from(daemon).context("validate seed daemon config")?;
    let daemon = shoal_daemon::start(daemon_config, cancel.clone())
        .await
        .context("start seed daemon")?;

    println!("shoal all-in-one is running (Ctrl-C stops it)");
    println!("  manager REST   {rest_url}/api/v1");
    if let Some(token) = &root_token {
        println!("  admin token    {token}   (shown once; store it now)");
    }
    println!("  manager gRPC   {manager_url}");
    println!("  scheduler      http://{scheduler_addr}");
    println!(
        "  seed daemon    upload {}, socket {}",
        daemon.upload_addr,
        socket.display()
    );
    if let Some(proxy) = daemon.proxy_addr {
        println!("  proxy/mirror   http://{proxy}");
    }
    println!(
        "join another node:   shoal daemon --manager {manager_url} --ip <IP> --data-dir <DIR>"
    );
    if let Some(proxy) = daemon.proxy_addr {
        println!("point containerd:    shoal init containerd --proxy http://{proxy} --registry <REGISTRY>");
    }

    cancel.cancelled().await;
    tracing::info!("all-in-one shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon.wait()).await;
    match scheduler.await {
        Ok(result) => result.context("run scheduler")?,
        Err(err) => anyhow::bail!("scheduler task failed: {err}"),
    }
    manager.wait().await.context("run manager")?;
    Ok(())
}

/// Waits (up to 10 s) until the manager hands out the scheduler, so daemons started right after
/// the banner find it.
async fn wait_for_registration(manager_url: &str, scheduler_addr: SocketAddr) {
    let Ok(client) = shoal_client::manager::ManagerClient::new(manager_url) else {
        return;
    };
    let requester = shoal_client::manager::Requester {
        hostname: "all-in-one".to_string(),
        ip: scheduler_addr.ip().to_string(),
        ..Default::default()
    };
    let expected = format!("http://{scheduler_addr}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Ok(schedulers) = client.list_schedulers(&requester).await {
            if schedulers.iter().any(|scheduler| scheduler.url == expected) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("the scheduler has not registered with the manager yet");
}
