//! The JSON Schemas of what senders post (native, SCOM and Alertmanager alerts) and of runbook files, generated from
//! the Rust types that read them.
//!
//! `schemas/` in the repository holds the generated documents for senders and editors that never see this crate; a
//! test here fails when a committed file differs from what [`schemas`] produces. The derive describes the shape; this
//! module adds the rules the parsers check after reading a string (host names, Managed Availability names, the
//! Alertmanager version), so a schema refuses what the parser refuses wherever JSON Schema can say it.
//! It knows nothing of HTTP, files or the store.

use schemars::schema_for;
use serde_json::{json, Value};

use crate::alert::alertmanager::AlertmanagerWebhook;
use crate::alert::native::NativeAlert;
use crate::alert::scom::ScomAlert;
use crate::runbook::Runbook;

/// A DNS host name as [`crate::domain::ServerName::parse`] accepts it: at most 253 characters (plus an optional
/// final dot), dot-separated labels of 1 to 63 letters, digits or hyphens, none starting or ending with a hyphen.
pub const HOST_NAME_PATTERN: &str = r"^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$";

/// A health set name as [`crate::domain::HealthSet::parse`] accepts it.
pub const HEALTH_SET_PATTERN: &str = r"^[A-Za-z0-9._-]{1,64}$";

/// A monitor name as [`crate::domain::Monitor::parse`] accepts it.
pub const MONITOR_PATTERN: &str = r"^[A-Za-z0-9._-]{1,128}$";

/// Every schema, by its file name under `schemas/`.
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("alert.schema.json", native_alert()),
        ("scom-alert.schema.json", generated(schema_for!(ScomAlert))),
        ("alertmanager.schema.json", alertmanager()),
        ("runbook.schema.json", runbook()),
    ]
}

fn native_alert() -> Value {
    let mut schema = generated(schema_for!(NativeAlert));
    refine(&mut schema, "/properties/server", json!({"pattern": HOST_NAME_PATTERN}));
    refine(&mut schema, "/properties/health_set", json!({"pattern": HEALTH_SET_PATTERN}));
    refine(&mut schema, "/properties/monitor", json!({"pattern": MONITOR_PATTERN}));
    schema
}

fn alertmanager() -> Value {
    let mut schema = generated(schema_for!(AlertmanagerWebhook));
    refine(&mut schema, "/properties/version", json!({"const": "4"}));
    refine(&mut schema, "/properties/alerts", json!({"minItems": 1}));
    schema
}

fn runbook() -> Value {
    let mut schema = generated(schema_for!(Runbook));
    refine(&mut schema, "/properties/monitor", json!({"pattern": MONITOR_PATTERN}));
    refine(&mut schema, "/properties/health_set", json!({"pattern": HEALTH_SET_PATTERN}));
    refine(
        &mut schema,
        "/definitions/Verify",
        json!({"oneOf": [{"required": ["probe"]}, {"required": ["server_health"]}]}),
    );
    schema
}

fn generated(schema: schemars::schema::RootSchema) -> Value {
    serde_json::to_value(schema).expect("a generated schema is JSON")
}

