//! A full disk under SQLite: the data directory on an 8 MiB tmpfs mounted by
//! the test (root only; skipped otherwise), filled up by a file of the test's
//! while clients keep recording. Writes must then be answered 503
//! `SERVICE_UNAVAILABLE` with `Retry-After` (never 500, no panic), and once the
//! file is deleted they must be acknowledged again by the same server process,
//! without a restart. Exactly the acknowledged records are stored.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    ledger::{Ledger, sqlite_counts},
    load::{Load, Retry, Target},
    probe::{self, eventually},
    settings::{self, exclusive, is_root},
    support::Server,
};

const CLIENTS: usize = 8;
/// How long each phase may take to show what it waits for.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_answered_503_and_writes_resume_without_a_restart() {
    if settings::enabled("disk full").is_none() {
        return;
    }
    if !is_root() {
        eprintln!("skipped disk full: mounting a size-limited tmpfs needs root");
        return;
    }
    let _turn = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(&dir.path().join("disk"), "8m");
    let data_dir = mount.path.join("data");
    let mut server = Server::start(&data_dir, &["--rate-limit", "0"]);
    let token = server.printed_token();
    let (_, agreement) = server.printed_record_line();
    let target = Target::new(server.addr, &token, &agreement);
    let mut ledger = Ledger::default();

    // Records flow; then the disk fills up under them.
    let load = Load::start("disk", &target, CLIENTS, Retry::Never, one);
    eventually("records to be acknowledged", DEADLINE, async || {
        load.seen().acknowledged >= 200
    })
    .await;
    let filler = mount.path.join("filler");
    let filled = fill(&filler);
    let before = load.seen();
    eventually(
        "writes to be refused on the full disk",
        DEADLINE,
        async || load.seen().unavailable >= before.unavailable + 100,
    )
    .await;
    let full = load.stop().await;
    ledger.merge(full.ledger());
    let readyz_full = probe::readyz(server.addr).await;
    let (status, body) = probe::record(
        server.addr,
        &token,
        &agreement,
        "full-probe",
        "1",
        &mut ledger,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    // Reads need no space: the usage so far is served, and is what was acknowledged.
    assert_eq!(
        probe::usage(server.addr, &token, &agreement).await,
        (
            ledger.acknowledged_sum().to_string(),
            ledger.acknowledged_count() as u64
        ),
        "the usage read while the disk is full"
    );

    // Space returns: the same server acknowledges again, under load.
    std::fs::remove_file(&filler).unwrap();
    let load = Load::start("freed", &target, CLIENTS, Retry::Never, one);
    eventually(
        "writes to resume once space returned",
        DEADLINE,
        async || load.seen().acknowledged >= 200,
    )
    .await;
    let freed = load.stop().await;
    ledger.merge(freed.ledger());
    let readyz_freed = probe::readyz(server.addr).await;

    eprintln!(
        "disk full: filled with {} KiB; while full: {}; /readyz {readyz_full}",
        filled / 1024,
        full.summary()
    );
    eprintln!(
        "disk full: after deleting the filler: {}; /readyz {readyz_freed}",
        freed.summary()
    );
    full.assert_clean(&[200, 503]);
    freed.assert_clean(&[200, 503]);
    assert_eq!(readyz_freed, 200);
    let (value, count) = probe::usage(server.addr, &token, &agreement).await;
    assert_eq!(
        (value, count),
        (
            ledger.acknowledged_sum().to_string(),
            ledger.acknowledged_count() as u64
        )
    );
    probe::assert_no_panic(&server);
    let status = server.stop();
    assert!(status.success(), "{status}");
    let check = ledger.check(&sqlite_counts(&data_dir.join("kinde-meter.db"), &agreement));
    eprintln!("disk full: {}", check.summary());
    check.assert_exact();
}

/// Writes `path` until the filesystem is full; its size.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 16 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "not ENOSPC: {e}");
                break;
            }
        }
    }
    written
}

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "kmfault"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Tmpfs {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a server killed a moment ago may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn one(_: u64) -> String {
    "1".to_owned()
}
