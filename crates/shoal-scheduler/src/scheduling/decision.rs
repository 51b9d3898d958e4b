//! The back-to-source policy: what to answer a child when parent selection is done.
//!
//! The origin is the expensive resource. A cold task sends one peer (ideally a seed) to the
//! origin and lets every later peer pipeline from it; `max_back_to_source_peers` bounds how many
//! peers of a task pull from the origin at once. Waiting is bounded by `schedule_wait`: a child
//! that found nothing by then goes to the origin anyway, past the budget, because a stalled
//! download is worse than one more origin request. Peers with `disable_back_to_source` are never
//! sent to the origin; they give up with an error instead.

/// Why a schedule is being computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScheduleMode {
    /// The first answer after a registration.
    Register,
    /// The child's parents did not deliver; it asked for new ones.
    Reschedule,
}

/// Whether a seed can (still) bring the task in from the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeedStatus {
    /// No usable seed, triggering is off, the child is itself a seed, or the trigger finished.
    Unavailable,
    /// A seed exists and has not been triggered for this task yet.
    Available,
    /// The seed was triggered and should register soon.
    Pending,
    /// The trigger call failed.
    Failed,
}

/// Facts about one child at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecisionInput {
    /// Parent selection found at least one parent.
    pub(crate) has_parents: bool,
    pub(crate) mode: ScheduleMode,
    /// The child's host announced itself as a seed (`Host.type >= 1`).
    pub(crate) from_seed_host: bool,
    pub(crate) need_back_to_source: bool,
    pub(crate) disable_back_to_source: bool,
    /// Peers of the task downloading from the origin right now (seeds included).
    pub(crate) back_to_source_active: usize,
    pub(crate) back_to_source_limit: usize,
    pub(crate) seed: SeedStatus,
    /// `schedule_wait` has elapsed for this request.
    pub(crate) deadline_passed: bool,
}

/// What to do with the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Answer with the selected parents.
    Parents,
    /// Answer NeedBackToSource.
    BackToSource(BackToSourceReason),
    /// Trigger the seed for this task, then wait for a parent.
    TriggerSeed,
    /// Wait for the task to change (a registration, a piece, a failure), then decide again.
    Wait,
    /// Nothing can serve this child and it may not use the origin: end with an error.
    GiveUp,
}

/// Why a child is sent to the origin; sent to the client as the response description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackToSourceReason {
    /// The registration asked for it (a triggered seed).
    Requested,
    /// Seeds fetch from the origin themselves.
    SeedHost,
    /// The task has origin budget left and no seed to trigger.
    WithinBudget,
    /// A reschedule found no parent left.
    NoParentLeft,
    /// The seed trigger failed.
    SeedFailed,
    /// No parent appeared within `schedule_wait`.
    Stalled,
}

impl BackToSourceReason {
    /// The human-readable description for `NeedBackToSourceResponse`.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Self::Requested => "back-to-source requested by the download",
            Self::SeedHost => "seed peers download from the source",
            Self::WithinBudget => "no parent available; task within its back-to-source budget",
            Self::NoParentLeft => "no candidate parent left after reschedule",
            Self::SeedFailed => "seed peer could not be triggered",
            Self::Stalled => "no parent appeared in time",
        }
    }
}

/// The back-to-source policy; see the module docs.
pub(crate) fn decide(input: &DecisionInput) -> Decision {
    if input.disable_back_to_source {
        return decide_without_origin(input);
    }
    if input.need_back_to_source {
        return Decision::BackToSource(BackToSourceReason::Requested);
    }
    if input.from_seed_host {
        return Decision::BackToSource(BackToSourceReason::SeedHost);
    }
    if input.has_parents {
        return Decision::Parents;
    }
    if input.mode == ScheduleMode::Reschedule {
        return Decision::BackToSource(BackToSourceReason::NoParentLeft);
    }
    if input.deadline_passed {
        return Decision::BackToSource(BackToSourceReason::Stalled);
    }
    match input.seed {
        SeedStatus::Available => Decision::TriggerSeed,
        SeedStatus::Pending => Decision::Wait,
        SeedStatus::Failed => Decision::BackToSource(BackToSourceReason::SeedFailed),
        SeedStatus::Unavailable if input.back_to_source_active < input.back_to_source_limit => {
            Decision::BackToSource(BackToSourceReason::WithinBudget)
        }
        SeedStatus::Unavailable => Decision::Wait,
    }
}

