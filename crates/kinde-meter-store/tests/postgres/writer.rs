//! The PostgreSQL writer's own behaviour: a batch held past its deadline, a
//! COMMIT that runs past it. The
//! writer's contract (bounded queue, group commit, failed batches) is tested on
//! every backend in `contract/writer.rs`.

use std::time::Duration;

use kinde_meter_store::{
    PgSettings, Store, StoreConfig, StoreError, SubmissionKind, SubmissionOutcome, UsageSubmission,
};

use crate::common::*;

/// A batch that cannot get the locks it needs in time is answered 503 within
/// the operation timeout, stores nothing, and the writer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_held_past_its_deadline_answers_unavailable_in_time() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_batch_held_past_its_deadline_answers_unavailable_in_time");
    };
    let place = Place::fresh(&backend).await;
    let Place::Schema(schema) = &place else {
        unreachable!()
    };
    let settings = PgSettings {
        operation_timeout: Duration::from_millis(800),
        ..schema.settings()
    };
    let store = TestStore::on_with(&place, StoreConfig::default(), settings).await;
    store.load_catalog(&catalog()).await.unwrap();
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let held = store.hold_writes().await;
    let started = std::time::Instant::now();
    let answer = store
        .submit_usage(single(
            delta(&a, "api_calls", "1", "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z",
        ))
        .await;
    assert!(
        matches!(answer, Err(StoreError::Unavailable(_))),
        "{answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    held.release().await;
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 0);
    assert_eq!(
        submit(
            &store,
            delta(&a, "api_calls", "2", "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:01Z"
        )
        .await,
        Ok(())
    );
}

/// A batch whose COMMIT is still running when its deadline passes is waited
/// for, not answered 503: the work before COMMIT ends in time, COMMIT (slowed
/// here by a deferred trigger) takes it past the deadline, and the record is
/// both stored and acknowledged. Before, the writer gave up at the deadline and
/// answered "nothing stored" for a batch PostgreSQL then committed (found by
/// `kinde-meter bench` at 256 connections: stored usage exceeded acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_running_past_the_deadline_is_waited_for() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_commit_running_past_the_deadline_is_waited_for");
    };
    let place = Place::fresh(&backend).await;
    let Place::Schema(schema) = &place else {
        unreachable!()
    };
    let settings = PgSettings {
        operation_timeout: Duration::from_millis(1500),
        ..schema.settings()
    };
    let store = TestStore::on_with(&place, StoreConfig::default(), settings).await;
    store.load_catalog(&catalog()).await.unwrap();
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    // 0.8 s inside the INSERT (before COMMIT), 1.2 s inside COMMIT: each
    // statement within the 1.5 s statement timeout, together past the deadline.
    store
        .schema()
        .connect()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(0.8); RETURN NEW; END $$;
             CREATE TRIGGER slow_insert BEFORE INSERT ON usage_records
                 FOR EACH ROW EXECUTE FUNCTION slow_insert();
             CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(1.2); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON usage_records
                 DEFERRABLE INITIALLY DEFERRED
                 FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .await
        .unwrap();
    let answer = submit(
        &store,
        delta(&a, "api_calls", "7", "2024-03-02T00:00:00Z"),
        "2024-03-02T00:00:00Z",
    )
    .await;
    assert_eq!(answer, Ok(()));
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 1);
}

/// Makes every COMMIT of a usage record wait for the advisory lock `key`
/// (a deferred trigger takes it), which the test holds on `holder`: the
/// writer's COMMIT is then in progress for as long as the test wants.
pub(crate) async fn block_commits_on(store: &TestStore, key: i64) -> tokio_postgres::Client {
    let setup = store.schema().connect().await.unwrap();
    setup
        .batch_execute(&format!(
            "CREATE FUNCTION block_commit() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_advisory_xact_lock({key}); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER block_commit AFTER INSERT ON usage_records
                 DEFERRABLE INITIALLY DEFERRED
                 FOR EACH ROW EXECUTE FUNCTION block_commit();"
        ))
        .await
        .unwrap();
    let holder = store.schema().connect().await.unwrap();
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .unwrap();
    holder
}

