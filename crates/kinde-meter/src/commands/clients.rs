//! `kinde-meter clients create|list|revoke`: M2M clients, on the data directory
//! directly. A running server sees a new client at once (it reads the store per
//! token request) and a revocation within its refresh interval.

use anyhow::bail;
use jiff::Timestamp;
use kinde_meter_server::clients::{self, DEFAULT_REFRESH_INTERVAL};
use kinde_meter_store::Client;
use serde_json::json;

use crate::cli::ClientsCommand;

pub async fn run(command: ClientsCommand) -> anyhow::Result<()> {
    match command {
        ClientsCommand::Create {
            name,
            scopes,
            json,
            data,
        } => {
            let store = super::open_store(&data).await?;
            let registered =
                clients::register(store.as_ref(), &name, &scopes, Timestamp::now()).await;
            store.shutdown().await;
            let registered = registered?;
            let client = &registered.client;
            let secret = registered.secret.expose();
            if json {
                let body = json!({
                    "client_id": client.id,
                    "client_secret": secret,
                    "name": client.name,
                    "scopes": client.scopes,
                });
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                println!("client_id: {}", client.id);
                println!("client_secret: {secret}");
            }
            Ok(())
        }
        ClientsCommand::List { json, data } => {
            let store = super::open_store(&data).await?;
            let listed = store.list_clients().await;
            store.shutdown().await;
            let listed = listed?;
            if json {
                let body: Vec<_> = listed.iter().map(client_json).collect();
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!("{}", table(&listed));
            }
            Ok(())
        }
        ClientsCommand::Revoke { client_id, data } => {
            let store = super::open_store(&data).await?;
            let now = Timestamp::now();
            let revoked = store.revoke_client(&client_id, now).await;
            store.shutdown().await;
            let Some(client) = revoked? else {
                bail!("no client {client_id} in {}", super::store_place(&data));
            };
            let at = client.revoked_at.unwrap_or(now);
            if at == now {
                println!("revoked {} at {at}", client.id);
                eprintln!(
                    "Running servers refuse its tokens from their next poll for revocations (every {} s by default).",
                    DEFAULT_REFRESH_INTERVAL.as_secs()
                );
            } else {
                println!("{} was already revoked at {at}", client.id);
            }
            Ok(())
        }
    }
}

fn client_json(client: &Client) -> serde_json::Value {
    json!({
        "client_id": client.id,
        "name": client.name,
        "scopes": client.scopes,
        "created_at": client.created_at.to_string(),
        "revoked_at": client.revoked_at.map(|t| t.to_string()),
    })
}

/// Clients as an aligned table, one per line, under a header.
fn table(clients: &[Client]) -> String {
    let rows: Vec<[String; 5]> = clients
        .iter()
        .map(|c| {
            [
                c.id.clone(),
                c.name.clone(),
                c.scopes.join(" "),
                c.created_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                c.revoked_at.map_or_else(
                    || "-".to_owned(),
                    |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                ),
            ]
        })
        .collect();
    let header = ["CLIENT_ID", "NAME", "SCOPES", "CREATED", "REVOKED"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
