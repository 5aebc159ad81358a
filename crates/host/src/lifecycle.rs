//! The kernel lifecycle as pure logic: states, events, transitions and the restart policy.
//! No I/O, no clocks read here (times are passed in), so every rule is unit-tested.

use std::time::{Duration, Instant};

/// Where a kernel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelState {
    /// Process launched, not yet answering `kernel_info_request`.
    Starting,
    /// Answering, not executing (from IOPub `status`).
    Idle,
    /// Executing a request (from IOPub `status`).
    Busy,
    /// Died or hung; a new process is being started.
    Restarting,
    /// Died and will not be restarted (restart limit reached, or start failed for good).
    Dead,
    /// Being shut down on request.
    ShuttingDown,
}

impl KernelState {
    /// The `execution_state` string of Jupyter Server's kernel model.
    pub fn execution_state(self) -> &'static str {
        match self {
            KernelState::Starting => "starting",
            KernelState::Idle => "idle",
            KernelState::Busy => "busy",
            KernelState::Restarting => "restarting",
            KernelState::Dead => "dead",
            KernelState::ShuttingDown => "terminating",
        }
    }

    /// Whether a process is expected to be running and answering.
    pub fn is_running(self) -> bool {
        matches!(self, KernelState::Idle | KernelState::Busy)
    }
}

/// Something that happened to a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A process was launched (first start or restart).
    Launched,
    /// It answered `kernel_info_request` with its key.
    Ready,
    /// IOPub `status` with this `execution_state`.
    Status(String),
    /// The process exited, or was found hung by the heartbeat and killed.
    Died,
    /// The restart policy decided to restart it.
    RestartScheduled,
    /// The restart policy gave up.
    GaveUp,
    /// A shutdown was requested.
    ShutdownRequested,
}

/// The state after `event` in state `state`. Transitions that make no sense (a `busy` status
/// from a kernel being shut down, say) leave the state unchanged.
pub fn next(state: KernelState, event: &Event) -> KernelState {
    use KernelState::*;
    match (state, event) {
        (ShuttingDown, _) => ShuttingDown,
        (_, Event::ShutdownRequested) => ShuttingDown,
        (Dead, Event::Launched) => Starting,
        (Dead, _) => Dead,
        (_, Event::Launched) => Starting,
        (Starting | Restarting, Event::Ready) => Idle,
        (s, Event::Ready) => s,
        (Starting | Idle | Busy, Event::Status(st)) => match st.as_str() {
            "busy" => Busy,
            "idle" => Idle,
            // "starting" is what a fresh kernel publishes before it is ready.
            _ => state,
        },
        (s, Event::Status(_)) => s,
        (_, Event::Died) => Restarting,
        (_, Event::RestartScheduled) => Restarting,
        (_, Event::GaveUp) => Dead,
    }
}

/// jupyter_client's restarter policy: a kernel that dies is restarted, up to `limit` times in a
/// row; a kernel that stayed up for `stable_after` resets the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Whether dead kernels are restarted at all.
    pub enabled: bool,
    /// Consecutive restarts allowed (jupyter_client: 5).
    pub limit: u32,
    /// A kernel alive this long counts as a stable start (jupyter_client: 10 s).
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            enabled: true,
            limit: 5,
            stable_after: Duration::from_secs(10),
        }
    }
}

/// What to do about a death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a new process; this is restart number `attempt` in a row.
    Restart {
        /// 1-based attempt number.
        attempt: u32,
    },
    /// Give up: the kernel is dead.
    GiveUp,
}

/// Counts consecutive unstable restarts for one kernel.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    consecutive: u32,
}

impl RestartTracker {
    /// Decides about a death of a process started at `started`, noticed at `now`.
    pub fn on_death(&mut self, policy: &RestartPolicy, started: Instant, now: Instant) -> Decision {
        if !policy.enabled {
            return Decision::GiveUp;
        }
        if now.saturating_duration_since(started) >= policy.stable_after {
            self.consecutive = 0;
        }
        if self.consecutive >= policy.limit {
            return Decision::GiveUp;
        }
        self.consecutive += 1;
        Decision::Restart {
            attempt: self.consecutive,
        }
    }

    /// Restarts in a row so far.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// Forgets past failures (after an explicit restart by a user).
    pub fn reset(&mut self) {
        self.consecutive = 0;
    }
}

