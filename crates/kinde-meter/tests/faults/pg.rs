//! PostgreSQL for the harnesses: a scratch database of their own (a setting
//! such as `default_transaction_read_only` is made per database, and must not
//! reach the databases other tests use), and the stored records per key.
//!
//! Names are `kmfault_<process id>_<random>`; a database left behind by a
//! process that no longer runs is dropped by the next one that makes one.

use std::collections::BTreeMap;

use tokio_postgres::{Client, NoTls};

const PREFIX: &str = "kmfault_";

/// A fresh database on the server, dropped (with its sessions) on drop.
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates it on the server of `admin_url` (a database URL with the right
    /// to create databases).
    pub async fn create(admin_url: &str) -> ScratchDatabase {
        let admin = connect(admin_url).await;
        sweep(&admin).await;
        let name = format!(
            "{PREFIX}{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut url = reqwest::Url::parse(admin_url).expect("a postgres:// URL");
        url.set_path(&name);
        ScratchDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL (for `--database-url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A session on the server's administrative database.
    pub async fn admin(&self) -> Client {
        connect(&self.admin_url).await
    }

    /// A session on this database.
    pub async fn connect(&self) -> Client {
        connect(&self.url).await
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run on a runtime, which must not be blocked: a thread with
        // a runtime of its own does the work.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let admin = connect(&url).await;
                    drop_database(&admin, &name).await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the scratch database {}", self.name);
        }
    }
}

/// Usage records per idempotency key of `agreement` (`""` for none).
pub async fn counts(db: &Client, agreement: &str) -> BTreeMap<String, u64> {
    db.query(
        "SELECT coalesce(idempotency_key, ''), count(*) FROM usage_records
         WHERE agreement_id = $1 GROUP BY 1",
        &[&agreement],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| {
        let count: i64 = row.get(1);
        (row.get(0), u64::try_from(count).unwrap())
    })
    .collect()
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

async fn drop_database(admin: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    assert!(
        name.starts_with(PREFIX) && name.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric())
    );
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
}

/// Drops the scratch databases of processes that no longer run.
async fn sweep(admin: &Client) {
    let Ok(rows) = admin
        .query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname::text, $1)",
            &[&PREFIX],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name[PREFIX.len()..].split('_').next().unwrap_or_default();
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive && let Err(e) = drop_database(admin, &name).await {
            eprintln!("could not drop the stale scratch database {name}: {e}");
        }
    }
}
