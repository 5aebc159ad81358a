//! Interop with a real ipykernel started by jupyter_client (from the project's venv).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::time::Duration;

use kernelgate_client::content::{HistoryRequest, Status};
use kernelgate_client::{
    find_connection_file_in, BlockingKernelClient, ClientConfig, CurveIdentity, Error,
    ExecuteOptions, HeartbeatConfig, Message, OutputHandler,
};
use serde_json::Value;
use support::Kernel;

const READY: Duration = Duration::from_secs(30);

fn client(kernel: &Kernel, config: ClientConfig) -> BlockingKernelClient {
    let name = kernel
        .connection_file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let path = find_connection_file_in(&name, &[kernel.runtime_dir.path().to_path_buf()]).unwrap();
    assert_eq!(path, kernel.connection_file);
    let mut c = BlockingKernelClient::from_file(&path, config).unwrap();
    c.wait_for_ready(READY).unwrap();
    c
}

#[derive(Default)]
struct Recorder {
    seen: Vec<String>,
    prompts: Vec<(String, bool)>,
}

impl OutputHandler for Recorder {
    fn on_iopub(&mut self, msg: &Message) {
        self.seen.push(msg.msg_type().to_owned());
    }
    fn on_input_request(&mut self, prompt: &str, password: bool) -> Option<String> {
        self.prompts.push((prompt.to_owned(), password));
        Some(if password {
            "s3cret".into()
        } else {
            "world".into()
        })
    }
}

fn run(c: &mut BlockingKernelClient, code: &str) -> kernelgate_client::ExecuteOutcome {
    c.execute(code, &ExecuteOptions::default(), &mut ())
        .unwrap()
}

#[test]
fn ipykernel_end_to_end() {
    let kernel = Kernel::start("disabled");
    let mut c = client(&kernel, ClientConfig::default());

    let info = c.kernel_info().unwrap();
    assert_eq!(info.language_info.name, "python");
    assert!(
        info.protocol_version.starts_with('5'),
        "{}",
        info.protocol_version
    );
    assert!(c.heartbeat_ok(Duration::from_secs(5)));

    // stream output, execute_input, execute_result
    let mut rec = Recorder::default();
    let out = c
        .execute(
            "print('hello')\n1 + 2",
            &ExecuteOptions::default(),
            &mut rec,
        )
        .unwrap();
    assert_eq!(out.reply.status, Status::Ok);
    assert_eq!(out.stdout(), "hello\n");
    assert_eq!(out.result_text().as_deref(), Some("3"));
    assert_eq!(rec.seen, ["execute_input", "stream", "execute_result"]);
    let count = out.reply.execution_count.unwrap();
    assert_eq!(
        out.of_type("execute_result").next().unwrap().content["execution_count"],
        count
    );

    // error reply is a normal outcome
    let out = run(&mut c, "1/0");
    assert_eq!(out.reply.status, Status::Error);
    assert_eq!(out.reply.ename.as_deref(), Some("ZeroDivisionError"));
    assert_eq!(out.of_type("error").count(), 1);

    // display_data and update_display_data
    let out = run(
        &mut c,
        "from IPython.display import display, HTML\nh = display(HTML('<b>x</b>'), display_id='d1')\nh.update(HTML('<i>y</i>'))",
    );
    let shown = out.of_type("display_data").next().unwrap();
    assert_eq!(shown.content["data"]["text/html"], "<b>x</b>");
    assert_eq!(shown.content["transient"]["display_id"], "d1");
    let updated = out.of_type("update_display_data").next().unwrap();
    assert_eq!(updated.content["data"]["text/html"], "<i>y</i>");

    // binary buffers on comm messages, and comm_info
    let out = run(
        &mut c,
        "from ipykernel.comm import Comm\n\
         kg_comm = Comm(target_name='kg_test', data={'a': 1}, buffers=[b'\\x00\\x01binary'])\n\
         kg_comm.send(data={'b': 2}, buffers=[memoryview(b'more'), b'\\xff'])",
    );
    let open = out.of_type("comm_open").next().unwrap();
    assert_eq!(open.content["target_name"], "kg_test");
    assert_eq!(open.buffers, vec![b"\x00\x01binary".to_vec()]);
    let sent = out.of_type("comm_msg").next().unwrap();
    assert_eq!(sent.content["data"]["b"], 2);
    assert_eq!(sent.buffers, vec![b"more".to_vec(), vec![0xff]]);
    let comms = c.comm_info(Some("kg_test")).unwrap();
    assert!(
        comms
            .comms
            .contains_key(open.content["comm_id"].as_str().unwrap()),
        "{comms:?}"
    );

    // input() and getpass() answered through stdin
    let mut rec = Recorder::default();
    let opts = ExecuteOptions {
        allow_stdin: true,
        ..ExecuteOptions::default()
    };
    let out = c
        .execute("x = input('name? ')\nimport getpass\np = getpass.getpass('pw: ')\nprint('got', x, len(p))", &opts, &mut rec)
        .unwrap();
    assert_eq!(out.reply.status, Status::Ok, "{:?}", out.reply);
    assert_eq!(
        rec.prompts,
        [("name? ".to_owned(), false), ("pw: ".to_owned(), true)]
    );
    assert_eq!(out.stdout(), "got world 6\n");

    // user_expressions
    let mut opts = ExecuteOptions::default();
    opts.user_expressions
        .insert("twice".into(), Value::from("x * 2"));
    let out = c.execute("", &opts, &mut ()).unwrap();
    let expr = &out.reply.user_expressions.as_ref().unwrap()["twice"];
    assert_eq!(expr["data"]["text/plain"], "'worldworld'");

    // complete, inspect, is_complete, history
    let comp = c.complete("import o", 8).unwrap();
    assert!(comp.matches.iter().any(|m| m == "os"), "{:?}", comp.matches);
    assert_eq!(comp.cursor_end, 8);
    let insp = c.inspect("print", 5, 0).unwrap();
    assert!(insp.found);
    assert!(insp.data.contains_key("text/plain"));
    assert_eq!(
        c.is_complete("for i in range(3):").unwrap().status,
        "incomplete"
    );
    assert_eq!(c.is_complete("x = 1").unwrap().status, "complete");
    let req = HistoryRequest {
        hist_access_type: "tail".into(),
        n: Some(50),
        raw: true,
        ..HistoryRequest::default()
    };
    let hist = c.history(&req).unwrap();
    assert!(
        hist.history.iter().any(|h| h[2] == "1/0"),
        "{:?}",
        hist.history
    );

    // raw request
    let reply = c
        .request(
            kernelgate_client::Channel::Shell,
            "kernel_info_request",
            serde_json::json!({}),
        )
        .unwrap();
    assert_eq!(reply.msg_type(), "kernel_info_reply");

    // a timed-out execute leaves a stray reply that later requests drop
    let opts = ExecuteOptions {
        timeout: Some(Duration::from_millis(200)),
        ..ExecuteOptions::default()
    };
    let err = c
        .execute("import time; time.sleep(1)", &opts, &mut ())
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let out = run(&mut c, "print('after')");
    assert_eq!(out.stdout(), "after\n");

    // interrupt from a second client (on control) while the first one executes
    let mut second = client(&kernel, ClientConfig::default());
    let interrupter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        let r = second.interrupt_request().unwrap();
        assert_eq!(r.status, Status::Ok);
        second
    });
    let opts = ExecuteOptions {
        timeout: Some(Duration::from_secs(20)),
        ..ExecuteOptions::default()
    };
    let out = c
        .execute(
            "import time\nfor _ in range(200): time.sleep(0.1)",
            &opts,
            &mut (),
        )
        .unwrap();
    assert_eq!(
        out.reply.ename.as_deref(),
        Some("KeyboardInterrupt"),
        "{:?}",
        out.reply
    );
    let _second = interrupter.join().unwrap();
    assert_eq!(run(&mut c, "print(40 + 2)").stdout(), "42\n");

    assert_eq!(
        c.inner().rejected_count(),
        0,
        "{:?}",
        c.inner().rejections()
    );
}

