//! `TestCluster`: a scheduler, an optional seed daemon and N daemons in this process, each
//! daemon on its own loopback address (127.0.0.x) with its own data dir and socket, every
//! server on port 0 with addresses read back from the listeners.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_cli::get::{GetOptions, GetSummary};
use shoal_daemon::{DaemonConfig, DaemonToml, RunningDaemon};
use shoal_scheduler::SchedulerConfig;
use tokio_util::sync::CancellationToken;

type Configure = Box<dyn Fn(usize, &mut DaemonConfig) + Send + Sync>;

/// Builds a [`TestCluster`].
pub struct ClusterBuilder {
    manager: bool,
    seed: bool,
    daemons: usize,
    scheduler: SchedulerConfig,
    configure: Option<Configure>,
    subnet: u8,
}

impl std::fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("seed", &self.seed)
            .field("daemons", &self.daemons)
            .finish()
    }
}

/// One daemon of the cluster (the seed is index `usize::MAX` in logs).
#[derive(Debug)]
pub struct Node {
    pub config: DaemonConfig,
    state: tokio::sync::Mutex<NodeState>,
    /// Metrics of the current incarnation.
    metrics: std::sync::Mutex<Option<shoal_daemon::Metrics>>,
}

#[derive(Debug)]
struct NodeState {
    cancel: CancellationToken,
    running: Option<RunningDaemon>,
}

/// The admin token of a test cluster's manager.
pub const TEST_ADMIN_TOKEN: &str = "shoal-test-admin-token";

/// The in-process manager of a cluster built with [`ClusterBuilder::manager`].
#[derive(Debug)]
pub struct TestManager {
    pub rest_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Admin bearer token for the REST API.
    pub token: String,
    cancel: CancellationToken,
}

impl TestManager {
    /// `http://` URL of the gRPC server.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// `http://` URL of the REST server.
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.rest_addr)
    }
}

/// A running cluster; dropping it stops everything and removes its files.
#[derive(Debug)]
pub struct TestCluster {
    pub manager: Option<TestManager>,
    pub scheduler_addr: SocketAddr,
    scheduler_cancel: std::sync::Mutex<CancellationToken>,
    scheduler_config: SchedulerConfig,
    pub seed: Option<Node>,
    pub daemons: Vec<Node>,
    dir: tempfile::TempDir,
    outputs: AtomicU64,
}

/// The result of a `shoal get` through one daemon.
#[derive(Debug)]
pub struct Fetched {
    pub summary: GetSummary,
    pub bytes: Vec<u8>,
    pub path: PathBuf,
}

impl TestCluster {
    pub fn builder() -> ClusterBuilder {
        static SUBNET: AtomicU64 = AtomicU64::new(0);
        // Each cluster in one test binary gets its own 127.0.N.x block of host ids.
        let subnet = (SUBNET.fetch_add(1, Ordering::SeqCst) % 200 + 10) as u8;
        ClusterBuilder {
            manager: false,
            seed: false,
            daemons: 1,
            scheduler: SchedulerConfig {
                listen: "127.0.0.1:0".parse().expect("valid address"),
                ..SchedulerConfig::default()
            },
            configure: None,
            subnet,
        }
    }

    /// Downloads `url` through daemon `index` into a fresh file and reads it back.
    pub async fn get(&self, index: usize, url: &str) -> anyhow::Result<Fetched> {
        self.get_with(
            index,
            GetOptions {
                url: url.to_string(),
                ..Default::default()
            },
        )
        .await
    }

    /// Like [`TestCluster::get`] with extra options (output and socket are filled in).
    pub async fn get_with(&self, index: usize, mut options: GetOptions) -> anyhow::Result<Fetched> {
        let path = self.output_path();
        options.output = path.clone();
        options.socket = self.daemons[index].config.socket.clone();
        options.no_progress = true;
        let summary = shoal_cli::get::get(&options).await?;
        let bytes = tokio::fs::read(&path).await?;
        Ok(Fetched {
            summary,
            bytes,
            path,
        })
    }

    /// Options for a `shoal get` of `url` through daemon `index` into a fresh output path.
    pub fn get_options(&self, index: usize, url: &str) -> GetOptions {
        GetOptions {
            url: url.to_string(),
            output: self.output_path(),
            socket: self.daemons[index].config.socket.clone(),
            no_progress: true,
            ..Default::default()
        }
    }

    /// A path in the cluster's directory that no download has used yet.
    pub fn output_path(&self) -> PathBuf {
        let n = self.outputs.fetch_add(1, Ordering::SeqCst);
        self.dir.path().join(format!("output-{n}"))
    }

    /// Restarts the scheduler on the same address with empty state, as after a crash.
    pub async fn restart_scheduler(&self) -> anyhow::Result<()> {
        self.scheduler_cancel
            .lock()
            .expect("scheduler lock")
            .cancel();
        let mut attempts = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.scheduler_addr).await {
                Ok(listener) => break listener,
                Err(err) if attempts < 100 => {
                    attempts += 1;
                    tracing::debug!(error = %err, "scheduler port not free yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => return Err(err.into()),
            }
        };
        *self.scheduler_cancel.lock().expect("scheduler lock") =
            spawn_scheduler(listener, self.scheduler_config.clone());
        Ok(())
    }