/// The backend whose COMMIT waits for the advisory lock `key`, once one does.
pub(crate) async fn backend_waiting_on(observer: &tokio_postgres::Client, key: i64) -> i32 {
    loop {
        let row = observer
            .query_opt(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                   AND ((classid::int8 << 32) | objid::int8) = $1",
                &[&key],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A COMMIT whose connection dies before the transaction committed (its
/// backend terminated while COMMIT runs a deferred trigger) is resolved with
/// `txid_status`: aborted, so the answer is 503 and nothing is stored; the
/// writer then goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_backend_dies_before_committing_answers_unavailable() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_commit_whose_backend_dies_before_committing_answers_unavailable");
    };
    let store = TestStore::fresh(&backend, StoreConfig::default()).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let key = 0x6b6d_7431;
    let holder = block_commits_on(&store, key).await;
    let answer = {
        let store = &store;
        let record = delta(&a, "api_calls", "7", "2024-03-02T00:00:00Z");
        let submitted = store.submit_usage(single(record, "2024-03-02T00:00:00Z"));
        let killed = async {
            let pid = backend_waiting_on(&holder, key).await;
            holder
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .unwrap();
        };
        tokio::join!(submitted, killed).0
    };
    assert!(
        matches!(answer, Err(StoreError::Unavailable(_))),
        "{answer:?}"
    );
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 0);
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap();
    assert_eq!(
        submit(
            &store,
            delta(&a, "api_calls", "2", "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:01Z"
        )
        .await,
        Ok(())
    );
}

/// A TCP proxy to PostgreSQL whose connections open so far can be made to
/// swallow what the server says, then be cut: a COMMIT whose answer is lost.
pub(crate) struct Proxy {
    pub(crate) addr: std::net::SocketAddr,
    /// Per connection: whether the server's bytes are swallowed, and a
    /// signal that cuts it.
    conns: std::sync::Arc<std::sync::Mutex<Vec<ProxyConn>>>,
}

struct ProxyConn {
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Proxy {
    pub(crate) async fn start(upstream: String) -> Proxy {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<ProxyConn>>> = Arc::default();
        let registry = conns.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let swallow = Arc::new(AtomicBool::new(false));
                let (cut, cut_rx) = tokio::sync::oneshot::channel();
                registry.lock().unwrap().push(ProxyConn {
                    swallow: swallow.clone(),
                    cut: Some(cut),
                });
                tokio::spawn(pipe(client, server, swallow, cut_rx));
            }
        });
        Proxy { addr, conns }
    }

    /// Makes every connection opened so far swallow the server's bytes.
    pub(crate) fn swallow_all(&self) {
        for c in self.conns.lock().unwrap().iter() {
            c.swallow.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Closes every connection that swallows.
    pub(crate) fn cut_swallowing(&self) {
        for c in self.conns.lock().unwrap().iter_mut() {
            if c.swallow.load(std::sync::atomic::Ordering::SeqCst)
                && let Some(cut) = c.cut.take()
            {
                let _ = cut.send(());
            }
        }
    }
}

/// Copies bytes both ways until either side closes or `cut` fires; the
/// server's bytes are dropped while `swallow` is set.
async fn pipe(
    mut client: tokio::net::TcpStream,
    mut server: tokio::net::TcpStream,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut cut: tokio::sync::oneshot::Receiver<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (mut up, mut down) = (vec![0u8; 16384], vec![0u8; 16384]);
    loop {
        tokio::select! {
            _ = &mut cut => return,
            n = cr.read(&mut up) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&up[..n]).await.is_err() { return },
            },
            n = sr.read(&mut down) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !swallow.load(std::sync::atomic::Ordering::SeqCst)
                        && cw.write_all(&down[..n]).await.is_err()
                    {
                        return;
                    }
                }
            },
        }
    }
}

/// A store on `store`'s schema whose connections go through a [`Proxy`]
/// (`None` when the database is not reached over TCP), with one pooled
/// connection: the writer's COMMIT goes on its first, and a lost COMMIT's
/// outcome is asked on a new one (through the proxy too).
pub(crate) async fn proxied(
    store: &TestStore,
) -> Option<(Proxy, kinde_meter_store::postgres::PgStore)> {
    let config: tokio_postgres::Config = store.schema().url().parse().unwrap();
    let (host, port) = match (config.get_hosts(), config.get_ports()) {
        ([tokio_postgres::config::Host::Tcp(h)], ports) => {
            (h.clone(), ports.first().copied().unwrap_or(5432))
        }
        _ => return None,
    };
    let proxy = Proxy::start(format!("{host}:{port}")).await;
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        config.get_user().unwrap_or("postgres"),
        proxy.addr.port(),
        config.get_dbname().unwrap_or("postgres")
    );
    let settings = PgSettings {
        pool_size: 1,
        ..store.schema().settings()
    };
    let proxied =
        kinde_meter_store::postgres::PgStore::connect(&url, settings, StoreConfig::default())
            .await
            .unwrap();
    Some((proxy, proxied))
}

