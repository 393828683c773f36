//! The operator's page in a real browser: headless Chromium driven through WebDriver (chromedriver, on a free
//! loopback port) by fantoccini. Logs in through the form, reads the incident list, a timeline and its email, sees
//! alert text escaped, replays from the page, is refused a form without its CSRF token, and saves screenshots under
//! `target/test-artifacts/` (`incident-page.png` is the one in the README).
//!
//! This test fails, rather than skips, when Chromium or chromedriver is missing: `.ci/run` installs both.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::replay::CTP_MESSAGE;

/// How long any one wait in this test may take; every wait is bounded.
const WAIT: Duration = Duration::from_secs(20);
const SESSION_WAIT: Duration = Duration::from_secs(90);
/// The whole browser session, from login to logout.
const SCENARIO: Duration = Duration::from_secs(180);

/// An alert whose text would be markup if the page did not escape it.
fn hostile_alert() -> String {
    native(
        "cas02.contoso.com",
        "ActiveSyncDeepTestMonitor",
        "<b id=\"injected\">Response</b> & \"quoted\" <script>document.title='owned'</script>",
    )
}

#[tokio::test]
async fn the_operator_page_works_in_a_real_browser() {
    let app =
        spawn_app_with(&format!("{INVENTORY}\n[simulator]\naction_latency = \"150ms\"\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\"\n")).await;
    // An incident that escalates after every remedy (with its email delivered), and one whose alert text is hostile.
    let incident_id =
        app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE)).await;
    app.wait_final(&incident_id).await;
    let deadline = Instant::now() + WAIT;
    while app.admin_get(&format!("/v1/incidents/{incident_id}")).await.1["notifications"][0]
        ["status"]
        != "sent"
    {
        assert!(
            Instant::now() < deadline,
            "the escalation email was not delivered within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hostile_id = app.open(&hostile_alert()).await;
    app.wait_final(&hostile_id).await;

    let url = app.url.clone();
    in_browser(1280, move |browser| scenario(browser, url, incident_id, hostile_id)).await;
    // The replay the page asked for is the newest incident, linked to the alert it came from.
    let (_, incidents) = app.admin_get("/v1/incidents").await;
    let newest = &incidents["incidents"][0];
    assert_eq!(newest["dry_run"], true, "the dry-run box was ticked: {newest:#}");
    assert!(newest["replay_of"].is_string(), "{newest:#}");
}

async fn scenario(c: Client, url: String, incident_id: String, hostile_id: String) {
    let http = reqwest::Client::new();
    let paused = || async {
        let ready: Value =
            http.get(format!("{url}/readyz")).send().await.unwrap().json().await.unwrap();
        ready["paused"].as_bool().unwrap()
    };

    // Without a session every page sends the browser to the login form.
    c.goto(&format!("{url}/incidents/{incident_id}")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login");

    // A wrong token is refused with a message; the right one leads to the incident list.
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys("not-the-token")
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/login'] button")).await.unwrap().click().await.unwrap();
    let error = c.wait().at_most(WAIT).for_element(Locator::Css("p.error")).await.unwrap();
    assert_eq!(error.text().await.unwrap(), "that is not an admin token");
    c.find(Locator::Css("input[name=token]")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    c.find(Locator::Css("form[action='/login'] button")).await.unwrap().click().await.unwrap();
    // The login redirects to the list; the list refreshes itself while an incident is held queued, so reads of it
    // retry across reloads.
    c.wait().at_most(WAIT).for_url(&format!("{url}/").parse().unwrap()).await.unwrap();
    assert_eq!(read(&c, Locator::Css("main h1"), Read::Text).await, ["Incidents"]);
    let rows = read(&c, Locator::Css("table.list tbody tr"), Read::Text).await;
    assert_eq!(rows.len(), 2);
    let row_text = &rows[1];
    for expected in [
        "escalated",
        "cas01.contoso.com",
        "ActiveSyncCTPMonitor",
        "probe still failing after all remedies",
    ] {
        assert!(row_text.contains(expected), "{expected:?} in the incident row: {row_text:?}");
    }

    // The incident page: its timeline, its alert and email, and the pause switch.
    click(&c, Locator::Css(&format!("table.list a[href='/incidents/{incident_id}']"))).await;
    c.wait()
        .at_most(WAIT)
        .for_url(&format!("{url}/incidents/{incident_id}").parse().unwrap())
        .await
        .unwrap();
    let mut timeline = Vec::new();
    for step in c.find_all(Locator::Css("tr.step")).await.unwrap() {
        let mut cells = Vec::new();
        for label in ["server", "action", "outcome"] {
            cells.push(
                step.find(Locator::Css(&format!("td[data-label={label}]")))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap(),
            );
        }
        timeline.push(cells.join(" "));
    }
    assert_eq!(
        timeline,
        [
            "cas01.contoso.com probe failed",
            "cas01.contoso.com ma_history none",
            "cas01.contoso.com component_state active",
            "cas01.contoso.com recycle_app_pool done",
            "cas01.contoso.com probe failed",
            "cas01.contoso.com iis_reset done",
            "cas01.contoso.com probe failed",
            "mbx01.contoso.com server_health healthy",
            "cas01.contoso.com component_state active",
            "cas01.contoso.com restart_server done",
            "cas01.contoso.com wait done",
            "cas01.contoso.com probe failed",
        ]
    );
    let command = c.find(Locator::Css("tr.step code.command")).await.unwrap().text().await.unwrap();
    assert!(command.starts_with("Invoke-MonitoringProbe"), "{command}");
    let email = c
        .find(Locator::XPath("//h2[.='Emails']/following-sibling::table[1]//tbody/tr"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        email.contains("escalation")
            && email.contains("oncall@localhost")
            && email.contains("sent"),
        "{email}"
    );
    assert_eq!(
        c.find(Locator::Css(".switch span")).await.unwrap().text().await.unwrap(),
        "Automation running"
    );
    save_screenshot(&c, "incident-page.png", 1280).await;
    save_screenshot(&c, "incident-page-phone.png", 390).await;

    // Alert text is shown as text, never interpreted: on the incident page and, raw, on the alert's page.
    c.goto(&format!("{url}/incidents/{hostile_id}")).await.unwrap();
    let message =
        c.find(Locator::Css("td[data-label=message]")).await.unwrap().text().await.unwrap();
    assert_eq!(
        message,
        "<b id=\"injected\">Response</b> & \"quoted\" <script>document.title='owned'</script>"
    );
    assert!(
        c.find_all(Locator::Id("injected")).await.unwrap().is_empty(),
        "the alert's markup did not become an element"
    );
    assert!(!c.title().await.unwrap().contains("owned"), "the alert's script did not run");
    c.find(Locator::Css("td[data-label=received] a")).await.unwrap().click().await.unwrap();
    let raw = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//h2[starts-with(., 'Raw body')]/following-sibling::pre[1]"))
        .await
        .unwrap();
    let raw = raw.text().await.unwrap();
    assert!(
        raw.starts_with(r#"{"health_set":"ActiveSync""#)
            && raw.contains(r#"<b id=\"injected\">Response</b>"#),
        "the raw body byte for byte: {raw}"
    );
    assert!(c.find_all(Locator::Id("injected")).await.unwrap().is_empty());
    c.goto(&format!("{url}/incidents/{incident_id}")).await.unwrap();

    // A form whose CSRF token has been taken out is refused, and nothing changes.
    c.execute(
        "document.querySelector(\"form[action='/automation/pause'] input[name=csrf]\").remove()",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Css("button[name=pause]")).await.unwrap().click().await.unwrap();
    let refused = c.wait().at_most(WAIT).for_element(Locator::Css("p.error")).await.unwrap();
    assert!(
        refused.text().await.unwrap().contains("security token is missing or stale"),
        "{}",
        refused.text().await.unwrap()
    );
    assert_eq!(c.find(Locator::Css("main h1")).await.unwrap().text().await.unwrap(), "Refused");
    assert!(!paused().await, "the refused form paused nothing");

    // Pausing and resuming from the page work, and say so.
    c.goto(&format!("{url}/incidents/{incident_id}")).await.unwrap();
    c.find(Locator::Css("input[name=reason]"))
        .await
        .unwrap()
        .send_keys("patching cas01")
        .await
        .unwrap();
    c.find(Locator::Css("button[name=pause]")).await.unwrap().click().await.unwrap();
    let banner =
        c.wait().at_most(WAIT).for_element(Locator::Css(".switch.paused span")).await.unwrap();
    assert_eq!(banner.text().await.unwrap(), "Automation paused: patching cas01");
    assert_eq!(
        c.current_url().await.unwrap().path(),
        format!("/incidents/{incident_id}"),
        "the form comes back to the page it was sent from"
    );
    assert!(paused().await);
    c.find(Locator::Css("button[name=resume]")).await.unwrap().click().await.unwrap();
    c.wait().at_most(WAIT).for_element(Locator::Css("button[name=pause]")).await.unwrap();
    assert!(!paused().await);

    // Replay the incident's alert as a dry run: the browser lands on the new incident, which links the alert.
    c.find(Locator::Css("input[name=dry_run]")).await.unwrap().click().await.unwrap();
    c.find(Locator::Css("button[name=replay]")).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + WAIT;
    let new_path = loop {
        let path = c.current_url().await.unwrap().path().to_owned();
        if path.starts_with("/incidents/") && path != format!("/incidents/{incident_id}") {
            break path;
        }
        assert!(
            Instant::now() < deadline,
            "the replay did not lead to a new incident page; at {path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The page refreshes itself while the incident runs; wait (bounded) until it shows a final state.
    let deadline = Instant::now() + WAIT;
    loop {
        let state = match c.find(Locator::Css("main h1 .state")).await {
            Ok(badge) => badge.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if ["transient", "recovered", "escalated", "blocked"].contains(&state.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "the replayed incident is still {state:?} on its page");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let facts = c.find(Locator::Css("dl.facts")).await.unwrap().text().await.unwrap();
    assert!(facts.contains("replay of") && facts.contains("dry run"), "{facts}");
    assert!(
        !c.source().await.unwrap().contains("http-equiv=\"refresh\""),
        "a final incident's page stops refreshing"
    );

    // The new incident is listed first on the front page.
    c.find(Locator::Css("header a.brand")).await.unwrap().click().await.unwrap();
    c.wait().at_most(WAIT).for_element(Locator::Css("table.list")).await.unwrap();
    assert_eq!(read(&c, Locator::Css("table.list tbody tr"), Read::Text).await.len(), 3);
    let links = read(&c, Locator::Css("table.list tbody tr a"), Read::Href).await;
    assert_eq!(links.first(), Some(&new_path));
    save_screenshot(&c, "incident-list.png", 1280).await;

    // Logging out ends the session.
    c.find(Locator::Css("button[name=logout]")).await.unwrap().click().await.unwrap();
    c.wait().at_most(WAIT).for_element(Locator::Css("input[name=token]")).await.unwrap();
    c.goto(&format!("{url}/")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login");
}

/// Runs `scenario` in a headless Chromium `width` pixels wide, driven through chromedriver on a free loopback port.
/// The scenario runs as its own task so that, whether it passes or panics, the browser is closed and chromedriver
/// stopped before the test ends; a panic in it fails the test with its own message.
pub async fn in_browser<F, Fut>(width: u32, scenario: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let chromedriver = on_path("chromedriver");
    let chromium = on_path("chromium");
    let profile = tempfile::tempdir().unwrap();
    let mut driver = Chromedriver::start(&chromedriver, profile.path()).await;
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", format!("--user-data-dir={}", profile.path().join("profile").display()),
                     format!("--window-size={width},1500")]
        }
    });
    let capabilities = match capabilities {
        Value::Object(map) => map,
        _ => unreachable!(),
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    // Starting Chromium is the slow part, slower still while other tests load the machine: bounded, generously.
    let browser = tokio::time::timeout(
        SESSION_WAIT,
        ClientBuilder::new(connector).capabilities(capabilities).connect(&driver.url),
    )
    .await
    .unwrap_or_else(|_| panic!("no WebDriver session within {SESSION_WAIT:?}\n{}", driver.log()))
    .unwrap_or_else(|err| panic!("chromedriver refused a session: {err}\n{}", driver.log()));
    let outcome = tokio::spawn(tokio::time::timeout(SCENARIO, scenario(browser.clone()))).await;
    let _ = tokio::time::timeout(WAIT, browser.close()).await;
    driver.stop().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the browser scenario took longer than {SCENARIO:?}"),
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// Where the test saves what it saw, for a person to look at: `target/test-artifacts/`.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves the whole page as it looks `width` pixels wide: the window is made as tall as the page for the shot.
pub async fn save_screenshot(c: &Client, name: &str, width: u32) {
    let (old_width, old_height) = c.get_window_size().await.unwrap();
    c.set_window_size(width, old_height as u32).await.unwrap();
    let height = c
        .execute("return document.documentElement.scrollHeight", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap_or(1000);
    c.set_window_size(width, height as u32 + 100).await.unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(artifacts().join(name), png).unwrap();
    c.set_window_size(old_width as u32, old_height as u32).await.unwrap();
}

/// A program on `PATH`, or a failure that says how to install it.
fn on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} is not on PATH: the operator page's browser test needs Debian's chromium and chromium-driver \
                 (apt-get install -y --no-install-recommends chromium chromium-driver, as .ci/run does)"
            )
        })
}

/// chromedriver on a free loopback port, its output kept in a file for when something goes wrong.
struct Chromedriver {
    child: tokio::process::Child,
    url: String,
    log: PathBuf,
}

impl Chromedriver {
    async fn start(program: &Path, dir: &Path) -> Chromedriver {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let log = dir.join("chromedriver.log");
        let child = tokio::process::Command::new(program)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()));
        let mut driver = Chromedriver { child, url: format!("http://127.0.0.1:{port}"), log };
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited ({status}) before it listened\n{}", driver.log());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within {WAIT:?}\n{}",
                driver.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> =
            text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        format!("chromedriver log ({}), last lines:\n{}", self.log.display(), tail.join("\n"))
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// What to read of each element.
pub enum Read {
    Text,
    Href,
}

/// Reads every element matching `locator`, retrying (bounded) while the page reloads itself under the reader or
/// has none yet.
pub async fn read(c: &Client, locator: Locator<'_>, what: Read) -> Vec<String> {
    read_until(c, locator, what, |values| !values.is_empty()).await
}

/// Reads every element matching `locator` until what is read satisfies `done` (a page a click is loading), or the
/// wait is over; then returns the last reading, for the caller's assertion to show.
pub async fn read_until(
    c: &Client,
    locator: Locator<'_>,
    what: Read,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = async {
            let mut values = Vec::new();
            for element in c.find_all(locator).await? {
                values.push(match what {
                    Read::Text => element.text().await?,
                    Read::Href => element.attr("href").await?.unwrap_or_default(),
                });
            }
            Ok::<_, fantoccini::error::CmdError>(values)
        };
        match attempt.await {
            Ok(values) if done(&values) || Instant::now() >= deadline => return values,
            Ok(_) => {}
            Err(err) => assert!(Instant::now() < deadline, "cannot read {locator:?}: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element matching `locator`, retrying (bounded) while the page reloads itself.
pub async fn click(c: &Client, locator: Locator<'_>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match async { c.find(locator).await?.click().await }.await {
            Ok(_) => return,
            Err(err) => assert!(Instant::now() < deadline, "cannot click {locator:?}: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
