//! `healthset-responder demo`: the whole product on a simulated Exchange organisation, with nothing to set up.
//!
//! It starts the real service in-process on a free loopback port with `examples/demo.toml`, posts the example
//! alerts over HTTP with real Standard Webhooks signatures, follows every incident through the admin API until it
//! ends, prints each timeline, and shows where the escalation emails were written.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::alert::Format;
use crate::auth::Secret;
use crate::client::{self, Client, Signer, Target};
use crate::config::Config;
use crate::service::Service;

const CONFIG: &str = include_str!("../examples/demo.toml");

/// The scenarios, in the order they are posted: what each shows, and the example alert that starts it.
const SCENARIOS: &[(&str, &str)] = &[
    ("a transient alert", include_str!("../examples/alerts/activesync-ctp-transient.json")),
    ("recovery by app pool recycle", include_str!("../examples/alerts/activesync-selftest.json")),
    (
        "a CTP alert fixed on the _Mbx: Mailbox server",
        include_str!("../examples/alerts/activesync-ctp-mailbox.json"),
    ),
    (
        "a Mailbox restart with database failover and failback",
        include_str!("../examples/alerts/activesync-deeptest.json"),
    ),
    (
        "RequestsQueuedGt500 recovered after a settle wait",
        include_str!("../examples/alerts/requests-queued.json"),
    ),
    (
        "an escalation after every remedy",
        include_str!("../examples/alerts/activesync-ctp-escalation.json"),
    ),
    (
        "no documented recovery: verify, then escalate",
        include_str!("../examples/alerts/activesync-proxytest.json"),
    ),
    (
        "a server in maintenance is left alone",
        include_str!("../examples/alerts/activesync-deeptest-maintenance.json"),
    ),
];

/// How long the demo waits for everything to finish before it gives up.
const DEADLINE: Duration = Duration::from_secs(120);

pub async fn run() -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!(
        "healthset-responder-demo-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
    ));
    let secret = Secret::generate_whsec();
    let admin_token = hex::encode(rand::random::<[u8; 24]>());
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[[senders]]\nname = \"demo\"\nsecrets = [\"{secret}\"]\n\n[admin]\ntokens = [\"{admin_token}\"]\n\n{CONFIG}",
        data_dir.display().to_string()
    );
    let settings = Config::parse(&config)
        .and_then(|c| c.resolve(|_| None))
        .context("the demo configuration is invalid")?;
    let service = Service::start(settings).await?;
    let url = format!("http://{}", service.addr);
    println!("healthset-responder demo: service on {url}, data in {}\n", data_dir.display());

    let target =
        Target { url: url.clone(), admin_token: Some(admin_token), webhook_secret: Some(secret) };
    let signer = Signer::from_target(&target, None)?;
    let mut incidents = Vec::new();
    for (what, body) in SCENARIOS {
        let answer =
            client::post_alert(&url, Format::Native, &signer, body.as_bytes().to_vec()).await?;
        let item = &answer["alerts"][0];
        let incident =
            item["incident_id"].as_str().context("the demo alert opened no incident")?.to_owned();
        println!(
            "posted {:<52} -> {} {}",
            what,
            item["disposition"].as_str().unwrap_or("?"),
            incident
        );
        incidents.push((*what, incident));
    }

    let admin = Client::new(&target);
    let started = Instant::now();
    let mut finished = Vec::new();
    for (what, id) in &incidents {
        let incident = loop {
            let incident = admin.get(&format!("/v1/incidents/{id}")).await?;
            if !["queued", "running", "waiting"].contains(&incident["state"].as_str().unwrap_or(""))
            {
                break incident;
            }
            if started.elapsed() > DEADLINE {
                bail!("incident {id} ({what}) did not finish within {DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        finished.push((*what, incident));
    }
    for (what, incident) in &finished {
        print_timeline(what, incident);
    }

    let emails = wait_for_emails(&admin, &finished, &data_dir.join("outbox")).await?;
    println!(
        "\nescalation emails ({}), written to {}:",
        emails.len(),
        data_dir.join("outbox").display()
    );
    for email in &emails {
        println!("  {}", email.display());
    }
    service.stop().await?;
    Ok(())
}

/// Waits until every escalation has been delivered to the outbox, and lists the files.
async fn wait_for_emails(
    admin: &Client,
    incidents: &[(&str, Value)],
    outbox: &std::path::Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let started = Instant::now();
    for (_, incident) in incidents {
        let id = incident["id"].as_str().unwrap_or_default();
        loop {
            let current = admin.get(&format!("/v1/incidents/{id}")).await?;
            let pending = current["notifications"]
                .as_array()
                .map(|n| n.iter().any(|n| n["status"] != "sent"))
                .unwrap_or(false);
            if !pending {
                break;
            }
            if started.elapsed() > DEADLINE {
                bail!(
                    "the escalation for incident {id} was not delivered within {DEADLINE:?}: {}",
                    current["notifications"]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(outbox)
        .with_context(|| format!("cannot read {}", outbox.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    files.sort();
    Ok(files)
}

fn print_timeline(what: &str, incident: &Value) {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    println!(
        "\n== {what}\n   {} {} on {}{}: {}\n   {}",
        text(&incident["health_set"]),
        text(&incident["monitor"]),
        text(&incident["server"]),
        incident["mailbox_hint"].as_str().map(|m| format!(" (_Mbx: {m})")).unwrap_or_default(),
        text(&incident["state"]).to_uppercase(),
        text(&incident["reason"]),
    );
    println!("     #  time          server                action              outcome");
    for step in incident["steps"].as_array().into_iter().flatten() {
        let time = step["finished_at"]
            .as_str()
            .or(step["started_at"].as_str())
            .and_then(|t| t.get(11..23))
            .unwrap_or("-");
        println!(
            "   {:>3}  {:<12}  {:<20}  {:<18}  {}",
            step["seq"].as_i64().unwrap_or_default(),
            time,
            text(&step["server"]),
            text(&step["action"]),
            text(&step["outcome"])
        );
    }
}