/// A COMMIT that PostgreSQL carried out but whose answer never arrived (the
/// connection swallowed it, then broke) is resolved with `txid_status`:
/// committed, so the record is acknowledged, not answered "nothing stored".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_after_committing_is_acknowledged() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_commit_whose_answer_is_lost_after_committing_is_acknowledged");
    };
    let store = TestStore::fresh(&backend, StoreConfig::default()).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let key = 0x6b6d_7432;
    let holder = block_commits_on(&store, key).await;
    let Some((proxy, proxied)) = proxied(&store).await else {
        return skip("a_commit_whose_answer_is_lost_after_committing_is_acknowledged (not TCP)");
    };
    let answer = {
        let record = delta(&a, "api_calls", "7", "2024-03-02T00:00:00Z");
        let submitted = proxied.submit_usage(single(record, "2024-03-02T00:00:00Z"));
        let lost = async {
            backend_waiting_on(&holder, key).await;
            proxy.swallow_all();
            holder
                .execute("SELECT pg_advisory_unlock($1)", &[&key])
                .await
                .unwrap();
            // Committed (seen from another session), its answer swallowed.
            while store.count("SELECT count(*) FROM usage_records").await == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            proxy.cut_swallowing();
        };
        tokio::join!(submitted, lost).0
    };
    assert!(
        matches!(&answer, Ok(kinde_meter_store::SubmissionOutcome::Processed(r)) if r == &[Ok(())]),
        "{answer:?}"
    );
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 1);
}

/// The writer skips creating aggregate rows it has seen committed (rows are
/// never deleted). One deleted behind its back anyway is created again by the
/// next batch that needs it, with the batch's other rows, new or known: the
/// batch commits, and the row counts from its re-creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_row_deleted_behind_the_writer_s_back_is_created_again() {
    let Some(backend) = Backend::postgres() else {
        return skip("an_aggregate_row_deleted_behind_the_writer_s_back_is_created_again");
    };
    let store = TestStore::fresh(&backend, StoreConfig::default()).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let b = create(&store, "cust2", "pro", "2024-03-01T00:00:00Z", 2).await;
    for (agreement, at) in [(&a, "2024-03-02T00:00:00Z"), (&b, "2024-03-02T00:00:01Z")] {
        assert_eq!(
            submit(&store, delta(agreement, "api_calls", "3", at), at).await,
            Ok(())
        );
    }
    let deleted = store
        .execute(&format!(
            "DELETE FROM usage_aggregates WHERE agreement_id = '{}'",
            a.id.as_str()
        ))
        .await;
    assert_eq!(deleted, 1);
    let records = vec![
        Ok(delta(&a, "api_calls", "4", "2024-03-02T00:00:02Z")),
        Ok(delta(&a, "storage_gb", "5", "2024-03-02T00:00:02Z")),
        Ok(delta(&b, "api_calls", "6", "2024-03-02T00:00:02Z")),
    ];
    let answer = store
        .submit_usage(UsageSubmission {
            client_id: "client_a".to_owned(),
            idempotency: None,
            records,
            received_at: t("2024-03-02T00:00:02Z"),
            kind: SubmissionKind::Batch,
        })
        .await;
    assert!(
        matches!(&answer, Ok(SubmissionOutcome::Processed(r)) if r == &[Ok(()), Ok(()), Ok(())]),
        "{answer:?}"
    );
    assert_eq!(
        store.count("SELECT count(*) FROM usage_aggregates").await,
        3
    );
    let at = "2024-03-03T00:00:00Z";
    let api = usage(&store, &a, "api_calls", at).await;
    assert_eq!(
        (api.value.to_string(), api.record_count),
        ("4".to_owned(), 1)
    );
    let gb = usage(&store, &a, "storage_gb", at).await;
    assert_eq!((gb.value.to_string(), gb.record_count), ("5".to_owned(), 1));
    let other = usage(&store, &b, "api_calls", at).await;
    assert_eq!(
        (other.value.to_string(), other.record_count),
        ("9".to_owned(), 2)
    );
    assert_eq!(store.writer_stats().failed_batches, 0);
}