/// Idle culling settings (off by default, as in jupyter_server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CullPolicy {
    /// Kernels idle longer than this are shut down; `None` disables culling.
    pub idle_timeout: Option<Duration>,
    /// How often to look.
    pub interval: Duration,
    /// Cull busy kernels too.
    pub cull_busy: bool,
    /// Cull kernels with WebSocket connections too.
    pub cull_connected: bool,
}

/// Whether a kernel in `state`, inactive for `inactive`, with `connections` open, is culled.
pub fn should_cull(
    policy: &CullPolicy,
    state: KernelState,
    inactive: Duration,
    connections: usize,
) -> bool {
    let Some(timeout) = policy.idle_timeout else {
        return false;
    };
    if inactive < timeout {
        return false;
    }
    if connections > 0 && !policy.cull_connected {
        return false;
    }
    match state {
        KernelState::Idle | KernelState::Dead => true,
        KernelState::Busy => policy.cull_busy,
        KernelState::Starting | KernelState::Restarting | KernelState::ShuttingDown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ready_busy_idle() {
        let mut s = KernelState::Starting;
        s = next(s, &Event::Status("busy".into()));
        assert_eq!(s, KernelState::Busy);
        s = next(s, &Event::Ready);
        assert_eq!(s, KernelState::Busy);
        s = next(s, &Event::Status("idle".into()));
        assert_eq!(s, KernelState::Idle);
        s = next(s, &Event::Status("starting".into()));
        assert_eq!(s, KernelState::Idle);
    }

    #[test]
    fn death_restart_and_give_up() {
        let s = next(KernelState::Busy, &Event::Died);
        assert_eq!(s, KernelState::Restarting);
        assert_eq!(
            next(s, &Event::Status("busy".into())),
            KernelState::Restarting
        );
        let s2 = next(s, &Event::Launched);
        assert_eq!(next(s2, &Event::Ready), KernelState::Idle);
        let dead = next(s, &Event::GaveUp);
        assert_eq!(dead, KernelState::Dead);
        assert_eq!(next(dead, &Event::Status("idle".into())), KernelState::Dead);
        assert_eq!(next(dead, &Event::Launched), KernelState::Starting);
    }

    #[test]
    fn shutting_down_is_final() {
        let s = next(KernelState::Idle, &Event::ShutdownRequested);
        for e in [
            Event::Ready,
            Event::Died,
            Event::Launched,
            Event::Status("idle".into()),
            Event::GaveUp,
        ] {
            assert_eq!(next(s, &e), KernelState::ShuttingDown);
        }
    }

    #[test]
    fn restart_limit_in_a_row() {
        let policy = RestartPolicy::default();
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        for i in 1..=5 {
            assert_eq!(
                t.on_death(&policy, t0, t0),
                Decision::Restart { attempt: i }
            );
        }
        assert_eq!(t.on_death(&policy, t0, t0), Decision::GiveUp);
    }

    #[test]
    fn stable_run_resets_count() {
        let policy = RestartPolicy::default();
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            t.on_death(&policy, t0, t0);
        }
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            t.on_death(&policy, t0, later),
            Decision::Restart { attempt: 1 }
        );
    }

    #[test]
    fn disabled_policy_gives_up() {
        let policy = RestartPolicy {
            enabled: false,
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        assert_eq!(
            RestartTracker::default().on_death(&policy, t0, t0),
            Decision::GiveUp
        );
    }

    #[test]
    fn culling_rules() {
        let off = CullPolicy::default();
        assert!(!should_cull(
            &off,
            KernelState::Idle,
            Duration::from_secs(1_000_000),
            0
        ));
        let p = CullPolicy {
            idle_timeout: Some(Duration::from_secs(60)),
            interval: Duration::from_secs(5),
            ..off
        };
        assert!(!should_cull(
            &p,
            KernelState::Idle,
            Duration::from_secs(59),
            0
        ));
        assert!(should_cull(
            &p,
            KernelState::Idle,
            Duration::from_secs(61),
            0
        ));
        assert!(!should_cull(
            &p,
            KernelState::Idle,
            Duration::from_secs(61),
            1
        ));
        assert!(!should_cull(
            &p,
            KernelState::Busy,
            Duration::from_secs(61),
            0
        ));
        let all = CullPolicy {
            cull_busy: true,
            cull_connected: true,
            ..p
        };
        assert!(should_cull(
            &all,
            KernelState::Busy,
            Duration::from_secs(61),
            3
        ));
        assert!(!should_cull(
            &all,
            KernelState::Starting,
            Duration::from_secs(61),
            0
        ));
    }
}
