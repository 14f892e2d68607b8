//! What the CLI tests share: the real `kinde-meter` binary run as a user runs
//! it (to its end, with a deadline), a `kinde-meter serve` child process, a
//! server in this process for the commands that talk to one, and the HTTP
//! requests and usage answers they check.
//!
//! Every wait is for a condition with a deadline; every child process is killed
//! when its guard drops, so a failing test leaves nothing running.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use kinde_meter_server::{Application, ServerConfig};
use serde_json::{Value, json};

/// How long a server may take to print its first line, a command to finish.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM (docs/limits.md#shutdown: 10 s, with margin).
pub const EXIT_DEADLINE: Duration = Duration::from_secs(20);
pub const SUCCESS: &str = r#"{"message":"Success","code":"OK"}"#;
/// The `kinde-meter` binary, without the caller's settings.
pub fn kinde_meter() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinde-meter"));
    // The caller's `KINDE_METER_*` settings must not change what a test means.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("KINDE_METER_") {
            command.env_remove(var);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

/// Kills the child if it is still running when dropped (a failed assertion).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Text a thread collects from a child's pipe.
#[derive(Clone, Default)]
pub struct Collected(Arc<Mutex<String>>);

impl Collected {
    /// Starts collecting; the thread ends when the pipe closes.
    pub fn from_pipe(pipe: impl Read + Send + 'static) -> (Collected, JoinHandle<()>) {
        let collected = Collected::default();
        let sink = collected.clone();
        let thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.0
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        (collected, thread)
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// `kinde-meter ARGS`, run to its end.
pub fn run_args(args: &[&str]) -> Output {
    run(kinde_meter().args(args))
}

/// The trimmed stdout of a command that succeeded.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Runs a command to its end (killed after [`DEADLINE`]).
pub fn run(command: &mut Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kinde-meter starts");
    let mut guard = ChildGuard(child);
    let (stdout, out_thread) = Collected::from_pipe(guard.0.stdout.take().unwrap());
    let (stderr, err_thread) = Collected::from_pipe(guard.0.stderr.take().unwrap());
    let status = wait_exit(&mut guard.0, DEADLINE, &stderr);
    // The pipes close with the process: the readers have their last bytes.
    out_thread.join().unwrap();
    err_thread.join().unwrap();
    Output {
        status,
        stdout: stdout.text().into_bytes(),
        stderr: stderr.text().into_bytes(),
    }
}

pub fn wait_exit(child: &mut Child, deadline: Duration, stderr: &Collected) -> ExitStatus {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < until,
            "the process did not exit within {deadline:?}; stderr so far:\n{}",
            stderr.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A `kinde-meter serve` child process.
pub struct Server {
    pub guard: ChildGuard,
    /// Stdout lines read so far.
    pub lines: Vec<String>,
    line_rx: mpsc::Receiver<String>,
    pub stderr: Collected,
    /// `http://127.0.0.1:PORT`, from the first line.
    pub url: String,
    pub addr: SocketAddr,
}

impl Server {
    /// `serve --listen 127.0.0.1:0 --data-dir DIR` plus `extra` arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut command = kinde_meter();
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra);
        Server::spawn(command)
    }

    /// Spawns `command` (a `serve`) and waits for its first line, the URL.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kinde-meter serve starts");
        let stdout = child.stdout.take().unwrap();
        let (stderr, _) = Collected::from_pipe(child.stderr.take().unwrap());
        let guard = ChildGuard(child);
        let (tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            guard,
            lines: Vec::new(),
            line_rx,
            stderr,
            url: String::new(),
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        // "kinde-meter serving URL (listening on ADDR, data in …)": the URL is
        // the public one (`--public-url`), ADDR where this process listens.
        let first = server.next_line();
        let rest = first
            .strip_prefix("kinde-meter serving ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let url = rest.split(' ').next().unwrap().to_owned();
        let listening = rest[url.len()..]
            .strip_prefix(" (listening on ")
            .unwrap_or_else(|| panic!("first line: {first:?}"));
        server.addr = listening.split(',').next().unwrap().parse().unwrap();
        assert_ne!(server.addr.port(), 0);
        server.url = url;
        server
    }

    /// The next stdout line, waiting up to [`DEADLINE`].
    pub fn next_line(&mut self) -> String {
        match self.line_rx.recv_timeout(DEADLINE) {
            Ok(line) => {
                self.lines.push(line.clone());
                line
            }
            Err(e) => panic!(
                "no stdout line from the server ({e}); stdout so far: {:?}; stderr:\n{}",
                self.lines,
                self.stderr.text()
            ),
        }
    }

    /// Reads stdout lines until one satisfies `predicate`; returns it.
    pub fn line_where(&mut self, predicate: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.lines.iter().find(|l| predicate(l)) {
            return line.clone();
        }
        loop {
            let line = self.next_line();
            if predicate(&line) {
                return line;
            }
        }
    }

    /// The printed ready token.
    pub fn printed_token(&mut self) -> String {
        let line = self.line_where(|l| l.trim_start().starts_with("export TOKEN="));
        line.trim()
            .strip_prefix("export TOKEN=")
            .unwrap()
            .to_owned()
    }

    /// The printed curl line that records usage, and the agreement id in it.
    pub fn printed_record_line(&mut self) -> (String, String) {
        let line = self.line_where(|l| l.contains("curl") && l.contains("-X POST"));
        let marker = r#""customer_agreement_id":""#;
        let start = line.find(marker).expect("the curl line names an agreement") + marker.len();
        let id = line[start..].split('"').next().unwrap().to_owned();
        (line.trim().to_owned(), id)
    }

    /// The printed curl line that reads usage back.
    pub fn printed_read_line(&mut self) -> String {
        self.line_where(|l| l.contains("curl") && !l.contains("-X POST"))
            .trim()
            .to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.guard.0.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        wait_exit(&mut self.guard.0, deadline, &self.stderr)
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate();
        self.wait_exit(EXIT_DEADLINE)
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs one usage record; returns the status and the body.
pub async fn record(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    agreement: &str,
    value: &str,
) -> (u16, String) {
    let response = client
        .post(format!("{url}/api/v1/billing/meter_usage"))
        .bearer_auth(token)
        .json(&json!({
            "customer_agreement_id": agreement,
            "billing_feature_code": "api_calls",
            "meter_value": value,
        }))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A server in this process on `data_dir` (SQLite), configured further by
/// `configure`; its URL, and the sender that stops it.
pub async fn serve_in_process(
    data_dir: &Path,
    configure: impl FnOnce(&mut ServerConfig),
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), data_dir);
    configure(&mut config);
    let app = Application::build(config).await.unwrap();
    let url = app.identity().issuer().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    (url, stop)
}

/// `POST {url}/oauth2/token`: the client-credentials grant for `{issuer}/api`.
pub async fn request_token(url: &str, issuer: &str, id: &str, secret: &str) -> reqwest::Response {
    http()
        .post(format!("{url}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("audience", &format!("{issuer}/api")),
        ])
        .send()
        .await
        .unwrap()
}

/// `(value, record_count)` of `feature` in a usage response body.
pub fn usage_entry(body: &Value, feature: &str) -> (String, u64) {
    assert_eq!(body["code"], "OK", "{body}");
    let entry = body["usage"]
        .as_array()
        .unwrap_or_else(|| panic!("no usage array in {body}"))
        .iter()
        .find(|u| u["billing_feature_code"] == feature)
        .unwrap_or_else(|| panic!("no {feature} in {body}"));
    (
        entry["value"].as_str().unwrap().to_owned(),
        entry["record_count"].as_u64().unwrap(),
    )
}

/// `kinde-meter agreements create` of `customer` on plan `pro` on `data_dir`:
/// the agreement's id.
pub fn create_agreement(data_dir: &str, customer: &str) -> String {
    ok(run_args(&[
        "agreements",
        "create",
        "--customer-id",
        customer,
        "--plan-code",
        "pro",
        "--data-dir",
        data_dir,
    ]))
}

/// On `data_dir`: an agreement of `customer` on plan `pro` and an M2M client
/// with `scopes`, made by the CLI as a user makes them: the agreement's id,
/// the client's id and its secret.
pub fn agreement_and_client(
    data_dir: &str,
    customer: &str,
    scopes: &str,
) -> (String, String, String) {
    let agreement = create_agreement(data_dir, customer);
    let client: Value = serde_json::from_str(&ok(run_args(&[
        "clients",
        "create",
        "--name",
        "cli",
        "--scopes",
        scopes,
        "--json",
        "--data-dir",
        data_dir,
    ])))
    .unwrap();
    let field = |name: &str| client[name].as_str().unwrap().to_owned();
    (agreement, field("client_id"), field("client_secret"))
}
