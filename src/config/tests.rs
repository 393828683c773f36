use super::*;

fn resolve(text: &str) -> Result<Settings, String> {
    Config::parse(text).and_then(|c| c.resolve(|_| None)).map_err(|e| e.to_string())
}

#[test]
fn defaults_resolve() {
    let settings = resolve("").unwrap();
    assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.max_body_bytes, 262144);
    assert_eq!(settings.safety.restart_server.server_min_interval, Dur::minutes(720));
    assert_eq!(settings.timing.settle_wait, Dur::minutes(10));
    assert_eq!(settings.public_url, None);
    let behind_a_proxy = resolve("public_url = \"https://responder.contoso.com/hsr/\"").unwrap();
    assert_eq!(behind_a_proxy.public_url.as_deref(), Some("https://responder.contoso.com/hsr"));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("listen = 5", "listen (line 1): invalid type"),
        ("lisen = \"x\"", "unknown field `lisen`"),
        ("listen = \"nowhere\"", "listen: \"nowhere\" is not an address"),
        ("[timing]\nsettle_wait = \"soon\"", "timing.settle_wait (line 2)"),
        ("[[senders]]\nname = \"scom\"\nsecrets = [\"abc\"]", "senders[0].secrets[0]: must start with \"whsec_\""),
        ("[[senders]]\nname = \"am\"\nauth = \"basic\"", "senders[0].auth"),
        ("[[servers]]\nname = \"cas 01\"\nrole = \"cas\"", "servers[0].name"),
        ("[[servers]]\nname = \"cas01\"\nrole = \"edge\"", "servers[0].role"),
        ("[admin]\ntokens = [\"short\"]", "admin.tokens[0]: is shorter than 16 characters"),
        ("[email]\nto = [\"not an address\"]", "email.to[0]"),
        ("[email]\nnotify_on = [\"escalated\", \"sometimes\"]", "email.notify_on[1] (line 2): unknown variant `sometimes`"),
        ("[email]\nnotify_on = [\"escalated\", \"recovered\"]", "email.notify_on: must keep \"escalated\" and \"blocked\""),
        ("[email]\nretry_initial = \"0s\"", "email.retry_initial: must be more than zero"),
        ("[email]\nretry_initial = \"1m\"\nretry_max = \"30s\"", "email.retry_max: must be at least email.retry_initial (1m)"),
        (
            "[[email.routes]]\nservers = [\"mbx*\"]\nto = [\"a@contoso.com\"]\n[[email.routes]]\nservers = [\"cas*\"]\nto = [\"nobody\"]",
            "email.routes[1].to[0]: \"nobody\" is not an email address",
        ),
        ("[[email.routes]]\nservers = [\"cas*\"]\nto = []", "email.routes[0].to: is empty"),
        ("[[email.routes]]\nservers = [\"cas*\"]", "email.routes[0] (line 1): missing field `to`"),
        ("[[email.routes]]\nto = [\"a@contoso.com\"]", "email.routes[0]: sets none of health_sets, monitors and servers"),
        ("[[email.routes]]\nmonitors = []\nto = [\"a@contoso.com\"]", "email.routes[0].monitors: is empty"),
        (
            "[[email.routes]]\nhealth_sets = [\"Active*Sync\"]\nto = [\"a@contoso.com\"]",
            "email.routes[0].health_sets[0]: \"Active*Sync\" has a '*' before its end",
        ),
        ("[[email.routes]]\nservers = [\"cas*\"]\ncc = [\"a@contoso.com\"]\nto = [\"a@contoso.com\"]", "unknown field `cc`"),
        ("[executor]\nkind = \"ssh\"", "executor.kind"),
        ("public_url = \"responder.contoso.com\"", "public_url: \"responder.contoso.com\" is not an address"),
        ("public_url = \"ftp://responder.contoso.com\"", "public_url: \"ftp://responder.contoso.com\" must start with https:// or http://"),
        ("public_url = \"https://responder.contoso.com/?a=b\"", "public_url: \"https://responder.contoso.com/?a=b\" must be a plain address"),
        ("[simulator.servers.\"cas01\"]\nfault = \"gremlins\"", "simulator.servers.cas01.fault"),
    ];
    for (text, want) in cases {
        let err = resolve(text).unwrap_err();
        assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        assert!(!err.contains('\n'), "{text:?}: error spans lines: {err:?}");
    }
}

