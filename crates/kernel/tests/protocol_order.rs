//! The order a client sees a request's messages in, now that busy and execute_input are held
//! back and sent with the outputs: busy, execute_input, outputs, execute_result, idle on IOPub;
//! a long cell still shows busy while it runs; and what the shell loop does while it waits.

use std::time::{Duration, Instant};

use kernelgate_kernel::rhai::{RhaiKernel, RhaiLimits};
use kernelgate_kernel::{BoundKernel, Flags, KernelOptions};
use kernelgate_wire::{
    Channel, ConnectionInfo, Message, ReplayConfig, Session, SessionConfig, Transport,
};
use kernelgate_zmq::{poll, Context, PollEvents, PollItem, Socket, SocketType};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Client {
    session: Session,
    shell: Socket,
    iopub: Socket,
}

impl Client {
    fn connect(ctx: &Context, info: &ConnectionInfo) -> Result<Client, Box<dyn std::error::Error>> {
        let session = Session::new(info.signer(false)?, SessionConfig::default());
        let shell = ctx.socket(SocketType::Dealer)?;
        shell.connect(&info.endpoint(Channel::Shell))?;
        let iopub = ctx.socket(SocketType::Sub)?;
        iopub.subscribe(b"")?;
        iopub.connect(&info.endpoint(Channel::IoPub))?;
        Ok(Client {
            session,
            shell,
            iopub,
        })
    }

    fn send(&self, msg_type: &str, content: Value) -> Result<String, Box<dyn std::error::Error>> {
        let msg = self.session.message(msg_type, &content, None)?;
        self.shell
            .send_multipart(&self.session.encode(&msg)?, false)?;
        Ok(msg.header.msg_id)
    }

    /// The next message on `socket` within `timeout`, verified.
    fn recv(socket: &Socket, session: &Session, timeout: Duration) -> Option<Message> {
        let mut items = [PollItem::new(socket, PollEvents::READABLE)];
        match poll(&mut items, Some(timeout)) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
        let frames = socket.recv_multipart(true).ok()?;
        session.receive(frames).ok().map(|m| m.into_inner())
    }

    /// IOPub messages of request `id` until its idle: (msg_type, execution_state or "").
    fn iopub_until_idle(&self, id: &str) -> Vec<(String, String)> {
        self.iopub_until_idle_within(id, Duration::from_secs(20))
    }

    fn reply(&self, id: &str, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(m) = Self::recv(&self.shell, &self.session, Duration::from_millis(100)) {
                if m.parent_msg_id() == id {
                    return Some(m);
                }
            }
        }
        None
    }
}

type KernelThread = std::thread::JoinHandle<Result<(), String>>;

/// Binds a built-in kernel with `options` and runs it on a thread of its own: its connection
/// info, the flags that shut it down, and the thread.
fn start_kernel(
    ctx: &Context,
    options: KernelOptions,
) -> Result<(ConnectionInfo, Flags, KernelThread), Box<dyn std::error::Error>> {
    Ok(run_kernel(BoundKernel::bind(ctx, options)?))
}

/// Runs a bound kernel on a thread of its own, as [`start_kernel`] does.
fn run_kernel(bound: BoundKernel) -> (ConnectionInfo, Flags, KernelThread) {
    let info = bound.connection_info().clone();
    let flags = Flags::default();
    let run_flags = flags.clone();
    let kernel = std::thread::spawn(move || {
        bound
            .run(RhaiKernel::new(RhaiLimits::default()), run_flags)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    (info, flags, kernel)
}

fn execute(code: &str) -> Value {
    json!({"code": code, "silent": false, "store_history": true, "user_expressions": {},
        "allow_stdin": false, "stop_on_error": true})
}

#[test]
fn busy_input_outputs_result_idle_in_order() -> TestResult {
    let ctx = Context::new()?;
    let info = ConnectionInfo::generate(Transport::Tcp, "127.0.0.1")?;
    let (info, flags, kernel) = start_kernel(&ctx, KernelOptions::new(info))?;
    let client = Client::connect(&ctx, &info)?;

    // Until the subscription has joined: kernel_info until its idle arrives.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let id = client.send("kernel_info_request", json!({}))?;
        client
            .reply(&id, Duration::from_secs(5))
            .ok_or("no kernel_info_reply")?;
        let seen = client.iopub_until_idle_within(&id, Duration::from_millis(300));
        if !seen.is_empty() {
            assert_eq!(
                seen,
                [
                    ("status".into(), "busy".into()),
                    ("status".into(), "idle".into())
                ]
            );
            break;
        }
        assert!(Instant::now() < deadline, "IOPub never delivered");
    }

    let id = client.send("execute_request", execute("print(\"hi\"); 40 + 2"))?;
    let reply = client
        .reply(&id, Duration::from_secs(20))
        .ok_or("no execute_reply")?;
    assert_eq!(reply.content.get("status"), Some(&json!("ok")));
    let types: Vec<String> = client
        .iopub_until_idle(&id)
        .into_iter()
        .map(|(t, s)| if s.is_empty() { t } else { s })
        .collect();
    assert_eq!(
        types,
        ["busy", "execute_input", "stream", "execute_result", "idle"]
    );

    // A long cell: busy arrives while it still runs, long before the reply.
    let id = client.send(
        "execute_request",
        execute("let x = 0; for i in 0..2000000 { x += i; } x"),
    )?;
    let first = loop {
        let m = Client::recv(&client.iopub, &client.session, Duration::from_secs(20))
            .ok_or("nothing on IOPub")?;
        if m.parent_msg_id() == id {
            break m;
        }
    };
    assert_eq!(first.content.get("execution_state"), Some(&json!("busy")));
    assert!(
        client.reply(&id, Duration::from_millis(1)).is_none(),
        "the reply came with busy: busy was held until the end"
    );
    let reply = client
        .reply(&id, Duration::from_secs(120))
        .ok_or("no execute_reply")?;
    assert_eq!(reply.content.get("status"), Some(&json!("ok")));

    flags.request_shutdown();
    kernel.join().map_err(|_| "kernel thread panicked")??;
    Ok(())
}

impl Client {
    /// Like [`Client::iopub_until_idle`], giving up after `timeout` (empty if nothing came).
    fn iopub_until_idle_within(&self, id: &str, timeout: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Some(m) = Self::recv(&self.iopub, &self.session, Duration::from_millis(20)) else {
                continue;
            };
            if m.parent_msg_id() != id {
                continue;
            }
            let state = m
                .content
                .get("execution_state")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let idle = state == "idle";
            seen.push((m.msg_type().to_owned(), state));
            if idle {
                break;
            }
        }
        seen
    }
}

