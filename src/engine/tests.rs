use super::*;

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_panicking_driver_releases_its_servers_and_is_driven_again_after_a_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..crate::config::Config::default()
    }
    .resolve(|_| None)
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (mut engine, _handle) = Engine::new(
        Arc::new(settings),
        store,
        Arc::new(Metrics::new()),
        false,
        "http://127.0.0.1:8080".into(),
    )
    .unwrap();
    let shared = engine.shared.clone();
    lock(&shared.locks).insert(name("cas01"), "incident-1".into());
    lock(&shared.locks).insert(name("mbx01"), "incident-1".into());
    lock(&shared.locks).insert(name("cas02"), "incident-2".into());
    lock(&shared.drivers).insert("incident-1".into(), Arc::new(Notify::new()));

    let driving = Driving { shared: shared.clone(), id: "incident-1".into(), succeeded: false };
    let panicked = tokio::spawn(async move {
        let _driving = driving;
        panic!("a bug in a driver");
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(
        lock(&shared.locks).keys().cloned().collect::<Vec<_>>(),
        [name("cas02")],
        "only the other incident's server stays held"
    );
    assert!(lock(&shared.drivers).is_empty());
    assert!(
        matches!(engine.wakes.recv().await, Some(Wake::Stopped)),
        "the engine hears that servers were freed"
    );

    let started = tokio::time::Instant::now();
    match engine.wakes.recv().await {
        Some(Wake::Incident(id)) => assert_eq!(id, "incident-1"),
        other => panic!("expected the incident to be driven again, got {other:?}"),
    }
    assert_eq!(started.elapsed(), RETRY_FIRST, "after the first backoff");

    // A second failure in a row waits twice as long; a clean stop forgets the failures.
    drop(Driving { shared: shared.clone(), id: "incident-1".into(), succeeded: false });
    assert!(matches!(engine.wakes.recv().await, Some(Wake::Stopped)));
    let started = tokio::time::Instant::now();
    assert!(matches!(engine.wakes.recv().await, Some(Wake::Incident(_))));
    assert_eq!(started.elapsed(), RETRY_FIRST * 2);
    drop(Driving { shared: shared.clone(), id: "incident-1".into(), succeeded: true });
    assert!(lock(&shared.failures).is_empty());
}
