//! The SCOM command-channel script in examples/, checked against the signature the service verifies.

use super::*;

/// The script's code: the comment-based help and `#` comments removed, lines trimmed.
fn script_code() -> Vec<&'static str> {
    let mut in_help = false;
    let mut code = Vec::new();
    for line in SCOM_SCRIPT.lines().map(str::trim) {
        if in_help || line.starts_with("<#") {
            // Inside the help block until the line that closes it.
            in_help = !line.contains("#>");
        } else if !line.is_empty() && !line.starts_with('#') {
            code.push(line);
        }
    }
    code
}

/// The right-hand side of the script's one assignment to `$name`.
fn assignment(code: &[&'static str], name: &str) -> &'static str {
    let prefix = format!("{name} =");
    let found: Vec<&str> =
        code.iter().filter_map(|line| line.strip_prefix(prefix.as_str())).map(str::trim).collect();
    assert_eq!(found.len(), 1, "one assignment to {name} in the script: {found:?}");
    found[0]
}

/// The variable inside the first `GetBytes($...)` of a line.
fn get_bytes_argument(line: &str) -> &str {
    let start = line.find("GetBytes($").unwrap_or_else(|| panic!("no GetBytes($...) in {line:?}"))
        + "GetBytes(".len();
    let end = start + line[start..].find(')').unwrap();
    &line[start..end]
}

/// A PowerShell variable reference: `$` and a name of letters and digits.
fn is_variable(text: &str) -> bool {
    text.strip_prefix('$')
        .is_some_and(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// A light structural check of examples/scom-notification-channel.ps1, since PowerShell is not here to run it: the
/// signing recipe is read out of the script's code by plain text matching (the crate has no regex dependency, and a
/// script this regular does not need one) and is checked to be the Standard Webhooks one the service verifies; then
/// the recipe, as extracted, signs a body made of the script's own JSON keys, and the real service accepts it. This
/// proves the recipe and the field names, not PowerShell's execution of them.
#[tokio::test]
async fn the_scom_channel_script_signs_the_way_the_service_verifies() {
    let code = script_code();

    // The HMAC is computed over the UTF-8 bytes of one variable: the string to sign.
    let hash_lines: Vec<&str> =
        code.iter().copied().filter(|line| line.contains(".ComputeHash(")).collect();
    assert_eq!(hash_lines.len(), 1, "{hash_lines:?}");
    let signature_line = hash_lines[0];
    let signed_variable = get_bytes_argument(signature_line);
    assert!(signature_line.contains("[System.Text.Encoding]::UTF8.GetBytes("), "{signature_line}");
    let template = assignment(&code, signed_variable);
    let parts: Vec<&str> = template
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .expect("the string to sign is one expandable string")
        .split('.')
        .collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|part| is_variable(part)),
        "the string to sign is \"$id.$timestamp.$body\"-shaped: {template}"
    );
    let (id_variable, timestamp_variable, body_variable) = (parts[0], parts[1], parts[2]);

    // Each part is what Standard Webhooks says it is.
    assert!(
        assignment(&code, id_variable).starts_with("[guid]::NewGuid()"),
        "the webhook-id is a new GUID"
    );
    let timestamp = assignment(&code, timestamp_variable);
    assert!(
        timestamp.contains("[DateTime]::UtcNow") && timestamp.contains("TotalSeconds"),
        "the timestamp is Unix seconds: {timestamp}"
    );
    assert!(
        code.contains(&"$epoch = New-Object DateTime 1970, 1, 1, 0, 0, 0, ([DateTimeKind]::Utc)")
    );
    assert!(
        assignment(&code, body_variable).contains("ConvertTo-Json -Compress"),
        "the signed body is the JSON"
    );
    let sent = assignment(&code, "$bodyBytes");
    assert_eq!(
        sent,
        format!("[System.Text.Encoding]::UTF8.GetBytes({body_variable})"),
        "the body is sent as the UTF-8 bytes of the signed JSON"
    );

    // The signature value and the key.
    let signature_variable = signature_line.split('=').next().unwrap().trim();
    assert!(is_variable(signature_variable), "{signature_line}");
    assert!(
        signature_line.contains("= 'v1,' + [Convert]::ToBase64String($hmac.ComputeHash("),
        "{signature_line}"
    );
    assert_eq!(assignment(&code, "$hmac"), "New-Object System.Security.Cryptography.HMACSHA256");
    assert_eq!(assignment(&code, "$hmac.Key"), "$key");
    assert_eq!(
        assignment(&code, "$key"),
        "[Convert]::FromBase64String($secret.Substring(6))",
        "the key is the base64 after \"whsec_\""
    );
    assert!(code.iter().any(|line| line.contains("$secret.StartsWith('whsec_')")));

    // The header names, and what each carries.
    let header = |name: &str| {
        let prefix = format!("'{name}'");
        let found: Vec<&str> = code
            .iter()
            .filter_map(|line| line.strip_prefix(prefix.as_str()))
            .filter_map(|rest| rest.trim().strip_prefix('='))
            .map(str::trim)
            .collect();
        assert_eq!(found.len(), 1, "header {name}: {found:?}");
        found[0]
    };
    assert_eq!(header("webhook-id"), id_variable);
    assert_eq!(header("webhook-timestamp"), format!("[string] {timestamp_variable}"));
    assert_eq!(header("webhook-signature"), signature_variable);
    let post = code
        .iter()
        .find(|line| line.contains("Invoke-RestMethod"))
        .expect("an Invoke-RestMethod call");
    for part in [
        "-Method Post",
        "-ContentType 'application/json; charset=utf-8'",
        "-Headers $headers",
        "-Body $bodyBytes",
    ] {
        assert!(post.contains(part), "Invoke-RestMethod without {part}: {post}");
    }

    // Windows PowerShell 5.1: none of PowerShell 7's operators or parameters.
    for ps7 in [
        "??",
        "?.",
        "&&",
        "||",
        " ? ",
        "-Parallel",
        "-AsHashtable",
        "-SkipHttpErrorCheck",
        "-StatusCodeVariable",
        "-SkipCertificateCheck",
        "ToUnixTimeSeconds",
    ] {
        assert!(
            code.iter().all(|line| !line.contains(ps7)),
            "{ps7:?} does not work in Windows PowerShell 5.1"
        );
    }
    // No key in the script: every "whsec_" is followed by something other than a key.
    for (at, _) in SCOM_SCRIPT.match_indices("whsec_") {
        let key: String = SCOM_SCRIPT[at + 6..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "+/=".contains(*c))
            .collect();
        assert!(key.len() < 16, "a secret written into the script: whsec_{key}");
    }

    // The documented channel command line runs the script with -File, and passes only parameters the script declares.
    let declared: HashSet<&str> = code
        .iter()
        .filter_map(|line| line.split("] $").nth(1))
        .filter_map(|rest| rest.split([' ', ',', '=']).next())
        .collect();
    let command_line = SCOM_SCRIPT
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("-NoLogo"))
        .expect("the Command Line Parameters string");
    assert!(
        command_line.contains(" -File \"") && !command_line.contains("-Command"),
        "{command_line}"
    );
    let after_file = command_line.split(".ps1\" ").nth(1).unwrap();
    let passed: Vec<&str> = after_file
        .split(" -")
        .map(|arg| arg.trim_start_matches('-').split(' ').next().unwrap())
        .collect();
    assert!(passed.len() > 20, "{passed:?}");
    for name in &passed {
        assert!(
            declared.contains(name),
            "the command line passes -{name}, which the script does not declare ({declared:?})"
        );
    }
    for variable in [
        "AlertId",
        "AlertName",
        "AlertDescription",
        "ResolutionState",
        "ManagedEntityPath",
        "TimeRaised",
        "Custom1",
        "Custom10",
    ] {
        assert!(
            command_line.contains(&format!(
                "\"$Data[Default='Not Present']/Context/DataItem/{variable}$\""
            )),
            "{variable}"
        );
    }

    // The JSON keys the script writes are exactly the fields of the SCOM schema.
    let payload_start =
        code.iter().position(|line| *line == "$payload = [ordered]@{").expect("the payload");
    let keys: HashSet<&str> = code[payload_start + 1..]
        .iter()
        .take_while(|line| **line != "}")
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    let schema: Value = serde_json::from_str(SCOM_SCHEMA).unwrap();
    let fields: HashSet<&str> =
        schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, fields, "the script's JSON keys against schemas/scom-alert.schema.json");

    // The recipe as extracted, applied to a body of the script's keys, is accepted by the real service.
    let app = spawn("", true).await;
    let mut body = serde_json::Map::new();
    for key in &keys {
        body.insert((*key).to_owned(), json!("Not Present"));
    }
    body.insert("alertId".into(), json!("{9A3B5C7D-1E2F-4A6B-8C0D-2E4F6A8B0C1D}"));
    body.insert(
        "alertName".into(),
        json!("ActiveSync health set unhealthy (ActiveSyncCTPMonitor)"),
    );
    body.insert("alertDescription".into(), json!("Réponse: 503 Diagnostics header:_Cas:CAS02.contoso.com_Mbx:MBX02.contoso.com_Dc:DC01.contoso.com_"));
    body.insert("resolutionState".into(), json!("New"));
    body.insert("timeRaised".into(), json!("2026-11-26T09:58:12Z"));
    body.insert("managedEntityPath".into(), json!("CAS02.contoso.com"));
    let body = serde_json::to_string(&Value::Object(body)).unwrap();
    let (webhook_id, now) =
        ("3f2c1d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f", chrono::Utc::now().timestamp().to_string());
    let to_sign = template
        .trim_matches('"')
        .replace(body_variable, &body)
        .replace(timestamp_variable, &now)
        .replace(id_variable, webhook_id);
    assert_eq!(to_sign, format!("{webhook_id}.{now}.{body}"));
    let key = BASE64.decode(&SECRET["whsec_".len()..]).unwrap();
    let signature = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    };
    assert_eq!(
        signature,
        auth::sign_standard(
            &Secret::parse_whsec(SECRET).unwrap(),
            webhook_id,
            now.parse().unwrap(),
            body.as_bytes()
        )
    );
    let response = app
        .http
        .post(format!("{}/v1/alerts/scom", app.url))
        .header("content-type", "application/json; charset=utf-8")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", &now)
        .header("webhook-signature", signature)
        .body(body.clone().into_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    let stored = alert(&app, &answer["alerts"][0]["alert_id"]).await;
    assert_eq!(
        (&stored["server"], &stored["monitor"], &stored["mailbox_hint"]),
        (&json!("cas02.contoso.com"), &json!("ActiveSyncCTPMonitor"), &json!("mbx02.contoso.com"))
    );
    assert_eq!(stored["raw_body"], body, "the UTF-8 body arrives byte for byte");
}