/// Adds keywords to the subschema at `pointer`. The pointers name properties the types declare, so a miss is a
/// mistake in this file, and the tests meet it first.
fn refine(schema: &mut Value, pointer: &str, keywords: Value) {
    let Value::Object(keywords) = keywords else { unreachable!("keywords are an object") };
    let target = schema
        .pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("the generated schema has no {pointer}"));
    target.extend(keywords);
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::{json, Value};

    use super::*;
    use crate::alert::{self, Format};
    use crate::domain::ServerName;

    /// Set to `1` to write the generated schemas into `schemas/` instead of comparing them.
    const UPDATE: &str = "HSR_UPDATE_SCHEMAS";

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn schema(name: &str) -> Value {
        schemas()
            .into_iter()
            .find(|(file, _)| *file == name)
            .unwrap_or_else(|| panic!("no schema {name}"))
            .1
    }

    fn validator(name: &str) -> jsonschema::Validator {
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema(name))
            .unwrap_or_else(|err| panic!("{name} is not a valid schema: {err}"))
    }

    /// The schema's complaints about one document, one line each; empty when the document is valid.
    fn complaints(name: &str, document: &Value) -> Vec<String> {
        validator(name)
            .iter_errors(document)
            .map(|err| format!("{}: {err}", err.instance_path))
            .collect()
    }

    fn json_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        files
    }

    fn read_json(path: &Path) -> Value {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
    }

    #[test]
    fn committed_schemas_are_the_generated_ones() {
        let dir = root().join("schemas");
        let update = std::env::var(UPDATE).is_ok_and(|value| value == "1");
        if update {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let mut stale = Vec::new();
        for (name, schema) in schemas() {
            let path = dir.join(name);
            let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if update {
                std::fs::write(&path, generated)
                    .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
                stale.push(format!("schemas/{name}"));
            }
        }
        let known: Vec<String> = schemas().iter().map(|(name, _)| name.to_string()).collect();
        for path in json_files(&dir) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                known.contains(&name),
                "schemas/{name} is not generated by schemas::schemas(); remove it or generate it"
            );
        }
        assert!(stale.is_empty(), "{} differ from the types; run `{UPDATE}=1 cargo test --lib schemas` and commit the result", stale.join(", "));
    }

    /// The schema a sender's example is written against, from its file name.
    fn format_of(path: &Path) -> Format {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.contains("alertmanager")
            || path.parent().is_some_and(|dir| dir.ends_with("alertmanager"))
        {
            Format::Alertmanager
        } else if name.contains("scom") || path.parent().is_some_and(|dir| dir.ends_with("scom")) {
            Format::Scom
        } else {
            Format::Native
        }
    }

    fn schema_name(format: Format) -> &'static str {
        match format {
            Format::Native => "alert.schema.json",
            Format::Scom => "scom-alert.schema.json",
            Format::Alertmanager => "alertmanager.schema.json",
        }
    }

    #[test]
    fn every_example_and_fixture_matches_its_schema_and_parses() {
        let dirs =
            ["examples", "examples/alerts", "tests/fixtures/scom", "tests/fixtures/alertmanager"];
        let files: Vec<PathBuf> =
            dirs.iter().flat_map(|dir| json_files(&root().join(dir))).collect();
        assert!(files.len() >= 20, "expected the examples and fixtures, found {files:?}");
        for path in files {
            let format = format_of(&path);
            let complaints = complaints(schema_name(format), &read_json(&path));
            assert!(
                complaints.is_empty(),
                "{} against {}: {complaints:#?}",
                path.display(),
                schema_name(format)
            );
            let body = std::fs::read(&path).unwrap();
            if let Err(err) = alert::parse(format, &body) {
                panic!(
                    "{} matches {} but the parser refuses it: {err}",
                    path.display(),
                    schema_name(format)
                );
            }
        }
    }

    #[test]
    fn builtin_runbooks_match_the_runbook_schema() {
        let dir = root().join("src/runbook/builtin");
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).collect();
        files.retain(|path| path.extension().is_some_and(|ext| ext == "toml"));
        assert_eq!(files.len(), 5, "{files:?}");
        for path in files {
            let runbook: toml::Value =
                toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let complaints =
                complaints("runbook.schema.json", &serde_json::to_value(runbook).unwrap());
            assert!(complaints.is_empty(), "{}: {complaints:#?}", path.display());
        }
    }

    /// Documents every parser refuses: the schema refuses each too, at the field named.
    #[test]
    fn schemas_refuse_what_the_parsers_refuse() {
        let native = |extra: Value| {
            let mut alert = json!({"health_set": "ActiveSync", "server": "cas01.contoso.com", "monitor": "ActiveSyncCTPMonitor"});
            alert.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            alert
        };
        let alertmanager = |extra: Value| {
            let mut webhook = json!({"version": "4", "alerts": [{"status": "firing", "labels": {"health_set": "ActiveSync", "server": "cas01"}, "startsAt": "2026-11-26T10:00:00Z"}]});
            webhook.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            webhook
        };
        let cases: &[(&str, Value, &str)] = &[
            ("alert.schema.json", native(json!({"monitr": "x"})), ""),
            ("alert.schema.json", native(json!({"server": "cas01 contoso"})), "/server"),
            ("alert.schema.json", native(json!({"server": "cas01.contoso.com:443"})), "/server"),
            ("alert.schema.json", native(json!({"health_set": "Active Sync"})), "/health_set"),
            ("alert.schema.json", native(json!({"monitor": "a b"})), "/monitor"),
            ("alert.schema.json", native(json!({"status": "open"})), "/status"),
            ("alert.schema.json", native(json!({"raised_at": "yesterday"})), "/raised_at"),
            ("alert.schema.json", json!({"server": "cas01"}), ""),
            ("alertmanager.schema.json", alertmanager(json!({"version": "3"})), "/version"),
            ("alertmanager.schema.json", alertmanager(json!({"version": 4})), "/version"),
            ("alertmanager.schema.json", alertmanager(json!({"alerts": []})), "/alerts"),
            (
                "alertmanager.schema.json",
                alertmanager(
                    json!({"alerts": [{"status": "pending", "startsAt": "2026-11-26T10:00:00Z"}]}),
                ),
                "/alerts/0/status",
            ),
            ("scom-alert.schema.json", json!({"alertName": ["ActiveSync"]}), "/alertName"),
            (
                "runbook.schema.json",
                json!({"monitor": "M", "health_set": "ActiveSync", "verify": {}}),
                "/verify",
            ),
            (
                "runbook.schema.json",
                json!({"monitor": "M", "health_set": "ActiveSync", "verify": {"probe": "a\\b", "server_health": "A*"}}),
                "/verify",
            ),
            (
                "runbook.schema.json",
                json!({"monitor": "M", "health_set": "ActiveSync", "verify": {"probe": "a\\b"}, "remedies": [{"action": "reboot"}]}),
                "/remedies/0",
            ),
            (
                "runbook.schema.json",
                json!({"monitor": "M", "health_set": "ActiveSync", "verify": {"probe": "a\\b"}, "extra": 1}),
                "",
            ),
        ];
        for (name, document, at) in cases {
            let complaints = complaints(name, document);
            assert!(
                complaints.iter().any(|line| line.starts_with(&format!("{at}: "))),
                "{name} should refuse {document} at {at:?}; it says {complaints:?}"
            );
        }
    }

    #[test]
    fn the_host_name_pattern_agrees_with_the_parser() {
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join(".");
        let names = [
            "cas01",
            "CAS01.contoso.com",
            "cas01.contoso.com.",
            "x",
            "10.0.4.21",
            "a-b.c-d",
            &label,
            &format!("{label}a"),
            &long[..253],
            &format!("{}.", &long[..253]),
            &long[..254],
            "",
            ".",
            "cas01..contoso.com",
            "cas01.contoso.com..",
            ".cas01",
            "-cas01",
            "cas01-",
            "cas01.-contoso",
            "cas_01",
            "cas01 contoso",
            "cas01:443",
            "[2001:db8::5]",
            "cäs01",
            "cas01\n",
        ];
        let validator = validator("alert.schema.json");
        for name in names {
            let alert = json!({"health_set": "ActiveSync", "server": name});
            let parsed = ServerName::parse(name).is_ok();
            assert_eq!(
                validator.is_valid(&alert),
                parsed,
                "{name:?}: the parser says {}",
                if parsed { "valid" } else { "invalid" }
            );
            assert_eq!(
                alert::native::parse(alert.to_string().as_bytes()).is_ok(),
                parsed,
                "{name:?}"
            );
        }
    }
}
