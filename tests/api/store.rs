//! The store's health as an operator sees it: a damaged database stops `serve` at start, naming the file, and
//! `/readyz` fails while commits fail (a full disk) and recovers once they succeed again, without a restart.

use crate::helpers::*;

#[test]
fn serve_refuses_a_damaged_store_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let database = data_dir.join(healthset_responder::store::DB_FILE);
    std::fs::write(&database, vec![0x5a; 32 * 1024]).unwrap();
    let config = dir.path().join("healthset-responder.toml");
    std::fs::write(&config, base_config(&data_dir)).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_healthset-responder"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("HSR_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(line.contains(&format!("the store {} is damaged", database.display())), "{stderr}");
    assert_eq!(
        std::fs::read(&database).unwrap(),
        vec![0x5a; 32 * 1024],
        "the damaged file is left as it was"
    );
}

/// The service in a process of its own whose files may not grow past a limit the test moves (the returned
/// function sets it, in bytes): a disk that fills up and frees up again, without touching the machine's real disks.
#[cfg(target_os = "linux")]
fn disk_limited_service(config: &std::path::Path) -> (ServiceProcess, impl Fn(libc::rlim_t)) {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_healthset-responder"));
    command.args(["serve", "--config"]).arg(config);
    // SAFETY: between fork and exec only async-signal-safe calls: signal(2) so that a write past the limit fails
    // with EFBIG instead of killing the process, as a write to a full disk fails with ENOSPC.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let service = ServiceProcess::spawn(command);
    let pid = libc::pid_t::try_from(service.child.id()).unwrap();
    let file_limit = move |bytes: libc::rlim_t| {
        let limit = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: prlimit reads the struct passed to it; the pid is this test's own child.
        assert_eq!(
            unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) },
            0
        );
    };
    (service, file_limit)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn readyz_fails_while_commits_fail_and_recovers_after() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("healthset-responder.toml");
    std::fs::write(&config, format!("{}\n[executor]\ndry_run = true\n", base_config(&data_dir)))
        .unwrap();
    let (service, file_limit) = disk_limited_service(&config);
    let app = TestApp::attached(&service.url);
    assert_eq!(app.http.get(format!("{}/readyz", app.url)).send().await.unwrap().status(), 200);

    // The disk fills up: no file may grow past what is there now.
    let biggest = std::fs::read_dir(&data_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap();
    file_limit(biggest);
    let filler = "x".repeat(12 * 1024);
    let mut refused = false;
    for i in 0..400 {
        let response = app
            .post_signed(
                "/v1/alerts",
                &native(&format!("cas{i}.contoso.com"), "ActiveSyncCTPMonitor", &filler),
            )
            .await;
        if response.status() == 503 {
            refused = true;
            break;
        }
        assert_eq!(response.status(), 202);
    }
    assert!(refused, "alerts are refused with 503 once the disk is full");
    let ready = app.http.get(format!("{}/readyz", app.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "/readyz says the store cannot commit");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_not_writable");

    let refused_again = app
        .post_signed(
            "/v1/alerts",
            &native("cas01.contoso.com", "ActiveSyncDeepTestMonitor", &filler),
        )
        .await;
    assert_eq!(refused_again.status(), 503, "the disk is still full");
    assert_eq!(
        app.http.get(format!("{}/readyz", app.url)).send().await.unwrap().status(),
        503,
        "and the service still says so"
    );

    // Room again: the service takes alerts and is ready, without a restart.
    file_limit(libc::RLIM_INFINITY);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = app
            .post_signed(
                "/v1/alerts",
                &native(
                    "cas01.contoso.com",
                    "ActiveSyncDeepTestMonitor",
                    "after the disk freed up",
                ),
            )
            .await;
        if response.status() == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alerts are taken again once the disk has room: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.http.get(format!("{}/readyz", app.url)).send().await.unwrap().status(),
        200,
        "/readyz recovers once commits succeed"
    );
    assert!(service.terminate().success());
}

/// An incident whose driver fails on a full disk is driven again once the disk has room, without a restart, and
/// on-call hears once that it made no progress meanwhile.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_incident_stalled_by_a_full_disk_is_reported_once_and_finishes_when_the_disk_frees_up() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("healthset-responder.toml");
    let extra = format!(
        "{INVENTORY}\n[simulator]\naction_latency = \"400ms\"\n[timing]\nstall_after = \"1s\"\n\
         [simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"\n"
    );
    std::fs::write(&config, format!("{}\n{}", base_config(&data_dir), with_test_timing(&extra)))
        .unwrap();
    let (service, file_limit) = disk_limited_service(&config);
    let app = TestApp::attached(&service.url);

    let id = app
        .open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", "_Mbx:mbx01.contoso.com"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
        if !incident["steps"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{incident:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The disk is full while the probe runs: its result cannot be written, nor anything after it.
    file_limit(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
    assert!(
        !["recovered", "escalated", "blocked"].contains(&incident["state"].as_str().unwrap()),
        "{incident:#}"
    );
    file_limit(libc::RLIM_INFINITY);

    let incident = app.wait_final(&id).await;
    assert_eq!(incident["state"], "recovered", "driven again once the disk had room: {incident:#}");
    let notices: Vec<&serde_json::Value> =
        incident["notifications"].as_array().unwrap().iter().collect();
    assert_eq!(notices.len(), 1, "one notice that it made no progress: {incident:#}");
    assert!(
        notices[0]["subject"]
            .as_str()
            .unwrap()
            .contains("STALLED: ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com"),
        "{}",
        notices[0]["subject"]
    );
    let log = service.log.lock().unwrap().clone();
    assert!(log.contains("incident driver failed; it is driven again after a backoff"), "{log}");
    assert!(log.contains("incident makes no progress; on-call is told"), "{log}");
}
