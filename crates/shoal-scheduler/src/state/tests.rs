use std::str::FromStr;
use std::time::Duration;

use shoal_protocol::common::{self, Download, Network};
use shoal_protocol::scheduler::announce_peer_response::Response;
use shoal_protocol::scheduler::AnnouncePeerResponse;

use super::*;
use crate::scheduling::{Policy, ScheduleMode};

const TASK: &str = "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0";

fn policy() -> Policy {
    Policy {
        candidate_parent_limit: 4,
        max_back_to_source_peers: 2,
        seed_trigger: true,
    }
}

fn host(id: &str, ip: &str, seed: bool) -> common::Host {
    common::Host {
        id: id.into(),
        r#type: u32::from(seed),
        hostname: id.into(),
        ip: ip.into(),
        port: 4000,
        download_port: 4000,
        network: Some(Network {
            idc: Some("idc".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task_id() -> TaskId {
    TaskId::from_str(TASK).unwrap()
}

fn register(state: &mut State, peer: &str, host: &str, download: Download) -> FirstAnswer {
    let registration = Registration::new(
        PeerId::from_wire(peer),
        task_id(),
        HostId::from_wire(host),
        &download,
    );
    state.register_peer(registration)
}

fn sized() -> Download {
    Download {
        actual_content_length: Some(100),
        actual_piece_length: Some(10),
        actual_piece_count: Some(10),
        ..Default::default()
    }
}

fn step(state: &mut State, peer: &str, mode: ScheduleMode, deadline_passed: bool) -> Step {
    state.schedule_step(&PeerId::from_wire(peer), &policy(), mode, deadline_passed)
}

fn parents_of(step: &Step) -> Vec<String> {
    match step {
        Step::Respond(AnnouncePeerResponse {
            response: Some(Response::NormalTaskResponse(normal)),
        }) => normal
            .candidate_parents
            .iter()
            .map(|peer| peer.id.clone())
            .collect(),
        other => panic!("expected a normal answer, got {other:?}"),
    }
}

fn is_back_to_source(step: &Step) -> bool {
    matches!(
        step,
        Step::Respond(AnnouncePeerResponse {
            response: Some(Response::NeedBackToSourceResponse(_))
        })
    )
}

/// Two announced normal hosts, no seed.
fn two_hosts() -> State {
    let mut state = State::default();
    let now = Instant::now();
    state.announce_host(host("host-a", "10.0.0.1", false), now);
    state.announce_host(host("host-b", "10.0.0.2", false), now);
    state.announce_host(host("host-c", "10.0.0.3", false), now);
    state
}

#[test]
fn announce_host_is_idempotent() {
    let mut state = State::default();
    let now = Instant::now();
    assert!(state.announce_host(host("host-a", "10.0.0.1", false), now));
    assert!(!state.announce_host(host("host-a", "10.0.0.1", false), now));
    assert_eq!(state.list_hosts(None).len(), 1);
}

#[test]
fn first_peer_goes_to_source_and_second_pipelines_from_it() {
    let mut state = two_hosts();
    assert_eq!(
        register(&mut state, "a", "host-a", sized()),
        FirstAnswer::Schedule
    );
    assert!(is_back_to_source(&step(
        &mut state,
        "a",
        ScheduleMode::Register,
        false
    )));
    register(&mut state, "b", "host-b", sized());
    let answer = step(&mut state, "b", ScheduleMode::Register, false);
    assert_eq!(parents_of(&answer), ["a"]);
    let Step::Respond(AnnouncePeerResponse {
        response: Some(Response::NormalTaskResponse(normal)),
    }) = answer
    else {
        unreachable!()
    };
    let parent_host = normal.candidate_parents[0].host.as_ref().unwrap();
    assert_eq!(parent_host.ip, "10.0.0.1");
    assert_eq!(parent_host.port, 4000);
    assert!(parent_host.network.is_some());
}

#[test]
fn metadata_only_and_empty_registrations_answer_at_once() {
    let mut state = two_hosts();
    let metadata = Download {
        metadata_only: true,
        ..sized()
    };
    assert_eq!(
        register(&mut state, "holder", "host-a", metadata),
        FirstAnswer::MetadataOnly
    );
    let empty = Download {
        actual_content_length: Some(0),
        ..Default::default()
    };
    assert_eq!(
        register(&mut state, "empty", "host-b", empty),
        FirstAnswer::Empty
    );
    register(&mut state, "child", "host-c", sized());
    let parents = parents_of(&step(&mut state, "child", ScheduleMode::Register, false));
    assert_eq!(
        parents[0], "holder",
        "a metadata-only peer is a complete holder"
    );
}

#[test]
fn budget_limits_back_to_source_peers_on_unusable_parents() {
    // Peers on never-announced hosts cannot be parents, so each needs the origin.
    let mut state = State::default();
    for peer in ["a", "b", "c"] {
        register(&mut state, peer, &format!("unknown-{peer}"), sized());
    }
    assert!(is_back_to_source(&step(
        &mut state,
        "a",
        ScheduleMode::Register,
        false
    )));
    assert!(is_back_to_source(&step(
        &mut state,
        "b",
        ScheduleMode::Register,
        false
    )));
    assert!(matches!(
        step(&mut state, "c", ScheduleMode::Register, false),
        Step::Wait(_)
    ));
    assert!(is_back_to_source(&step(
        &mut state,
        "c",
        ScheduleMode::Register,
        true
    )));
}

#[test]
fn finished_origin_peer_frees_budget() {
    let mut state = State::default();
    for peer in ["a", "b", "c"] {
        register(&mut state, peer, &format!("unknown-{peer}"), sized());
    }
    step(&mut state, "a", ScheduleMode::Register, false);
    step(&mut state, "b", ScheduleMode::Register, false);
    let Step::Wait(changes) = step(&mut state, "c", ScheduleMode::Register, false) else {
        panic!("expected to wait");
    };
    state.peer_finished(
        &PeerId::from_wire("a"),
        PeerOutcome::BackToSourceFinished,
        Instant::now(),
    );
    assert!(
        changes.has_changed().unwrap(),
        "a finished peer wakes waiters"
    );
    assert!(is_back_to_source(&step(
        &mut state,
        "c",
        ScheduleMode::Register,
        false
    )));
}

#[test]
fn permanent_piece_failure_bans_the_parent_for_the_task() {
    let mut state = two_hosts();
    register(&mut state, "a", "host-a", sized());
    step(&mut state, "a", ScheduleMode::Register, false);
    register(&mut state, "b", "host-b", sized());
    register(&mut state, "c", "host-c", sized());
    assert_eq!(
        parents_of(&step(&mut state, "b", ScheduleMode::Register, false)),
        ["a"]
    );
    state.piece_failed(&PeerId::from_wire("b"), PeerId::from_wire("a"), false);
    let answer = step(&mut state, "c", ScheduleMode::Register, false);
    assert_eq!(
        parents_of(&answer),
        ["b"],
        "the banned parent is never offered again"
    );
}

#[test]
fn temporary_piece_failure_blocks_the_parent_for_that_child_only() {
    let mut state = two_hosts();
    register(&mut state, "a", "host-a", sized());
    step(&mut state, "a", ScheduleMode::Register, false);
    register(&mut state, "b", "host-b", sized());
    state.piece_failed(&PeerId::from_wire("b"), PeerId::from_wire("a"), true);
    assert!(is_back_to_source(&step(
        &mut state,
        "b",
        ScheduleMode::Reschedule,
        false
    )));
    register(&mut state, "c", "host-c", sized());
    let parents = parents_of(&step(&mut state, "c", ScheduleMode::Register, false));
    assert!(parents.contains(&"a".to_string()));
}

#[test]
fn piece_reports_record_parent_edges_against_cycles() {
    let mut state = two_hosts();
    register(&mut state, "a", "host-a", sized());
    register(&mut state, "b", "host-b", sized());
    state.peer_started(&PeerId::from_wire("a"), true);
    state.peer_started(&PeerId::from_wire("b"), false);
    let piece = common::Piece {
        number: 0,
        parent_id: Some("a".into()),
        ..Default::default()
    };
    state.piece_finished(&PeerId::from_wire("b"), &piece, false);
    // a rescheduled: b downloads from a, so b must not become a's parent.
    assert!(is_back_to_source(&step(
        &mut state,
        "a",
        ScheduleMode::Reschedule,
        false
    )));
}

#[test]
fn held_pieces_raise_a_parent_in_the_ranking() {
    let mut state = two_hosts();
    register(&mut state, "a", "host-a", sized());
    register(&mut state, "b", "host-b", sized());
    state.peer_started(&PeerId::from_wire("a"), false);
    state.peer_started(&PeerId::from_wire("b"), false);
    for number in 0..5 {
        let piece = common::Piece {
            number,
            ..Default::default()
        };
        state.piece_finished(&PeerId::from_wire("b"), &piece, true);
    }
    register(&mut state, "c", "host-c", sized());
    assert_eq!(
        parents_of(&step(&mut state, "c", ScheduleMode::Register, false)),
        ["b", "a"]
    );
}

#[test]
fn cold_task_with_a_seed_triggers_it_once() {
    let mut state = two_hosts();
    state.announce_host(host("seed", "10.0.0.9", true), Instant::now());
    register(&mut state, "a", "host-a", sized());
    let Step::TriggerSeed(target) = step(&mut state, "a", ScheduleMode::Register, false) else {
        panic!("expected a seed trigger");
    };
    assert_eq!(target.addr, "10.0.0.9:4000".parse().unwrap());
    assert!(matches!(
        step(&mut state, "a", ScheduleMode::Register, false),
        Step::Wait(_)
    ));
    register(
        &mut state,
        "s",
        "seed",
        Download {
            need_back_to_source: true,
            ..sized()
        },
    );
    assert!(is_back_to_source(&step(
        &mut state,
        "s",
        ScheduleMode::Register,
        false
    )));
    assert_eq!(
        parents_of(&step(&mut state, "a", ScheduleMode::Register, false)),
        ["s"]
    );
}

#[test]
fn failed_seed_trigger_sends_children_to_the_origin() {
    let mut state = two_hosts();
    state.announce_host(host("seed", "10.0.0.9", true), Instant::now());
    register(&mut state, "a", "host-a", sized());
    assert!(matches!(
        step(&mut state, "a", ScheduleMode::Register, false),
        Step::TriggerSeed(_)
    ));
    state.seed_trigger_finished(&task_id(), false);
    assert!(is_back_to_source(&step(
        &mut state,
        "a",
        ScheduleMode::Register,
        false
    )));
}

#[test]
fn delete_task_on_host_removes_only_that_hosts_peers() {
    let mut state = two_hosts();
    register(&mut state, "a", "host-a", sized());
    register(&mut state, "b", "host-b", sized());
    assert_eq!(
        state.delete_task_on_host(&task_id(), &HostId::from_wire("host-a")),
        1
    );
    assert!(state.peer_message(&PeerId::from_wire("a")).is_none());
    assert_eq!(state.task_message(&task_id()).unwrap().peer_count, 1);
}

#[test]
fn delete_host_removes_its_peers() {
    let mut state = two_hosts();
    register(&mut state, "a", "host-a", sized());
    assert!(state.delete_host(&HostId::from_wire("host-a")));
    assert!(state.peer_message(&PeerId::from_wire("a")).is_none());
    assert_eq!(state.list_hosts(None).len(), 2);
}

#[test]
fn stat_messages_describe_task_and_peer() {
    let mut state = two_hosts();
    register(&mut state, "a", "host-a", sized());
    step(&mut state, "a", ScheduleMode::Register, false);
    let task = state.task_message(&task_id()).unwrap();
    assert_eq!(task.id, TASK);
    assert_eq!(task.content_length, 100);
    assert_eq!(task.piece_count, 10);
    assert_eq!(task.state, "Running");
    assert!(task.has_available_peer);
    let peer = state.peer_message(&PeerId::from_wire("a")).unwrap();
    assert_eq!(peer.state, "BackToSource");
    assert_eq!(peer.host.unwrap().id, "host-a");
}

#[tokio::test(start_paused = true)]
async fn garbage_collection_expires_hosts_peers_and_tasks() {
    let host_ttl = Duration::from_secs(60);
    let peer_ttl = Duration::from_secs(30);
    let mut state = two_hosts();
    register(&mut state, "a", "host-a", sized());
    register(&mut state, "b", "unknown", sized());
    state.peer_finished(&PeerId::from_wire("b"), PeerOutcome::Failed, Instant::now());
    tokio::time::advance(Duration::from_secs(31)).await;
    let report = state.collect_garbage(Instant::now(), host_ttl, peer_ttl);
    assert_eq!(
        report,
        gc::GcReport {
            hosts: 0,
            peers: 1,
            tasks: 0
        }
    );
    state.announce_host(host("host-b", "10.0.0.2", false), Instant::now());
    tokio::time::advance(Duration::from_secs(30)).await;
    let report = state.collect_garbage(Instant::now(), host_ttl, peer_ttl);
    assert_eq!(
        report,
        gc::GcReport {
            hosts: 2,
            peers: 0,
            tasks: 1
        }
    );
    assert!(state.task_message(&task_id()).is_none());
    assert_eq!(state.list_hosts(None).len(), 1);
}