#[test]
fn shutdown_and_death_detection() {
    let mut kernel = Kernel::start("disabled");
    let mut c = client(
        &kernel,
        ClientConfig {
            timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        },
    );
    c.inner_mut()
        .start_heartbeat_monitor(HeartbeatConfig {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(300),
            max_failures: 2,
        })
        .unwrap();
    let reply = c.shutdown(false).unwrap();
    assert_eq!(reply.status, Status::Ok);
    assert!(!reply.restart);
    assert!(
        !kernel.wait_exit(),
        "the kernel process did not exit after shutdown_request"
    );
    assert!(!c.heartbeat_ok(Duration::from_millis(300)));
    let err = c
        .execute("1", &ExecuteOptions::default(), &mut ())
        .unwrap_err();
    assert!(matches!(err, Error::KernelDied), "{err}");
    assert!(c.inner().kernel_died());
}

#[test]
fn curve_encrypted_kernel() {
    let kernel = Kernel::start("required");
    let text = std::fs::read_to_string(&kernel.connection_file).unwrap();
    assert!(
        text.contains("curve_publickey"),
        "jupyter_client did not provision CURVE keys"
    );
    // jupyter_client's convention: the client reuses the keypair from the file.
    let mut c = client(&kernel, ClientConfig::default());
    assert_eq!(
        c.execute("print('enc')", &ExecuteOptions::default(), &mut ())
            .unwrap()
            .stdout(),
        "enc\n"
    );
    assert!(c.heartbeat_ok(Duration::from_secs(5)));
    // Our own keypair (ipykernel has no ZAP handler, so any client key is admitted).
    let mut own = client(
        &kernel,
        ClientConfig {
            curve: CurveIdentity::Generated,
            ..ClientConfig::default()
        },
    );
    assert_eq!(own.kernel_info().unwrap().language_info.name, "python");
    // Without CURVE the kernel cannot be reached.
    let mut info = own.inner().connection_info().clone();
    info.curve_publickey = None;
    info.curve_secretkey = None;
    let mut plain = BlockingKernelClient::connect(info, ClientConfig::default()).unwrap();
    let err = plain.wait_for_ready(Duration::from_secs(2)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
}