    /// Stops daemon `index`: its servers close and in-flight transfers end.
    pub async fn stop_daemon(&self, index: usize) {
        stop(&self.daemons[index]).await;
    }

    /// Stops the seed.
    pub async fn stop_seed(&self) {
        if let Some(seed) = &self.seed {
            stop(seed).await;
        }
    }

    /// Starts daemon `index` again with the same config and data dir.
    pub async fn restart_daemon(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.daemons[index];
        stop(node).await;
        let mut state = node.state.lock().await;
        state.cancel = CancellationToken::new();
        let running = shoal_daemon::start(node.config.clone(), state.cancel.clone()).await?;
        *node.metrics.lock().expect("metrics lock") = Some(running.metrics.clone());
        state.running = Some(running);
        Ok(())
    }

    /// The upload gRPC address of daemon `index`'s current incarnation.
    pub async fn upload_addr(&self, index: usize) -> Option<SocketAddr> {
        let state = self.daemons[index].state.lock().await;
        state.running.as_ref().map(|daemon| daemon.upload_addr)
    }

    /// The proxy address of daemon `index`'s current incarnation.
    pub async fn proxy_addr(&self, index: usize) -> Option<SocketAddr> {
        let state = self.daemons[index].state.lock().await;
        state.running.as_ref().and_then(|daemon| daemon.proxy_addr)
    }

    /// The Prometheus text of daemon `index`.
    pub fn metrics(&self, index: usize) -> String {
        self.daemons[index].metrics_text()
    }

    /// The Prometheus text of the seed.
    pub fn seed_metrics(&self) -> String {
        self.seed
            .as_ref()
            .map(Node::metrics_text)
            .unwrap_or_default()
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// Reads `shoal_daemon_download_bytes_total{source="..."}` from a metrics text.
pub fn download_bytes(metrics: &str, source: &str) -> u64 {
    metric_value(
        metrics,
        &format!("shoal_daemon_download_bytes_total{{source=\"{source}\"}}"),
    )
}

/// Reads an unlabelled or fully labelled sample from a metrics text (0 when absent).
pub fn metric_value(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

async fn start_manager(dir: &tempfile::TempDir) -> anyhow::Result<TestManager> {
    let mut config = shoal_manager::ManagerConfig::new(dir.path().join("manager"));
    config.rest_listen = "127.0.0.1:0".parse()?;
    config.grpc_listen = "127.0.0.1:0".parse()?;
    config.bootstrap_token = Some(TEST_ADMIN_TOKEN.to_string());
    config.instance_ttl = Duration::from_secs(10);
    config.job_lease = Duration::from_secs(5);
    let cancel = CancellationToken::new();
    let manager = shoal_manager::start(config, cancel.clone()).await?;
    let handle = TestManager {
        rest_addr: manager.rest_addr(),
        grpc_addr: manager.grpc_addr(),
        token: TEST_ADMIN_TOKEN.to_string(),
        cancel: cancel.clone(),
    };
    tokio::spawn(async move {
        if let Err(err) = manager.wait().await {
            tracing::error!(error = %err, "test manager failed");
        }
    });
    Ok(handle)
}

/// Waits until the manager hands out the scheduler at `addr`.
async fn wait_for_scheduler(manager: &TestManager, addr: SocketAddr) -> anyhow::Result<()> {
    let client = shoal_client::manager::ManagerClient::new(&manager.grpc_url())?;
    let requester = shoal_client::manager::Requester {
        hostname: "probe".to_string(),
        ip: "127.0.0.1".to_string(),
        ..Default::default()
    };
    let expected = format!("http://{addr}");
    crate::wait_until(Duration::from_secs(20), || {
        let client = client.clone();
        let requester = requester.clone();
        let expected = expected.clone();
        async move {
            client
                .list_schedulers(&requester)
                .await
                .is_ok_and(|list| list.iter().any(|scheduler| scheduler.url == expected))
        }
    })
    .await
}

fn spawn_scheduler(
    listener: tokio::net::TcpListener,
    config: SchedulerConfig,
) -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        if let Err(err) = shoal_scheduler::serve(listener, config, token).await {
            tracing::error!(error = %err, "test scheduler failed");
        }
    });
    cancel
}

async fn stop(node: &Node) {
    let mut state = node.state.lock().await;
    state.cancel.cancel();
    if let Some(running) = state.running.take() {
        let _ = tokio::time::timeout(Duration::from_secs(10), running.wait()).await;
    }
}