/// A peer that must never be told to use the origin: parents, a seed, or patience.
fn decide_without_origin(input: &DecisionInput) -> Decision {
    if input.has_parents {
        return Decision::Parents;
    }
    if input.deadline_passed {
        return Decision::GiveUp;
    }
    if input.seed == SeedStatus::Available {
        return Decision::TriggerSeed;
    }
    Decision::Wait
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cold() -> DecisionInput {
        DecisionInput {
            has_parents: false,
            mode: ScheduleMode::Register,
            from_seed_host: false,
            need_back_to_source: false,
            disable_back_to_source: false,
            back_to_source_active: 0,
            back_to_source_limit: 2,
            seed: SeedStatus::Unavailable,
            deadline_passed: false,
        }
    }

    #[test]
    fn first_peer_without_seed_goes_to_the_origin() {
        let decision = decide(&cold());
        assert_eq!(
            decision,
            Decision::BackToSource(BackToSourceReason::WithinBudget)
        );
    }

    #[test]
    fn budget_exhausted_waits_then_falls_back() {
        let mut input = DecisionInput {
            back_to_source_active: 2,
            ..cold()
        };
        assert_eq!(decide(&input), Decision::Wait);
        input.deadline_passed = true;
        assert_eq!(
            decide(&input),
            Decision::BackToSource(BackToSourceReason::Stalled)
        );
    }

    #[test]
    fn parents_win_over_the_origin() {
        let input = DecisionInput {
            has_parents: true,
            ..cold()
        };
        assert_eq!(decide(&input), Decision::Parents);
    }

    #[test]
    fn seeds_and_requested_registrations_go_to_the_origin() {
        let seed = DecisionInput {
            from_seed_host: true,
            has_parents: true,
            ..cold()
        };
        assert_eq!(
            decide(&seed),
            Decision::BackToSource(BackToSourceReason::SeedHost)
        );
        let requested = DecisionInput {
            need_back_to_source: true,
            back_to_source_active: 9,
            ..cold()
        };
        assert_eq!(
            decide(&requested),
            Decision::BackToSource(BackToSourceReason::Requested)
        );
    }

    #[test]
    fn seed_is_triggered_then_awaited() {
        let available = DecisionInput {
            seed: SeedStatus::Available,
            ..cold()
        };
        assert_eq!(decide(&available), Decision::TriggerSeed);
        let pending = DecisionInput {
            seed: SeedStatus::Pending,
            ..cold()
        };
        assert_eq!(decide(&pending), Decision::Wait);
        let failed = DecisionInput {
            seed: SeedStatus::Failed,
            back_to_source_active: 5,
            ..cold()
        };
        assert_eq!(
            decide(&failed),
            Decision::BackToSource(BackToSourceReason::SeedFailed)
        );
    }

    #[test]
    fn reschedule_without_parents_goes_to_the_origin() {
        let input = DecisionInput {
            mode: ScheduleMode::Reschedule,
            back_to_source_active: 9,
            ..cold()
        };
        assert_eq!(
            decide(&input),
            Decision::BackToSource(BackToSourceReason::NoParentLeft)
        );
    }

    #[test]
    fn disabled_back_to_source_never_goes_to_the_origin() {
        let base = DecisionInput {
            disable_back_to_source: true,
            ..cold()
        };
        for need_back_to_source in [false, true] {
            for from_seed_host in [false, true] {
                for mode in [ScheduleMode::Register, ScheduleMode::Reschedule] {
                    for seed in [
                        SeedStatus::Unavailable,
                        SeedStatus::Available,
                        SeedStatus::Pending,
                        SeedStatus::Failed,
                    ] {
                        for deadline_passed in [false, true] {
                            let input = DecisionInput {
                                need_back_to_source,
                                from_seed_host,
                                mode,
                                seed,
                                deadline_passed,
                                ..base
                            };
                            assert!(!matches!(decide(&input), Decision::BackToSource(_)));
                        }
                    }
                }
            }
        }
        assert_eq!(decide(&base), Decision::Wait);
        let late = DecisionInput {
            deadline_passed: true,
            ..base
        };
        assert_eq!(decide(&late), Decision::GiveUp);
        let seeded = DecisionInput {
            seed: SeedStatus::Available,
            ..base
        };
        assert_eq!(decide(&seeded), Decision::TriggerSeed);
    }

    #[test]
    fn decision_after_the_deadline_never_waits() {
        for seed in [
            SeedStatus::Unavailable,
            SeedStatus::Available,
            SeedStatus::Pending,
        ] {
            for disable_back_to_source in [false, true] {
                let input = DecisionInput {
                    seed,
                    disable_back_to_source,
                    deadline_passed: true,
                    back_to_source_active: 9,
                    ..cold()
                };
                let decision = decide(&input);
                assert!(!matches!(decision, Decision::Wait | Decision::TriggerSeed));
            }
        }
    }
}
