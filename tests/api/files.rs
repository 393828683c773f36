//! The service's own files, as an operator finds them: `credentials.toml` never changes by itself, the data directory
//! and everything the service writes in it are readable by the service's user only, and secrets and guesses stay out
//! of the log; and the repository's own test command, which installs what the tests need.

use crate::helpers::*;

/// Runs the real binary with `args` in `home`, with no secret from the environment; returns its exit code and
/// standard error.
fn run(home: &std::path::Path, args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_healthset-responder"))
        .args(args)
        .current_dir(home)
        .env_remove("HSR_CONFIG")
        .env_remove("HSR_WEBHOOK_SECRET")
        .env_remove("HSR_ADMIN_TOKEN")
        .output()
        .unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn serve_stops_on_an_invalid_credentials_file_and_leaves_it_alone() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("healthset-responder.toml"), "listen = \"127.0.0.1:0\"\n")
        .unwrap();
    let data = home.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let credentials = data.join("credentials.toml");
    let text = "webhook_secret = \"whsec_c2VjcmV0IGtleSB0aGF0IG11c3Qgc3RheQ==\"\nadmin_token = \"an-admin-token-that-must-stay\"\nurl = 8080\n";
    std::fs::write(&credentials, text).unwrap();
    let (code, stderr) = run(home.path(), &["serve"]);
    assert_eq!(code, 2, "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(
        line.contains("data/credentials.toml") && line.contains("url (line 3): invalid type"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("must-stay") && !stderr.contains("c2VjcmV0"),
        "no secret in the message: {stderr}"
    );
    assert_eq!(std::fs::read_to_string(&credentials).unwrap(), text, "the file is not regenerated");
}

#[test]
fn serve_and_check_config_refuse_the_example_configurations_placeholders() {
    let home = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/healthset-responder.toml"
    ))
    .unwrap();
    let config = home.path().join("healthset-responder.toml");
    std::fs::write(&config, &example).unwrap();
    for command in [&["check-config"][..], &["serve"][..]] {
        let (code, stderr) = run(home.path(), command);
        assert_eq!(code, 2, "{command:?}: {stderr}");
        assert!(
            stderr.contains(
                "senders[0].secrets[0]: is the placeholder from the example configuration"
            ),
            "{command:?}: {stderr}"
        );
    }
    assert!(!home.path().join("data").exists(), "serve started nothing");

    // With the secrets replaced, the example (every key, documented) is a valid configuration.
    let own = example
        .replace(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_b3VyIG93biBrZXksIG5vdCB0aGUgZXhhbXBsZQ==",
        )
        .replace("replace-with-a-long-random-token", "0f6c2d9e8a7b4c3d2e1f0a9b8c7d6e5f")
        .replace("replace-with-another-long-random-token", "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b");
    std::fs::write(&config, own).unwrap();
    let (code, stderr) = run(home.path(), &["check-config"]);
    assert_eq!(code, 0, "{stderr}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("var").join("data");
    let config = format!(
        "{}\n[[servers]]\nname = \"cas01.contoso.com\"\nrole = \"cas\"\n",
        base_config(&data)
    );
    let service = healthset_responder::service::Service::start(settings(&config)).await.unwrap();
    let app = TestApp {
        url: format!("http://{}", service.addr),
        service: Some(service),
        data_dir: home,
        config,
        http: reqwest::Client::new(),
    };
    // An alert for a server outside the inventory ends blocked and escalates: an .eml lands in the outbox.
    let incident =
        app.open(&native("cas09.contoso.com", "ActiveSyncCTPMonitor", "probe failed")).await;
    app.wait_final(&incident).await;
    let outbox = data.join("outbox");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let email = loop {
        let found = std::fs::read_dir(&outbox).ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        if let Some(found) = found {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "the escalation reaches the outbox");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    assert_eq!(mode(&outbox), 0o700, "the outbox");
    assert_eq!(mode(&email), 0o600, "an email");
    let database = data.join(healthset_responder::store::DB_FILE);
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", database.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn wrong_admin_tokens_are_refused_with_429_and_logged_once_per_window() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("healthset-responder.toml");
    std::fs::write(&config, base_config(&home.path().join("data"))).unwrap();
    let service = ServiceProcess::start(&config, None);
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let response = http
            .get(format!("{}/v1/incidents", service.url))
            .bearer_auth("guessing-the-admin-token-0000")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let max = healthset_responder::http::guesses::MAX_FAILURES as usize;
    assert!(
        statuses[..max].iter().all(|s| *s == 401) && statuses[max..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    let log = service.log.clone();
    assert!(service.terminate().success());
    let log = log.lock().unwrap().clone();
    let lines = log.lines().filter(|l| l.contains("wrong admin token")).count();
    assert_eq!(lines, 2, "the first failure and the lock-out, not one line per failure: {log}");
    assert!(!log.contains("guessing-the-admin-token"), "the guess itself is never logged");
}

#[test]
fn the_readme_test_command_installs_what_the_tests_need() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let two_commands = readme.split("## Two commands").nth(1).unwrap().split("```").nth(1).unwrap();
    assert!(two_commands.lines().any(|l| l.starts_with("scripts/test.sh ")), "{two_commands}");
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l == "scripts/install-test-deps.sh"),
        "CI installs what the tests need the same way: {ci}"
    );
    let test = std::fs::read_to_string(root.join("scripts/test.sh")).unwrap();
    assert!(test.contains("scripts/install-test-deps.sh") && test.contains("cargo test"), "{test}");

    // On a machine with none of it and no apt-get, the script names every package and stops.
    let empty = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("/bin/bash")
        .arg(root.join("scripts/install-test-deps.sh"))
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: the tests need chromium chromium-driver pkg-config libssl-dev"),
        "{stderr}"
    );
}
