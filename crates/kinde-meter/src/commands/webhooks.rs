//! `kinde-meter webhooks create|list|delete`, on a data directory / database
//! (the API's own rules for fields and endpoints apply) or through a server's
//! webhooks API (`--server`, `docs/webhooks.md`).

use anyhow::{Context, bail};
use jiff::Timestamp;
use kinde_meter_core::webhook::WebhookId;
use kinde_meter_server::routes::webhooks::{NewWebhookFields, new_webhook_fields};
use kinde_meter_server::webhooks::endpoint::EndpointCheck;
use kinde_meter_store::{NewWebhook, WebhookStatus};
use kinde_meter_wire::CreateWebHookRequest;
use kinde_sdk::WebhooksApi;
use serde_json::{Value, json};

use crate::cli::{Target, WebhooksCommand};

pub async fn run(command: WebhooksCommand) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::Create {
            endpoint,
            event_types,
            name,
            description,
            webhook_allow_private_networks,
            target,
        } => {
            let request = CreateWebHookRequest {
                endpoint,
                event_types,
                name,
                description,
            };
            create(request, webhook_allow_private_networks, target).await
        }
        WebhooksCommand::List { json, target } => list(json, target).await,
        WebhooksCommand::Delete { webhook_id, target } => delete(webhook_id, target).await,
    }
}

fn api(target: &Target, server: &str) -> anyhow::Result<WebhooksApi> {
    Ok(WebhooksApi::new(super::remote::client(
        server,
        &target.credentials.auth(),
    )?))
}

async fn create(
    request: CreateWebHookRequest,
    allow_private_networks: bool,
    target: Target,
) -> anyhow::Result<()> {
    if let Some(server) = &target.server {
        let created = api(&target, server)?.create_web_hook(request).await?;
        let webhook = created
            .webhook
            .context("the server's answer names no webhook")?;
        println!("{}", webhook.id);
        return Ok(());
    }
    let endpoints = EndpointCheck {
        allow_private_networks,
    };
    let body = serde_json::to_value(&request)?;
    let NewWebhookFields {
        endpoint,
        event_types,
        name,
        description,
    } = match new_webhook_fields(body, &endpoints).await {
        Ok(fields) => fields,
        Err(problems) => {
            let problems: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.code, p.message))
                .collect();
            bail!("{}", problems.join("; "));
        }
    };
    let store = super::open_store(&target.data).await?;
    let created = store
        .create_webhook(NewWebhook {
            name,
            endpoint,
            description,
            event_types,
            now: Timestamp::now(),
            id_random: rand::random(),
        })
        .await;
    store.shutdown().await;
    println!("{}", created?.id);
    Ok(())
}

async fn list(json: bool, target: Target) -> anyhow::Result<()> {
    if let Some(server) = &target.server {
        let listed = api(&target, server)?.get_web_hooks().await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&listed)?);
        } else {
            let rows = listed.webhooks.iter().map(|w| {
                vec![
                    w.id.clone(),
                    w.name.clone(),
                    w.endpoint.clone(),
                    w.event_types.join(","),
                    w.created_on.clone(),
                ]
            });
            print!(
                "{}",
                table(&["ID", "NAME", "ENDPOINT", "EVENT_TYPES", "CREATED"], rows)
            );
        }
        return Ok(());
    }
    let store = super::open_store(&target.data).await?;
    let listed = store.list_webhooks().await;
    store.shutdown().await;
    let listed = listed?;
    if json {
        let body: Vec<Value> = listed.iter().map(status_json).collect();
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let rows = listed.iter().map(|s| {
            let w = &s.webhook;
            vec![
                w.id.to_string(),
                w.name.clone(),
                w.endpoint.clone(),
                w.event_types
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                instant(s.last_attempt_at),
                instant(s.last_success_at),
                s.consecutive_failures.to_string(),
                s.pending.to_string(),
                s.last_error.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        });
        print!(
            "{}",
            table(
                &[
                    "ID",
                    "NAME",
                    "ENDPOINT",
                    "EVENT_TYPES",
                    "LAST_ATTEMPT",
                    "LAST_SUCCESS",
                    "FAILURES",
                    "PENDING",
                    "LAST_ERROR",
                ],
                rows,
            )
        );
    }
    Ok(())
}

async fn delete(webhook_id: String, target: Target) -> anyhow::Result<()> {
    if let Some(server) = &target.server {
        api(&target, server)?.delete_web_hook(&webhook_id).await?;
        println!("deleted {webhook_id}");
        return Ok(());
    }
    let not_found = || {
        anyhow::anyhow!(
            "WEBHOOK_NOT_FOUND: no webhook {webhook_id} in {}",
            super::store_place(&target.data)
        )
    };
    let id = WebhookId::parse(webhook_id.clone()).map_err(|_| not_found())?;
    let store = super::open_store(&target.data).await?;
    let deleted = store.delete_webhook(&id).await;
    store.shutdown().await;
    if !deleted? {
        return Err(not_found());
    }
    println!("deleted {id}");
    Ok(())
}

/// A webhook and its deliveries' state, for `list --json`.
fn status_json(status: &WebhookStatus) -> Value {
    let mut webhook =
        serde_json::to_value(kinde_meter_server::routes::webhooks::view(&status.webhook))
            .expect("a webhook serializes");
    let object = webhook.as_object_mut().expect("a webhook is an object");
    let more = json!({
        "last_attempt_at": status.last_attempt_at.map(|t| t.to_string()),
        "last_success_at": status.last_success_at.map(|t| t.to_string()),
        "last_error": status.last_error,
        "consecutive_failures": status.consecutive_failures,
        "pending": status.pending,
    });
    if let Value::Object(more) = more {
        object.extend(more);
    }
    webhook
}

fn instant(at: Option<Timestamp>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// An aligned table under a header, one row per line.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| (*h).to_owned()).collect())
        .chain(rows)
        .collect();
    let mut widths = vec![0; header.len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
