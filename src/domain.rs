//! Validated names that the rest of the crate passes around instead of strings, and durations as people write them.
//!
//! Everything that reaches a runbook, a store row or a PowerShell script was parsed here first, so inner code never
//! re-checks a string. This module knows nothing of HTTP, SQL or processes.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::text::clip;

/// Why a name was refused; the message says what is wrong with the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(String);

/// A DNS host name (FQDN or short), stored lower-case because Exchange compares server names case-insensitively.
///
/// Invariant: 1 to 253 characters, dot-separated labels of 1 to 63 ASCII letters, digits or hyphens, no label
/// starting or ending with a hyphen. Such a value is safe inside a single-quoted PowerShell literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ServerName(String);

impl ServerName {
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let name = raw.strip_suffix('.').unwrap_or(raw);
        if name.is_empty() {
            return Err(InvalidName("is empty, expected a host name".into()));
        }
        if name.len() > 253 {
            return Err(InvalidName(format!(
                "is {} characters long, a host name has at most 253",
                name.len()
            )));
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(InvalidName(format!("{:?} is not a host name: each dot-separated label must have 1 to 63 characters", clip(raw))));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(InvalidName(format!(
                    "{:?} is not a host name: a label cannot start or end with '-'",
                    clip(raw)
                )));
            }
            if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(InvalidName(format!(
                    "{:?} is not a host name: only letters, digits, '-' and '.' are allowed",
                    clip(raw)
                )));
            }
        }
        Ok(Self(name.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServerName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        ServerName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Declares a name type made of letters, digits and a few punctuation characters, as Managed Availability names are.
macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $extra:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, InvalidName> {
                if raw.is_empty() {
                    return Err(InvalidName(concat!("is empty, expected ", $what).into()));
                }
                if raw.len() > $max {
                    return Err(InvalidName(format!(concat!("is {} characters long, ", $what, " has at most {}"), raw.len(), $max)));
                }
                if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || $extra.as_bytes().contains(&b)) {
                    return Err(InvalidName(format!(
                        concat!("{:?} is not ", $what, ": only letters, digits and {:?} are allowed"),
                        clip(raw),
                        $extra
                    )));
                }
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Managed Availability names are case-insensitive; this compares them so.
            pub fn matches(&self, other: &str) -> bool {
                self.0.eq_ignore_ascii_case(other)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// A Managed Availability health set, such as `ActiveSync` or `ActiveSync.Protocol`.
    HealthSet,
    "a health set name",
    64,
    "._-"
);

identifier!(
    /// A Managed Availability monitor, such as `ActiveSyncCTPMonitor`.
    Monitor,
    "a monitor name",
    128,
    "._-"
);

identifier!(
    /// A Managed Availability probe, such as `ActiveSyncCTPProbe`.
    ProbeName,
    "a probe name",
    128,
    "._-"
);

identifier!(
    /// An IIS application pool, such as `MSExchangeSyncAppPool`.
    AppPool,
    "an application pool name",
    128,
    "._-"
);

identifier!(
    /// A Windows service, such as `MSExchangeIMAP4BE`.
    ServiceName,
    "a Windows service name",
    256,
    "._-"
);

/// Which health sets a `Get-ServerHealth` check looks at: a name, or a prefix ending in `*` (`ActiveSync*`), as
/// PowerShell's `-like` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HealthSetPattern(String);

impl HealthSetPattern {
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let name = raw.strip_suffix('*').unwrap_or(raw);
        HealthSet::parse(name).map_err(|err| {
            InvalidName(format!("{err} (a pattern is a health set name, optionally ending in '*')"))
        })?;
        Ok(Self(raw.to_owned()))
    }

    pub fn exact(health_set: &HealthSet) -> Self {
        Self(health_set.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a health set matches, case-insensitively, as `-like` does.
    pub fn matches(&self, health_set: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => {
                health_set.len() >= prefix.len()
                    && health_set[..prefix.len()].eq_ignore_ascii_case(prefix)
            }
            None => self.0.eq_ignore_ascii_case(health_set),
        }
    }
}

impl fmt::Display for HealthSetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HealthSetPattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        HealthSetPattern::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Finds the `_Mbx:` hint: the Mailbox server behind a CAS probe, as the probe's `X-MS-Diagnostics` header names it.
///
/// The token `_Mbx:` (any case) is followed by a host name that ends at the first character that cannot be in a
/// host name; a value that is not a host name (the probe's own `UnkownMailboxServer`, say) is no hint. The first
/// token that names a valid host wins.
pub fn mailbox_hint(message: &str) -> Option<ServerName> {
    const TOKEN: &[u8] = b"_mbx:";
    let bytes = message.as_bytes();
    let mut from = 0;
    while let Some(offset) = find_ignore_case(&bytes[from..], TOKEN) {
        let start = from + offset + TOKEN.len();
        let len = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'.')
            .count();
        let candidate = message[start..start + len].trim_end_matches('.');
        if let Ok(server) = ServerName::parse(candidate) {
            if is_plausible_host(&server) {
                return Some(server);
            }
        }
        from = start;
    }
    None
}

/// The probe writes `UnkownMailboxServer` (sic) when it cannot name a Mailbox server; such placeholders are valid
/// DNS labels but not servers.
fn is_plausible_host(server: &ServerName) -> bool {
    const PLACEHOLDERS: [&str; 3] =
        ["unkownmailboxserver", "unknownmailboxserver", "nodiagnosticsheaderreturned"];
    !PLACEHOLDERS.contains(&server.as_str())
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window.eq_ignore_ascii_case(needle))
}

