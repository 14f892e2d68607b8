//! Transport limits against a real server (issue 3, item 5): slow clients are
//! cut off, excess connections wait for a free slot, TLS, and shutdown does not
//! wait on idle or stalled connections.
//!
//! Waits are bounded by generous deadlines that only catch a hang; no test
//! asserts how fast anything is.

use std::time::Duration;

use crate::support::{Options, TestApp};
use kinde_meter_server::{
    Application, ServerConfig,
    transport::{TlsFiles, TransportConfig},
};
use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const DEADLINE: Duration = Duration::from_secs(20);

async fn spawn(transport: TransportConfig) -> TestApp {
    TestApp::spawn_with(Options {
        transport,
        ..Options::default()
    })
    .await
}

/// Reads until the server closes the connection; fails after [`DEADLINE`].
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn slow_or_silent_clients_are_disconnected_after_the_header_timeout() {
    let app = spawn(TransportConfig {
        header_read_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    })
    .await;
    // Connects and says nothing.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    // Slow loris: headers that never end.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    read_until_closed(&mut silent).await;
    read_until_closed(&mut slow).await;
    // The server is fine and serves others.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused_and_the_connection_closed() {
    let app = spawn(TransportConfig {
        request_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/billing/meter_usage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"meter_",
        app.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("INVALID_JSON"), "{answer}");
    assert!(!answer.contains(&app.token));
}

#[tokio::test]
async fn excess_connections_wait_for_a_free_slot() {
    let app = spawn(TransportConfig {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(120),
        ..TransportConfig::default()
    })
    .await;
    let first = TcpStream::connect(app.addr).await.unwrap();
    let _second = TcpStream::connect(app.addr).await.unwrap();
    let url = app.url("/healthz");
    let mut third = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    // Both slots are held: the third waits (this is the one bounded wait that
    // expects nothing to happen; a server without the limit fails it at once).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a third connection was served while two were open"
    );
    drop(first);
    let status = tokio::time::timeout(DEADLINE, third)
        .await
        .expect("served once a slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_or_stalled_connections() {
    let app = spawn(TransportConfig {
        header_read_timeout: Duration::from_secs(120),
        drain_timeout: Duration::from_secs(1),
        ..TransportConfig::default()
    })
    .await;
    let _idle = TcpStream::connect(app.addr).await.unwrap();
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    tokio::time::timeout(DEADLINE, app.stop())
        .await
        .expect("the server stopped");
}

fn write_tls_files(dir: &std::path::Path) -> (TlsFiles, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, &cert_pem).unwrap();
    std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();
    (files, cert_pem)
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let tls_dir = tempfile::tempdir().unwrap();
    let (files, cert_pem) = write_tls_files(tls_dir.path());
    let app = spawn(TransportConfig {
        tls: Some(files),
        ..TransportConfig::default()
    })
    .await;
    // Tokens are issued for the https:// identity.
    assert_eq!(app.issuer, format!("https://{}", app.addr));
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .https_only(true)
        .build()
        .unwrap();
    let base = format!("https://{}", app.addr);
    let response = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = https
        .get(format!("{base}/api/v1/billing/agreements?customer_id=c"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Plain HTTP on the TLS port gets no answer.
    assert!(app.http.get(app.url("/healthz")).send().await.is_err());
}

#[tokio::test]
async fn unusable_tls_files_stop_the_server_from_starting() {
    let tls_dir = tempfile::tempdir().unwrap();
    let (files, _) = write_tls_files(tls_dir.path());
    let key_pem = std::fs::read_to_string(&files.key).unwrap();
    let (other, _) = {
        let other_dir = tls_dir.path().join("other");
        std::fs::create_dir(&other_dir).unwrap();
        write_tls_files(&other_dir)
    };
    let cases = [
        (
            "missing certificate",
            TlsFiles {
                cert: tls_dir.path().join("nope.pem"),
                key: files.key.clone(),
            },
            "--tls-cert",
        ),
        (
            "a certificate for a key",
            TlsFiles {
                cert: files.cert.clone(),
                key: files.cert.clone(),
            },
            "no PEM private key",
        ),
        (
            "a key for a certificate",
            TlsFiles {
                cert: files.key.clone(),
                key: files.key.clone(),
            },
            "no PEM certificate",
        ),
        (
            "a key that does not fit",
            TlsFiles {
                cert: files.cert.clone(),
                key: other.key.clone(),
            },
            "does not fit",
        ),
    ];
    for (what, tls, expected) in cases {
        let data = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), data.path());
        config.transport.tls = Some(tls);
        let error = match Application::build(config).await {
            Ok(_) => panic!("{what}: the server started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains(expected), "{what}: {error}");
        for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!error.contains(line), "{what}: the key is in the error");
        }
    }
}
