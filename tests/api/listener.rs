//! The listener under hostile clients (SPEC section 8): slow headers and idle keep-alive sockets cannot lock intake
//! out, and stopping the service does not wait for them. Every client here is on loopback, bounded in number and
//! in time, and stops by itself.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Far longer than anything here should take; only a hang reaches it.
const BOUND: Duration = Duration::from_secs(15);

/// Sends a request head one header line every 200 ms, the way a slowloris client does, and reports whether the
/// service closed the connection (before the client ran out of lines).
async fn slow_headers(addr: String) -> bool {
    let Ok(mut stream) = TcpStream::connect(&addr).await else { return false };
    if stream.write_all(b"POST /v1/alerts HTTP/1.1\r\nHost: responder\r\n").await.is_err() {
        return true;
    }
    for line in 0..75 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if stream.write_all(format!("X-Slow-{line}: still here\r\n").as_bytes()).await.is_err() {
            return true;
        }
        let mut buf = [0u8; 512];
        // A read that completes is an end of stream or an error answer: the service is done with this client.
        if tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await.is_ok() {
            return true;
        }
    }
    false
}

/// Makes one keep-alive request, then holds the connection idle; returns whether the service closed it in time.
async fn idle_keep_alive(addr: String, within: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect(&addr).await else { return false };
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: responder\r\nConnection: keep-alive\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    let Ok(Ok(n)) = tokio::time::timeout(BOUND, stream.read(&mut buf)).await else { return false };
    if !String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
        return false;
    }
    // Now idle: the next read ends only when the service closes its side.
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn addr(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn slow_and_idle_clients_cannot_lock_signed_alerts_out() {
    let app = spawn_app_with("[listener]\nheader_timeout = \"1s\"\nmax_connections = 16\n").await;
    // Three times as many hostile connections as the cap allows.
    let slow: Vec<_> = (0..24).map(|_| tokio::spawn(slow_headers(addr(&app)))).collect();
    let idle: Vec<_> = (0..24).map(|_| tokio::spawn(idle_keep_alive(addr(&app), BOUND))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let http = reqwest::Client::builder().timeout(BOUND).build().unwrap();
    let app = TestApp { http, ..app };
    for i in 0..5 {
        let body =
            native(&format!("cas{i:02}.contoso.com"), "ActiveSyncCTPMonitor", "probe failed");
        let response = app.post_signed("/v1/alerts", &body).await;
        assert_eq!(
            response.status(),
            202,
            "a signed alert is answered while slow and idle clients hold connections"
        );
    }

    for task in slow {
        assert!(
            task.await.unwrap(),
            "the service closes a client whose headers do not arrive in time"
        );
    }
    for task in idle {
        assert!(task.await.unwrap(), "the service closes an idle keep-alive connection");
    }
}

#[tokio::test]
async fn stopping_does_not_wait_for_idle_connections() {
    // Header timeout far beyond the shutdown deadline: only the shutdown itself can close these sockets.
    let mut app = spawn_app_with("[listener]\nheader_timeout = \"5m\"\n").await;
    let idle: Vec<_> = (0..20).map(|_| tokio::spawn(idle_keep_alive(addr(&app), BOUND))).collect();
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let service = app.service.take().unwrap();
    // The service's own deadline is 20 s; a stop that waited for the idle sockets would run into it.
    let stopped = tokio::time::timeout(Duration::from_secs(10), service.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "the service stops without waiting out its deadline");
    for task in idle {
        assert!(task.await.unwrap(), "an idle keep-alive connection is closed at shutdown");
    }
    for mut stream in silent {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(BOUND, stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a connection that never sent a byte is closed at shutdown"
        );
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_with_idle_sockets_open_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("healthset-responder.toml");
    std::fs::write(
        &config,
        format!("{}\n[listener]\nheader_timeout = \"5m\"\n", base_config(&dir.path().join("data"))),
    )
    .unwrap();
    let service = ServiceProcess::start(&config, None);
    let addr = service.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: responder\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        assert!(stream.read(&mut buf).await.unwrap() > 0);
        idle.push(stream);
    }
    let log = service.log.clone();
    let status = tokio::task::spawn_blocking(move || service.terminate()).await.unwrap();
    assert!(status.success(), "SIGTERM stops the service cleanly");
    let log = log.lock().unwrap().clone();
    assert!(
        !log.contains("shutdown deadline passed"),
        "idle sockets do not hold the shutdown up: {log}"
    );
}