/// A duration written as humans do: `"30s"`, `"10m"`, `"4h"`, `"90days"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        humantime::parse_duration(&raw).map(Dur).map_err(|err| {
            serde::de::Error::custom(format!(
                "{raw:?} is not a duration like \"30s\", \"10m\" or \"4h\" ({err})"
            ))
        })
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl Dur {
    pub const fn minutes(m: u64) -> Dur {
        Dur(Duration::from_secs(m * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_host_names_compared_case_insensitively() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("cas01.contoso.com", Ok("cas01.contoso.com")),
            ("CAS01.Contoso.COM", Ok("cas01.contoso.com")),
            ("mbx01", Ok("mbx01")),
            ("mbx01.contoso.com.", Ok("mbx01.contoso.com")),
            ("ex-2013-cas", Ok("ex-2013-cas")),
            ("", Err("is empty")),
            ("cas01..contoso.com", Err("1 to 63 characters")),
            ("-cas01.contoso.com", Err("cannot start or end")),
            ("cas01.contoso.com'; Restart-Computer", Err("only letters")),
            ("cas 01", Err("only letters")),
            ("cas01.contoso.com:8080", Err("only letters")),
            ("cas_01.contoso.com", Err("only letters")),
        ];
        for (input, expected) in cases {
            match (ServerName::parse(input), expected) {
                (Ok(name), Ok(want)) => assert_eq!(name.as_str(), *want, "input {input:?}"),
                (Err(err), Err(want)) => {
                    assert!(err.to_string().contains(want), "input {input:?}: {err}")
                }
                (got, want) => panic!("input {input:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(ServerName::parse(&"a".repeat(64)).is_err());
        assert!(ServerName::parse(&["a"; 128].join(".")).is_err());
    }

    #[test]
    fn mailbox_hint_from_realistic_messages() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "Diagnostics header:[ClientAccessServer=CAS01,BackEndServer=mbx01.contoso.com]_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_Cookie:1",
                Some("mbx01.contoso.com"),
            ),
            ("Error occurred:\r\n\r\nUser: eas-probe\r\nDiagnostics header:_mbx:Mbx02.Contoso.com_", Some("mbx02.contoso.com")),
            ("probe failed _MBX:mbx03.contoso.com.", Some("mbx03.contoso.com")),
            ("probe failed (_Mbx:mbx04.contoso.com), see log", Some("mbx04.contoso.com")),
            ("_Mbx:mbx05;_Dc:dc01", Some("mbx05")),
            ("no hint in this message", None),
            ("_Mbx:UnkownMailboxServer_Dc:DC01.contoso.com", None),
            ("_Mbx:NoDiagnosticsHeaderReturned", None),
            ("_Mbx: mbx01.contoso.com", None),
            ("_Mbx:", None),
            ("_Mbx:-bad-.contoso.com", None),
            ("_Mbx:UnkownMailboxServer then _Mbx:mbx06.contoso.com", Some("mbx06.contoso.com")),
            ("ünïcödé _Mbx:mbx07.contoso.com ✓", Some("mbx07.contoso.com")),
        ];
        for (message, expected) in cases {
            let hint = mailbox_hint(message);
            assert_eq!(hint.as_ref().map(ServerName::as_str), *expected, "message {message:?}");
        }
    }

    #[test]
    fn health_sets_and_monitors_refuse_punctuation() {
        assert_eq!(
            HealthSet::parse("ActiveSync.Protocol").unwrap().as_str(),
            "ActiveSync.Protocol"
        );
        assert!(HealthSet::parse("ActiveSync\\Probe")
            .unwrap_err()
            .to_string()
            .contains("only letters"));
        assert!(Monitor::parse("").unwrap_err().to_string().contains("is empty"));
        assert!(Monitor::parse("ActiveSyncCTPMonitor").unwrap().matches("activesyncctpmonitor"));
        let pattern = HealthSetPattern::parse("ActiveSync*").unwrap();
        assert!(
            pattern.matches("ActiveSync.Protocol")
                && pattern.matches("activesync")
                && !pattern.matches("OWA")
        );
        assert!(HealthSetPattern::parse("Active*Sync").is_err());
    }
}