#[test]
fn email_routes_notices_and_retries_resolve() {
    let defaults = resolve("").unwrap();
    assert_eq!(defaults.email.notify_on, [NotifyOn::Escalated, NotifyOn::Blocked]);
    assert_eq!(
        (defaults.email.retry_initial.0, defaults.email.retry_max.0),
        (Duration::from_secs(5), Duration::from_secs(3600))
    );
    assert!(defaults.email_routes.is_empty());

    let text = "[email]\nnotify_on = [\"escalated\", \"blocked\", \"recovered\"]\nretry_initial = \"50ms\"\nretry_max = \"2s\"\n\n\
                [[email.routes]]\nservers = [\"MBX*\"]\nto = [\"mailbox-team@contoso.com\", \"dba@contoso.com\"]\n\n\
                [[email.routes]]\nhealth_sets = [\"ActiveSync.Proxy\"]\nmonitors = [\"ActiveSyncProxyTestMonitor\"]\nto = [\"proxy@contoso.com\"]\n";
    let settings = resolve(text).unwrap();
    assert_eq!(settings.email.notify_on.last(), Some(&NotifyOn::Recovered));
    assert_eq!(settings.email.retry_initial.0, Duration::from_millis(50));
    assert_eq!(settings.email_routes.len(), 2);
    let names = crate::mailer::Names {
        health_set: "ActiveSync",
        monitor: None,
        server: "mbx01.contoso.com",
    };
    assert_eq!(
        crate::mailer::recipients(&settings.email_routes, &settings.email.to, &names),
        ["mailbox-team@contoso.com", "dba@contoso.com"]
    );
}

#[test]
fn environment_secrets_add_a_sender_and_a_token() {
    let env = |name: &str| match name {
        "HSR_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
        "HSR_ADMIN_TOKEN" => Some("an-admin-token-from-env".to_owned()),
        _ => None,
    };
    let settings = Config::default().resolve(env).unwrap();
    assert_eq!(settings.senders.len(), 1);
    assert!(auth::token_matches(&settings.admin_tokens, "an-admin-token-from-env"));
}

fn no_credentials(dir: &Path) -> Settings {
    Config { data_dir: dir.to_path_buf(), ..Config::default() }.resolve(|_| None).unwrap()
}

#[test]
fn an_invalid_credentials_file_stops_serve_and_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = Credentials::path(dir.path());
    let cases = [
        (
            "webhook_secret = \"whsec_kept-secret-value\"\nadmin_tokn = \"x\"\n",
            "unknown field `admin_tokn`",
        ),
        (
            "webhook_secret = [\"whsec_kept-secret-value\"]\n",
            "webhook_secret (line 1): invalid type: sequence, expected a string",
        ),
        (
            "admin_token = \"kept-secret-value\"\nwebhook_secret = \"whsec_",
            "not a valid credentials file: line 2",
        ),
        ("", "the credentials file is empty"),
        ("# only a comment\n", "the credentials file is empty"),
    ];
    for (text, want) in cases {
        std::fs::write(&path, text).unwrap();
        let err = Credentials::ensure(&mut no_credentials(dir.path())).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, CredentialsError::Invalid(_)), "{text:?}: {message}");
        assert!(
            message.starts_with(&path.display().to_string()),
            "{text:?}: the error names the file: {message}"
        );
        assert!(message.contains(want), "{text:?}: got {message:?}, want {want:?}");
        assert!(
            !message.contains("kept-secret-value"),
            "{text:?}: the error shows a secret: {message}"
        );
        assert!(!message.contains('\n'), "{text:?}: one line: {message:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "the file is left as it was");
    }
}

#[cfg(unix)]
#[test]
fn an_unreadable_credentials_file_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: unreadable as a file, whoever runs the test (root reads anything).
    std::fs::create_dir(Credentials::path(dir.path())).unwrap();
    let err = Credentials::ensure(&mut no_credentials(dir.path())).unwrap_err().to_string();
    assert!(err.contains("cannot read the credentials file"), "{err}");
    assert!(Credentials::path(dir.path()).is_dir(), "nothing was written over it");
}

