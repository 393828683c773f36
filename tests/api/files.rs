//! The service's own files, as an operator finds them: `credentials.toml` never changes by itself, and the data
//! directory and everything the service writes in it are readable by the service's user only.

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
    std::fs::write(home.path().join("healthset-responder.toml"), "listen = \"127.0.0.1:0\"\n").unwrap();
    let data = home.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let credentials = data.join("credentials.toml");
    let text = "webhook_secret = \"whsec_c2VjcmV0IGtleSB0aGF0IG11c3Qgc3RheQ==\"\nadmin_token = \"an-admin-token-that-must-stay\"\nurl = 8080\n";
    std::fs::write(&credentials, text).unwrap();
    let (code, stderr) = run(home.path(), &["serve"]);
    assert_eq!(code, 2, "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(line.contains("data/credentials.toml") && line.contains("url (line 3): invalid type"), "{stderr}");
    assert!(!stderr.contains("must-stay") && !stderr.contains("c2VjcmV0"), "no secret in the message: {stderr}");
    assert_eq!(std::fs::read_to_string(&credentials).unwrap(), text, "the file is not regenerated");
}