impl Node {
    fn metrics_text(&self) -> String {
        self.metrics
            .lock()
            .expect("metrics lock")
            .as_ref()
            .map(shoal_daemon::Metrics::encode)
            .unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(manager) = &self.manager {
            manager.cancel.cancel();
        }
        self.scheduler_cancel
            .lock()
            .expect("scheduler lock")
            .cancel();
        for node in self.daemons.iter().chain(self.seed.iter()) {
            if let Ok(state) = node.state.try_lock() {
                state.cancel.cancel();
            }
        }
    }
}

impl ClusterBuilder {
    /// Runs a manager (SQLite in the cluster dir): the scheduler and seed register with it, and
    /// daemons know only the manager and discover the scheduler through it.
    pub fn manager(mut self, manager: bool) -> Self {
        self.manager = manager;
        self
    }

    pub fn seed(mut self, seed: bool) -> Self {
        self.seed = seed;
        self
    }

    pub fn daemons(mut self, count: usize) -> Self {
        self.daemons = count;
        self
    }

    pub fn scheduler(mut self, configure: impl FnOnce(&mut SchedulerConfig)) -> Self {
        configure(&mut self.scheduler);
        self
    }

    /// Adjusts each daemon's config; the index is `usize::MAX` for the seed.
    pub fn configure(
        mut self,
        configure: impl Fn(usize, &mut DaemonConfig) + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Box::new(configure));
        self
    }

    pub async fn start(self) -> anyhow::Result<TestCluster> {
        shoal_telemetry::init("warn");
        let dir = tempfile::tempdir()?;
        let manager = match self.manager {
            true => Some(start_manager(&dir).await?),
            false => None,
        };
        let mut scheduler_config = self.scheduler.clone();
        if let Some(manager) = &manager {
            scheduler_config.manager = Some(shoal_scheduler::ManagerRegistration {
                url: manager.grpc_url(),
                hostname: "scheduler-0".to_string(),
                advertise_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                cluster_id: 0,
                idc: None,
                location: None,
                keep_alive_interval: Duration::from_secs(1),
            });
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let scheduler_addr = listener.local_addr()?;
        let scheduler_cancel = spawn_scheduler(listener, scheduler_config.clone());
        let scheduler_url = format!("http://{scheduler_addr}");
        if let Some(manager) = &manager {
            wait_for_scheduler(manager, scheduler_addr).await?;
        }
        let manager_url = manager.as_ref().map(TestManager::grpc_url);
        let seed = if self.seed {
            Some(
                self.start_node(&dir, &scheduler_url, manager_url.as_deref(), usize::MAX, 1)
                    .await?,
            )
        } else {
            None
        };
        let mut daemons = Vec::new();
        for index in 0..self.daemons {
            daemons.push(
                self.start_node(
                    &dir,
                    &scheduler_url,
                    manager_url.as_deref(),
                    index,
                    index as u8 + 2,
                )
                .await?,
            );
        }
        Ok(TestCluster {
            manager,
            scheduler_addr,
            scheduler_cancel: std::sync::Mutex::new(scheduler_cancel),
            scheduler_config,
            seed,
            daemons,
            dir,
            outputs: AtomicU64::new(0),
        })
    }

    async fn start_node(
        &self,
        dir: &tempfile::TempDir,
        scheduler: &str,
        manager: Option<&str>,
        index: usize,
        host: u8,
    ) -> anyhow::Result<Node> {
        let name = if index == usize::MAX {
            "seed".to_string()
        } else {
            format!("node{index}")
        };
        let toml = DaemonToml {
            schedulers: vec![scheduler.to_string()],
            ..Default::default()
        };
        let mut config = DaemonConfig::try_from(toml)?;
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, self.subnet, host));
        config.data_dir = dir.path().join(&name);
        config.seed = index == usize::MAX;
        config.ip = ip;
        config.hostname = name.clone();
        config.upload_addr = SocketAddr::new(ip, 0);
        config.vortex_addr = SocketAddr::new(ip, 0);
        config.metrics_addr = None;
        config.proxy.listen = Some(SocketAddr::new(ip, 0));
        config.socket = dir.path().join(format!("{name}.sock"));
        config.download.stall_timeout = Duration::from_secs(5);
        config.download.piece_timeout = Duration::from_secs(10);
        if let Some(url) = manager {
            // Daemons know only the manager; the seed keeps the scheduler too, as all-in-one.
            if index != usize::MAX {
                config.schedulers.clear();
            }
            config.manager = Some(shoal_daemon::config::ManagerClientConfig {
                url: url.to_string(),
                refresh_interval: Duration::from_secs(1),
                keep_alive_interval: Duration::from_secs(1),
                scheduler_cluster_id: 0,
            });
        }
        if let Some(configure) = &self.configure {
            configure(index, &mut config);
        }
        let cancel = CancellationToken::new();
        let running = shoal_daemon::start(config.clone(), cancel.clone()).await?;
        let metrics = std::sync::Mutex::new(Some(running.metrics.clone()));
        Ok(Node {
            config,
            state: tokio::sync::Mutex::new(NodeState {
                cancel,
                running: Some(running),
            }),
            metrics,
        })
    }
}