#[cfg(unix)]
#[test]
fn credentials_are_rewritten_atomically_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = Credentials::path(dir.path());
    std::fs::write(&path, "admin_token = \"an-old-token-0123456789\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut settings = no_credentials(dir.path());
    Credentials::ensure(&mut settings).unwrap();
    Credentials::record_url(dir.path(), "0.0.0.0:8080".parse().unwrap()).unwrap();
    let creds = Credentials::read(dir.path()).unwrap();
    assert_eq!(
        creds.admin_token.as_deref(),
        Some("an-old-token-0123456789"),
        "the token already there is kept"
    );
    assert!(creds.webhook_secret.is_some_and(|s| s.starts_with("whsec_")));
    assert_eq!(creds.url.as_deref(), Some("http://127.0.0.1:8080"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600,
        "rewritten 0600 whatever it was"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["credentials.toml"], "no temporary file is left behind");
}

#[test]
fn configuration_errors_never_show_a_secret() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let cases = [
        (
            format!("[[senders]]\nname = \"scom\"\nsecrets = \"{secret}\""),
            "senders[0].secrets (line 3): invalid type: string, expected a sequence",
        ),
        (
            format!("[[senders]]\nname = \"am\"\nauth = \"bearer\"\ntokens = \"{secret}\""),
            "senders[0].tokens (line 4): invalid type: string",
        ),
        (format!("[admin]\ntokens = \"{secret}\""), "admin.tokens (line 2): invalid type: string"),
        (
            format!("[admin]\ntokens = [[\"{secret}\"]]"),
            "admin.tokens[0] (line 2): invalid type: sequence, expected a string",
        ),
        (
            format!("[email.smtp]\npassword = [\"{secret}\"]"),
            "email.smtp.password (line 2): invalid type: sequence",
        ),
        (
            format!("[email.smtp]\npassword = {{ value = \"{secret}\" }}"),
            "email.smtp.password (line 2): invalid type: map",
        ),
    ];
    for (text, want) in cases {
        let err = resolve(&text).unwrap_err();
        assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        assert!(!err.contains("MfKQ9r8"), "{text:?}: the error shows the secret: {err}");
    }
    // Keys that hold no secret still show what was wrong with their value.
    assert!(resolve("listen = 8080").unwrap_err().contains("integer `8080`"));
}

#[test]
fn the_shell_environment_and_plain_text_logins_are_checked() {
    let cases = [
        (
            "[executor]\npass_env = [\"HTTPS_PROXY\", \"HSR_ADMIN_TOKEN\"]",
            "executor.pass_env[1]: HSR_ADMIN_TOKEN is one of the service's own variables",
        ),
        (
            "[executor]\npass_env = [\"hsr_webhook_secret\"]",
            "executor.pass_env[0]: hsr_webhook_secret is one of the service's own variables",
        ),
        (
            "[executor]\npass_env = [\"A=B\"]",
            "executor.pass_env[0]: \"A=B\" is not an environment variable name",
        ),
        (
            "[email.smtp]\ntls = \"none\"\nusername = \"hsr\"\npassword = \"a-relay-password\"",
            "email.smtp.username: a login over tls = \"none\" sends the password in clear",
        ),
    ];
    for (text, want) in cases {
        let err = resolve(text).unwrap_err();
        assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        assert!(!err.contains("a-relay-password"));
    }
    let settings =
        resolve("[executor]\npass_env = [\"HTTPS_PROXY\"]\n[email.smtp]\ntls = \"none\"\nusername = \"hsr\"\npassword = \"p\"\nallow_plaintext_login = true")
            .unwrap();
    assert_eq!(settings.executor.pass_env, ["HTTPS_PROXY"]);
    assert!(resolve("[email.smtp]\ntls = \"none\"").is_ok(), "no login, nothing to send in clear");
}