static IDLE_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_idle() {
    IDLE_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn idle_calls() -> usize {
    IDLE_CALLS.load(std::sync::atomic::Ordering::SeqCst)
}

/// `when_idle` runs once per idle spell: not before a request was served, not while requests
/// keep coming, once about a second after the last one, and not again until another is served.
#[test]
fn when_idle_runs_once_per_idle_spell() -> TestResult {
    let ctx = Context::new()?;
    let info = ConnectionInfo::generate(Transport::Tcp, "127.0.0.1")?;
    let mut options = KernelOptions::new(info);
    options.when_idle = Some(count_idle);
    let (info, flags, kernel) = start_kernel(&ctx, options)?;
    let client = Client::connect(&ctx, &info)?;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(idle_calls(), 0, "ran before any request was served");

    // Requests closer together than IDLE_AFTER: no idle spell between them.
    for _ in 0..4 {
        let id = client.send("kernel_info_request", json!({}))?;
        client
            .reply(&id, Duration::from_secs(5))
            .ok_or("no kernel_info_reply")?;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(idle_calls(), 0, "ran while requests kept coming");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(idle_calls(), 1, "did not run once after the last request");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(idle_calls(), 1, "ran again without a request");

    flags.request_shutdown();
    kernel.join().map_err(|_| "kernel thread panicked")??;
    Ok(())
}

/// "Run all" sends every cell at once; a cell that runs longer than the replay window must not
/// make the kernel refuse the ones queued behind it as stale: freshness is judged by when a
/// request reached the kernel's queue, not by when the kernel got around to reading it.
#[test]
fn requests_queued_behind_a_cell_longer_than_the_window_are_served() -> TestResult {
    let ctx = Context::new()?;
    let info = ConnectionInfo::generate(Transport::Tcp, "127.0.0.1")?;
    let mut options = KernelOptions::new(info);
    let replay = options.session.replay.get_or_insert_with(Default::default);
    replay.window = Duration::from_millis(300);
    replay.clock_skew = Duration::from_millis(100);
    let (info, flags, kernel) = start_kernel(&ctx, options)?;
    let client = Client::connect(&ctx, &info)?;

    let started = Instant::now();
    let long = client.send(
        "execute_request",
        execute("let x = 0; for i in 0..3000000 { x += i; } x"),
    )?;
    let queued = client.send("execute_request", execute("1 + 1"))?;
    let long_reply = client
        .reply(&long, Duration::from_secs(120))
        .ok_or("no execute_reply for the long cell")?;
    assert_eq!(long_reply.content.get("status"), Some(&json!("ok")));
    assert!(
        started.elapsed() > Duration::from_millis(600),
        "the long cell took {:?}, not longer than the window: the test proves nothing",
        started.elapsed()
    );
    let queued_reply = client
        .reply(&queued, Duration::from_secs(20))
        .ok_or("the request queued behind the long cell was never answered")?;
    assert_eq!(queued_reply.content.get("status"), Some(&json!("ok")));

    flags.request_shutdown();
    kernel.join().map_err(|_| "kernel thread panicked")??;
    Ok(())
}

/// A kernel gone quiet forgets expired replay digests without waiting for its next message.
#[test]
fn a_quiet_kernel_forgets_expired_replay_digests() -> TestResult {
    let ctx = Context::new()?;
    let mut options = KernelOptions::new(ConnectionInfo::generate(Transport::Tcp, "127.0.0.1")?);
    options.session.replay = Some(ReplayConfig {
        window: Duration::from_secs(3),
        clock_skew: Duration::from_millis(100),
        ..ReplayConfig::default()
    });
    let bound = BoundKernel::bind(&ctx, options)?;
    let history = bound.session().clone();
    let (info, flags, kernel) = run_kernel(bound);
    let client = Client::connect(&ctx, &info)?;
    for _ in 0..20 {
        let id = client.send("kernel_info_request", json!({}))?;
        client
            .reply(&id, Duration::from_secs(20))
            .ok_or("no kernel_info_reply")?;
    }
    assert!(history.replay_history_len() > 0);
    // Each expires 3 s after its date; the sweep follows within a sixteenth of that.
    let deadline = Instant::now() + Duration::from_secs(15);
    while history.replay_history_len() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} digests left 15 s after the last message",
            history.replay_history_len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    flags.request_shutdown();
    kernel.join().map_err(|_| "kernel thread panicked")??;
    Ok(())
}
