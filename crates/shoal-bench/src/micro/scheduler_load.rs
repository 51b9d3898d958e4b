//! `shoal bench micro scheduler`: load on a scheduler process from simulated daemons.
//!
//! The scheduler runs as its own process so that its CPU time (`/proc/<pid>/stat`) and memory
//! are its alone. This process plays the daemons over a few HTTP/2 channels with many streams
//! in flight: first every host announces (`AnnounceHost`), then one peer per host registers on
//! an `AnnouncePeer` stream, as a daemon does (register, take the first answer, report started,
//! one piece and finished). Peers are spread over the tasks round by round, so each task gets a
//! first peer sent to the origin and later peers that receive candidate parents. Latency is from
//! sending the registration to receiving the first answer. Target: ≥ 20k registrations per
//! scheduler CPU-second with p99 ≤ 5 ms.

use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use sha2::Digest as _;
use shoal_protocol::common::{Download, Host, Piece, Priority};
use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::announce_peer_response::Response;
use shoal_protocol::scheduler::scheduler_client::SchedulerClient;
use shoal_protocol::scheduler::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::cluster;
use super::hop::verdict;
use super::procs;
use super::stats::{self, fmt, Summary, Table};
use super::CommonArgs;

/// Registrations per scheduler CPU-second to reach.
const RATE_TARGET_PER_CORE: f64 = 20_000.0;
/// p99 registration latency to stay under, milliseconds.
const P99_TARGET_MS: f64 = 5.0;
/// Every RPC of the load generator gives up after this long.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// The simulated content: one piece of 4 MiB.
const CONTENT_LENGTH: u64 = 4 * 1024 * 1024;

/// Flags of `shoal bench micro scheduler`.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// Simulated hosts; each registers one peer.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// Tasks the peers are spread over.
    #[arg(long, default_value_t = 1_000)]
    tasks: usize,
    /// RPCs in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// HTTP/2 connections to the scheduler.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// How a registration was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Parents,
    BackToSource,
    Other,
}

/// One phase (announce hosts, or register peers) as measured.
#[derive(Debug)]
struct Phase {
    name: &'static str,
    count: usize,
    wall: Duration,
    scheduler_cpu: f64,
    client_cpu: f64,
    latency: Summary,
}

/// Runs the benchmark and prints its tables.
pub(crate) async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.hosts > 0 && args.tasks > 0 && args.concurrency > 0 && args.channels > 0,
        "--hosts, --tasks, --concurrency and --channels must be positive"
    );
    let work = args.common.work_dir("scheduler")?;
    let spec = args.common.cluster_spec(0)?;
    let mut scheduler = cluster::start_scheduler(&spec, work.path()).await?;
    let url = format!("http://{}", spec.scheduler_addr());
    let mut channels = Vec::new();
    for _ in 0..args.channels {
        let channel = Endpoint::from_shared(url.clone())?
            .connect()
            .await
            .context("connect to scheduler")?;
        channels.push(channel);
    }
    let idle = scheduler.memory()?;

    eprintln!("scheduler: announcing {} hosts", args.hosts);
    let hosts = measure(&scheduler, "AnnounceHost", args.hosts, || {
        run_all(&channels, args.hosts, args.concurrency, |client, index| {
            announce_host(client, index)
        })
    })
    .await?;
    let after_hosts = scheduler.memory()?;
    eprintln!(
        "scheduler: registering {} peers over {} tasks",
        args.hosts, args.tasks
    );
    let tasks = args.tasks;
    let mut answers = Vec::new();
    let peers = measure(&scheduler, "AnnouncePeer register", args.hosts, || async {
        let results = run_all(&channels, args.hosts, args.concurrency, |client, index| {
            register_peer(client, index, tasks)
        })
        .await?;
        answers = results.iter().map(|(_, answer)| *answer).collect();
        Ok(results)
    })
    .await?;
    scheduler.ensure_running()?;
    let end = scheduler.memory()?;
    scheduler.stop().await;

    let (text, json) = report(&args, &[hosts, peers], &answers, [idle, after_hosts, end]);
    args.common.report(&text, &json)
}

/// Runs `work`, timing it and charging the CPU both processes spent meanwhile.
async fn measure<F, Fut, T>(
    scheduler: &procs::Proc,
    name: &'static str,
    count: usize,
    work: F,
) -> anyhow::Result<Phase>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<(Duration, T)>>>,
{
    let own_pid = std::process::id();
    let scheduler_cpu = scheduler.cpu_seconds()?;
    let client_cpu = procs::cpu_seconds(own_pid)?;
    let started = Instant::now();
    let results = work().await?;
    let wall = started.elapsed();
    let latencies: Vec<Duration> = results.iter().map(|(latency, _)| *latency).collect();
    Ok(Phase {
        name,
        count,
        wall,
        scheduler_cpu: scheduler.cpu_seconds()? - scheduler_cpu,
        client_cpu: procs::cpu_seconds(own_pid)? - client_cpu,
        latency: Summary::of_durations(&latencies),
    })
}