#[test]
fn the_example_placeholders_are_refused_by_name() {
    let example = include_str!("../../examples/healthset-responder.toml");
    let err = Config::parse(example).unwrap().refuse_placeholders().unwrap_err().to_string();
    assert_eq!(err, "senders[0].secrets[0]: is the placeholder from the example configuration; generate a secret of your own (see the README)");
    let cases = [
        ("[[senders]]\nname = \"am\"\nauth = \"bearer\"\ntokens = [\"0123456789abcdef\", \"replace-with-a-long-random-token\"]", "senders[0].tokens[1]"),
        ("[admin]\ntokens = [\"replace-with-another-long-random-token\"]", "admin.tokens[0]"),
        ("[email.smtp]\npassword = \"...\"", "email.smtp.password"),
    ];
    for (text, key) in cases {
        let err = Config::parse(text).unwrap().refuse_placeholders().unwrap_err();
        assert_eq!(err.key, key, "{text:?}");
    }
    assert!(Config::parse("[admin]\ntokens = [\"0123456789abcdef0123\"]")
        .unwrap()
        .refuse_placeholders()
        .is_ok());
}

#[test]
fn generated_credentials_are_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = no_credentials(dir.path());
    let path = Credentials::ensure(&mut settings).unwrap().unwrap();
    let first = Credentials::read(dir.path()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let mut again = Config { data_dir: dir.path().to_path_buf(), ..Config::default() }
        .resolve(|_| None)
        .unwrap();
    Credentials::ensure(&mut again).unwrap();
    assert_eq!(Credentials::read(dir.path()).unwrap(), first);
    assert!(auth::token_matches(&again.admin_tokens, first.admin_token.as_deref().unwrap()));
}

#[test]
fn the_store_is_sqlite_unless_postgres_is_named_with_a_url() {
    assert!(matches!(resolve("").unwrap().store, StoreSettings::Sqlite));
    assert_eq!(
        resolve("[store]\nbackend = \"postgres\"").unwrap_err(),
        "store.url: is needed for backend = \"postgres\" (or set HSR_STORE_URL)"
    );
    let url = "postgres://responder:s3cret@db01.contoso.com/healthset";
    let settings = resolve(&format!("[store]\nbackend = \"postgres\"\nurl = {url:?}")).unwrap();
    match settings.store {
        StoreSettings::Postgres { url: found, lease } => {
            assert_eq!((found.as_str(), lease), (url, Duration::from_secs(30)));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !format!(
            "{:?}",
            resolve(&format!("[store]\nbackend = \"postgres\"\nurl = {url:?}")).unwrap().store
        )
        .contains("s3cret"),
        "the URL's password is never printed"
    );
    // HSR_STORE_URL takes the place of url, so the password need not be in the file.
    let env = |name: &str| (name == "HSR_STORE_URL").then(|| url.to_owned());
    let from_env = Config::parse("[store]\nbackend = \"postgres\"\nlease = \"10s\"")
        .unwrap()
        .resolve(env)
        .unwrap();
    assert!(
        matches!(from_env.store, StoreSettings::Postgres { url: ref u, lease } if u == url && lease == Duration::from_secs(10))
    );
    assert_eq!(
        resolve(&format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\nlease = \"1s\""))
            .unwrap_err(),
        "store.lease: must be at least 3s: a claim is renewed every third of it"
    );
    assert_eq!(
        resolve(&format!("[store]\nurl = {url:?}")).unwrap_err(),
        "store.url: is for backend = \"postgres\"; the SQLite store lives in data_dir"
    );
    let err =
        resolve("[store]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@db01:notaport/x\"")
            .unwrap_err();
    assert!(err.starts_with("store.url: is not a PostgreSQL connection URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(resolve("[store]\nbackend = \"mysql\"").unwrap_err().starts_with("store.backend"));
    // TLS is verified against a CA the URL names, or not asked for at all.
    let tls = |url: &str| resolve(&format!("[store]\nbackend = \"postgres\"\nurl = {url:?}"));
    assert_eq!(
        tls("postgres://responder@db01.contoso.com/healthset?sslmode=require").unwrap_err(),
        "store.url: sslmode=require needs sslrootcert=FILE, the CA certificate (PEM) that signed the server's, so that the server is verified"
    );
    assert!(tls("postgres://responder@db01.contoso.com/healthset?sslrootcert=/etc/ca.pem")
        .unwrap_err()
        .starts_with("store.url: sslrootcert is for sslmode=require"));
    assert!(tls(
        "postgres://responder@db01.contoso.com/healthset?sslmode=require&sslrootcert=/etc/ca.pem"
    )
    .is_ok());
    assert!(
        tls("host=db01.contoso.com user=responder sslmode=require sslrootcert=/etc/ca.pem").is_ok()
    );
}