/// Runs `count` operations with `concurrency` in flight, round-robin over `channels`.
async fn run_all<F, Fut, T>(
    channels: &[Channel],
    count: usize,
    concurrency: usize,
    operation: F,
) -> anyhow::Result<Vec<(Duration, T)>>
where
    F: Fn(SchedulerClient<Channel>, usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Duration, T)>>,
{
    let results: Vec<anyhow::Result<(Duration, T)>> = futures::stream::iter(0..count)
        .map(|index| {
            operation(
                SchedulerClient::new(channels[index % channels.len()].clone()),
                index,
            )
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

fn host_id(index: usize) -> String {
    format!("{}-micro-host-{index}", host_ip(index))
}

/// A distinct documentation-range address per host; the scheduler never connects to it.
fn host_ip(index: usize) -> String {
    format!(
        "10.{}.{}.{}",
        (index >> 16) & 0xff,
        (index >> 8) & 0xff,
        index & 0xff
    )
}

fn task_id(task: usize) -> String {
    hex::encode(sha2::Sha256::digest(
        format!("micro-task-{task}").as_bytes(),
    ))
}

async fn announce_host(
    mut client: SchedulerClient<Channel>,
    index: usize,
) -> anyhow::Result<(Duration, ())> {
    let request = AnnounceHostRequest {
        host: Some(Host {
            id: host_id(index),
            hostname: format!("micro-host-{index}"),
            ip: host_ip(index),
            port: 4000,
            download_port: 4000,
            os: "linux".into(),
            ..Default::default()
        }),
        interval: Some(shoal_protocol::convert::duration(Duration::from_secs(300))),
    };
    let started = Instant::now();
    tokio::time::timeout(RPC_TIMEOUT, client.announce_host(request))
        .await
        .context("announce host timed out")?
        .context("announce host")?;
    Ok((started.elapsed(), ()))
}

/// One peer's AnnouncePeer stream; returns the latency to the first answer.
async fn register_peer(
    mut client: SchedulerClient<Channel>,
    index: usize,
    tasks: usize,
) -> anyhow::Result<(Duration, Answer)> {
    let task = index % tasks;
    let (sender, receiver) = mpsc::channel(8);
    let envelope = |request: Request| AnnouncePeerRequest {
        host_id: host_id(index),
        task_id: task_id(task),
        peer_id: format!("{}-micro-peer-{index}", host_ip(index)),
        request: Some(request),
    };
    let download = Download {
        url: format!("http://origin.invalid/micro/{task}"),
        priority: Priority::Level6 as i32,
        actual_content_length: Some(CONTENT_LENGTH),
        actual_piece_length: Some(CONTENT_LENGTH),
        actual_piece_count: Some(1),
        ..Default::default()
    };
    sender
        .send(envelope(Request::RegisterPeerRequest(
            RegisterPeerRequest {
                download: Some(download),
            },
        )))
        .await
        .context("queue registration")?;
    let started = Instant::now();
    let mut responses = tokio::time::timeout(
        RPC_TIMEOUT,
        client.announce_peer(ReceiverStream::new(receiver)),
    )
    .await
    .context("announce peer timed out")?
    .context("open announce peer")?
    .into_inner();
    let first = tokio::time::timeout(RPC_TIMEOUT, responses.message())
        .await
        .context("first answer timed out")?
        .context("first answer")?;
    let latency = started.elapsed();
    let Some(first) = first else {
        bail!("scheduler closed the stream without an answer");
    };
    let (answer, messages) = follow_up(first.response);
    for message in messages {
        sender
            .send(envelope(message))
            .await
            .context("send peer report")?;
    }
    drop(sender);
    // The scheduler ends the RPC after the terminal message.
    let _ = tokio::time::timeout(RPC_TIMEOUT, async {
        while let Ok(Some(_)) = responses.message().await {}
    })
    .await;
    Ok((latency, answer))
}

/// What a daemon sends after the first answer: started, one piece, finished.
fn follow_up(response: Option<Response>) -> (Answer, Vec<Request>) {
    let piece = |parent_id: Option<String>| Piece {
        number: 0,
        parent_id,
        offset: 0,
        length: CONTENT_LENGTH,
        digest: "crc32:00000000".into(),
        ..Default::default()
    };
    match response {
        Some(Response::NormalTaskResponse(normal)) => {
            let parent = normal.candidate_parents.first().map(|peer| peer.id.clone());
            (
                Answer::Parents,
                vec![
                    Request::DownloadPeerStartedRequest(DownloadPeerStartedRequest {}),
                    Request::DownloadPieceFinishedRequest(DownloadPieceFinishedRequest {
                        piece: Some(piece(parent)),
                    }),
                    Request::DownloadPeerFinishedRequest(DownloadPeerFinishedRequest {}),
                ],
            )
        }
        Some(Response::NeedBackToSourceResponse(_)) => (
            Answer::BackToSource,
            vec![
                Request::DownloadPeerBackToSourceStartedRequest(
                    DownloadPeerBackToSourceStartedRequest { description: None },
                ),
                Request::DownloadPieceBackToSourceFinishedRequest(
                    DownloadPieceBackToSourceFinishedRequest {
                        piece: Some(piece(None)),
                    },
                ),
                Request::DownloadPeerBackToSourceFinishedRequest(
                    DownloadPeerBackToSourceFinishedRequest {},
                ),
            ],
        ),
        _ => (
            Answer::Other,
            vec![Request::DownloadPeerFinishedRequest(
                DownloadPeerFinishedRequest {},
            )],
        ),
    }
}

fn report(
    args: &SchedulerArgs,
    phases: &[Phase],
    answers: &[Answer],
    memory: [procs::Memory; 3],
) -> (String, serde_json::Value) {
    let mut table = Table::new(&[
        "phase",
        "count",
        "wall s",
        "per s",
        "scheduler CPU s",
        "per scheduler CPU-s",
        "client CPU s",
        "p50 ms",
        "p99 ms",
        "max ms",
    ]);
    let mut json_phases = Vec::new();
    for phase in phases {
        let rate = stats::per_unit(phase.count as f64, phase.wall.as_secs_f64());
        let per_core = stats::per_unit(phase.count as f64, phase.scheduler_cpu);
        table.row(vec![
            phase.name.to_string(),
            phase.count.to_string(),
            fmt(phase.wall.as_secs_f64(), 2),
            fmt(rate, 0),
            fmt(phase.scheduler_cpu, 2),
            fmt(per_core, 0),
            fmt(phase.client_cpu, 2),
            fmt(phase.latency.p50 * 1000.0, 2),
            fmt(phase.latency.p99 * 1000.0, 2),
            fmt(phase.latency.max * 1000.0, 2),
        ]);
        json_phases.push(serde_json::json!({
            "phase": phase.name,
            "count": phase.count,
            "wall_s": phase.wall.as_secs_f64(),
            "per_s": rate,
            "scheduler_cpu_s": phase.scheduler_cpu,
            "per_scheduler_cpu_s": per_core,
            "client_cpu_s": phase.client_cpu,
            "latency_ms": phase.latency.to_json(1000.0),
        }));
    }
    let count = |kind: Answer| answers.iter().filter(|answer| **answer == kind).count();
    let (parents, back_to_source, other) = (
        count(Answer::Parents),
        count(Answer::BackToSource),
        count(Answer::Other),
    );
    let register = phases.last().expect("two phases are measured");
    let per_core = stats::per_unit(register.count as f64, register.scheduler_cpu);
    let p99_ms = register.latency.p99 * 1000.0;
    let mib = |memory: procs::Memory| fmt(stats::kib_to_mib(memory.rss_kib), 1);
    let text = format!(
        "scheduler: {} hosts, {} tasks, {} in flight over {} HTTP/2 channels\n\n{}\n\
         first answers: {parents} with parents, {back_to_source} back-to-source, {other} other\n\
         scheduler RSS: {} MiB idle, {} MiB after hosts, {} MiB at end (peak VmHWM {} MiB)\n\
         target >= {RATE_TARGET_PER_CORE} registrations per scheduler CPU-s: measured {} -> {}\n\
         target p99 <= {P99_TARGET_MS} ms: measured {} ms -> {}",
        args.hosts,
        args.tasks,
        args.concurrency,
        args.channels,
        table.render(),
        mib(memory[0]),
        mib(memory[1]),
        mib(memory[2]),
        fmt(stats::kib_to_mib(memory[2].hwm_kib), 1),
        fmt(per_core, 0),
        verdict(per_core >= RATE_TARGET_PER_CORE),
        fmt(p99_ms, 2),
        verdict(p99_ms <= P99_TARGET_MS),
    );
    let json = serde_json::json!({
        "bench": "scheduler",
        "hosts": args.hosts,
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "channels": args.channels,
        "phases": json_phases,
        "answers": {"parents": parents, "back_to_source": back_to_source, "other": other},
        "scheduler_rss_mib": {
            "idle": stats::kib_to_mib(memory[0].rss_kib),
            "after_hosts": stats::kib_to_mib(memory[1].rss_kib),
            "end": stats::kib_to_mib(memory[2].rss_kib),
            "peak_hwm": stats::kib_to_mib(memory[2].hwm_kib),
        },
        "targets": {"per_scheduler_cpu_s": RATE_TARGET_PER_CORE, "p99_ms": P99_TARGET_MS},
    });
    (text, json)
}
