//! The SCOM format of `POST /v1/alerts/scom` (`schemas/scom-alert.schema.json`).
//!
//! SCOM has no webhook of its own: a command notification channel runs a script that posts the alert's variables as
//! JSON, with the camelCase keys of the widely used OpsGenie SCOM script and the string `"Not Present"` where SCOM had
//! no value. Nothing in that JSON is labelled "server" or "health set", so this module finds them: the server in
//! `managedEntityPath`, the health set and monitor in the alert's name, description and custom fields. It knows
//! nothing of HTTP or of what happens to the alert next.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, Schema, SchemaObject};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::{from_json, Alert, AlertStatus, ParseError};
use crate::domain::{mailbox_hint, HealthSet, Monitor, ServerName};
use crate::runbook::{built_in, RunbookSet};
use crate::text::clip;

/// An alert as a SCOM command notification channel posts it. Keys the script adds beyond these are ignored, because
/// every site edits its copy of the script.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(title = "healthset-responder SCOM alert notification")]
pub struct ScomAlert {
    /// The alert's id, a GUID in braces; with the status it identifies the notice, so the same notice posted twice is
    /// recognised as a duplicate.
    pub alert_id: Option<ScomValue>,
    /// The alert's name; the health set and the monitor are looked for here first.
    pub alert_name: Option<ScomValue>,
    /// The alert's description, kept as the alert's message. An `_Mbx:<host>` token in it (from the probe's
    /// `X-MS-Diagnostics` header) names the Mailbox server behind a Client Access probe.
    pub alert_description: Option<ScomValue>,
    /// The resolution state's name (`New`, `Closed` or a custom name) or number (`0` is New, `255` is Closed).
    /// `Closed` and `255` make the notice a resolved one.
    pub resolution_state: Option<ScomValue>,
    /// When the resolution state last changed. Ignored.
    pub resolution_state_last_modified: Option<ScomValue>,
    /// The alert's priority (`Low`, `Medium`, `High`). Ignored.
    pub priority: Option<ScomValue>,
    /// Who owns the alert in SCOM. Ignored.
    pub owner: Option<ScomValue>,
    /// How many times SCOM saw the alert again after raising it. Ignored.
    pub repeat_count: Option<ScomValue>,
    /// The alert's severity (`Information`, `Warning`, `Error`). Ignored.
    pub severity: Option<ScomValue>,
    /// The alert's category, such as `AvailabilityHealth`. Ignored.
    pub category: Option<ScomValue>,
    /// Whether a monitor, rather than a rule, raised the alert. Ignored.
    pub created_by_monitor: Option<ScomValue>,
    /// The display name of the object the alert is about; the server is looked for here when `managedEntityPath`
    /// names none.
    pub managed_entity_source: Option<ScomValue>,
    /// The id of the monitor or rule that raised the alert. Ignored.
    pub workflow_id: Option<ScomValue>,
    /// When the alert last changed. Ignored.
    pub last_modified: Option<ScomValue>,
    /// When the alert was raised, in UTC: RFC 3339, or the `M/d/yyyy h:mm:ss AM` text that PowerShell writes for a
    /// date in US English. Any other text leaves the time unknown.
    pub time_raised: Option<ScomValue>,
    /// The ticket id a connector attached to the alert. Ignored.
    pub ticket_id: Option<ScomValue>,
    /// When the data item behind the alert was created. Ignored.
    pub data_item_create_time: Option<ScomValue>,
    /// The path of the object the alert is about, such as `CAS01.contoso.com` or `CAS01.contoso.com\ActiveSync`;
    /// the server is the host name in it, preferably a fully qualified one.
    pub managed_entity_path: Option<ScomValue>,
    /// The id of the object the alert is about: a GUID, not a server. Ignored.
    #[serde(rename = "managedEntityGUID")]
    pub managed_entity_guid: Option<ScomValue>,
    /// When the alert was added to the SCOM database. Ignored.
    pub time_added: Option<ScomValue>,
    /// The management pack element that raised the alert. Ignored.
    pub mp_element: Option<ScomValue>,
    /// Custom field 1; the health set and monitor are looked for in the custom fields, in order, after the name and
    /// the description.
    pub custom_field1: Option<ScomValue>,
    /// Custom field 2; searched like custom field 1.
    pub custom_field2: Option<ScomValue>,
    /// Custom field 3; searched like custom field 1.
    pub custom_field3: Option<ScomValue>,
    /// Custom field 4; searched like custom field 1.
    pub custom_field4: Option<ScomValue>,
    /// Custom field 5; searched like custom field 1.
    pub custom_field5: Option<ScomValue>,
    /// Custom field 6; searched like custom field 1.
    pub custom_field6: Option<ScomValue>,
    /// Custom field 7; searched like custom field 1.
    pub custom_field7: Option<ScomValue>,
    /// Custom field 8; searched like custom field 1.
    pub custom_field8: Option<ScomValue>,
    /// Custom field 9; searched like custom field 1.
    pub custom_field9: Option<ScomValue>,
    /// Custom field 10; searched like custom field 1.
    pub custom_field10: Option<ScomValue>,
}

/// One value of a SCOM notification. The scripts post every value as a string, and `"Not Present"` (the default of
/// a `$Data[Default='Not Present']/...$` variable) where SCOM had none; a bare number is read as its text, because an
/// edited script may let `ConvertTo-Json` write `"resolutionState": 255`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScomValue(String);

impl ScomValue {
    /// The value without surrounding blanks, unless SCOM said it had none.
    pub fn present(&self) -> Option<&str> {
        // Older copies of the OpsGenie script default `mpElement` to `NotPresent`, without the space.
        let value = self.0.trim();
        let absent = value.is_empty()
            || value.eq_ignore_ascii_case("Not Present")
            || value.eq_ignore_ascii_case("NotPresent");
        (!absent).then_some(value)
    }
}

impl<'de> Deserialize<'de> for ScomValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScomValueVisitor;

        impl Visitor<'_> for ScomValueVisitor {
            type Value = ScomValue;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string or a number")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ScomValue, E> {
                Ok(ScomValue(value.to_owned()))
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<ScomValue, E> {
                Ok(ScomValue(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ScomValue, E> {
                Ok(ScomValue(value.to_string()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ScomValue, E> {
                Ok(ScomValue(value.to_string()))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<ScomValue, E> {
                Ok(ScomValue(value.to_string()))
            }
        }

        deserializer.deserialize_any(ScomValueVisitor)
    }
}

impl JsonSchema for ScomValue {
    fn schema_name() -> String {
        "ScomValue".to_owned()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        SchemaObject {
            instance_type: Some(vec![InstanceType::String, InstanceType::Number].into()),
            metadata: Some(Box::new(Metadata {
                description: Some("A SCOM alert variable as text; \"Not Present\" or an empty string means SCOM had no value".to_owned()),
                ..Metadata::default()
            })),
            ..SchemaObject::default()
        }
        .into()
    }
}

/// Capitalised words that stand next to "health set" in English text without being a health set's name.
const NOT_HEALTH_SETS: [&str; 19] = [
    "A",
    "An",
    "The",
    "This",
    "That",
    "Its",
    "Is",
    "Was",
    "Name",
    "State",
    "Health",
    "Set",
    "Healthy",
    "Unhealthy",
    "Degraded",
    "Disabled",
    "Exchange",
    "Microsoft",
    "Server",
];

/// SCOM's own words that end in "Monitor" without naming a Managed Availability monitor.
const NOT_MONITORS: [&str; 4] =
    ["CreatedByMonitor", "UnitMonitor", "AggregateMonitor", "DependencyMonitor"];

/// Reads a SCOM notification into one alert, recognising the health sets and monitors of the built-in runbooks.
pub fn parse(body: &[u8]) -> Result<Alert, ParseError> {
    parse_with(body, built_in())
}

/// Reads a SCOM notification into one alert, recognising the health sets and monitors of `runbooks` (those in
/// force: a runbook file for another health set makes its names known here too).
pub fn parse_with(body: &[u8], runbooks: &RunbookSet) -> Result<Alert, ParseError> {
    let body = decode(body);
    let raw: ScomAlert = from_json(&body)?;
    raw.into_alert(runbooks)
}

impl ScomAlert {
    fn into_alert(self, runbooks: &RunbookSet) -> Result<Alert, ParseError> {
        // Health set names recognised even where the text does not call them a health set; dotted ones first.
        let known: Vec<&str> =
            runbooks.health_set_names().into_iter().map(HealthSet::as_str).collect();
        let monitor = self.texts().find_map(|text| monitor_in(text, runbooks));
        let mentioned = |among: &[&str]| {
            among
                .iter()
                .find_map(|known| self.texts().find_map(|text| mentioned_health_set(text, known)))
        };
        // A health set the text states as one wins; else the health set of a known monitor (the one mentioned, for a
        // monitor of several health sets); else a known name that is merely mentioned, last because "ActiveSync" on
        // its own is also the product ("Exchange ActiveSync").
        let health_set = self
            .texts()
            .find_map(|text| stated_health_set(text, &known))
            .or_else(|| {
                monitor
                    .as_ref()
                    .and_then(|monitor| inferred_health_set(monitor, runbooks, &mentioned))
            })
            .or_else(|| mentioned(&known));
        // A health set's or monitor's name can look like a host name; it is never the server.
        let not_servers: Vec<&str> = known
            .iter()
            .copied()
            .chain(health_set.as_ref().map(HealthSet::as_str))
            .chain(monitor.as_ref().map(Monitor::as_str))
            .collect();
        let server = present(&self.managed_entity_path)
            .and_then(|path| server_in(path, &not_servers))
            .or_else(|| {
                present(&self.managed_entity_source)
                    .and_then(|source| server_in(source, &not_servers))
            });

        let Some(server) = server else {
            let message = match present(&self.managed_entity_path) {
                Some(path) => format!(
                    "no server host name found in {:?} nor in managedEntitySource",
                    clip(path)
                ),
                None => "is missing, and managedEntitySource names no server host name either"
                    .to_owned(),
            };
            return Err(ParseError::invalid("managedEntityPath", message));
        };
        let Some(health_set) = health_set else {
            return Err(ParseError::invalid(
                "alertName",
                "no health set name was found in alertName, alertDescription or customField1..10",
            ));
        };
        let alert_id = match present(&self.alert_id) {
            Some(id) if id.len() > 256 => {
                return Err(ParseError::invalid("alertId", "is longer than 256 characters"))
            }
            other => other,
        };
        let status = match present(&self.resolution_state) {
            Some(state) if state.eq_ignore_ascii_case("Closed") || state == "255" => {
                AlertStatus::Resolved
            }
            _ => AlertStatus::Firing,
        };
        let message = present(&self.alert_description).unwrap_or_default().to_owned();
        Ok(Alert {
            source_key: alert_id.map(|id| format!("{id}/{}", status.as_str())),
            health_set,
            server,
            monitor,
            mailbox_hint: mailbox_hint(&message),
            message,
            status,
            raised_at: present(&self.time_raised).and_then(parse_time),
        })
    }

    /// The values searched for the health set and the monitor, in the order they are searched.
    fn texts(&self) -> impl Iterator<Item = &str> {
        [
            &self.alert_name,
            &self.alert_description,
            &self.custom_field1,
            &self.custom_field2,
            &self.custom_field3,
            &self.custom_field4,
            &self.custom_field5,
            &self.custom_field6,
            &self.custom_field7,
            &self.custom_field8,
            &self.custom_field9,
            &self.custom_field10,
        ]
        .into_iter()
        .filter_map(present)
    }
}

fn present(value: &Option<ScomValue>) -> Option<&str> {
    value.as_ref().and_then(ScomValue::present)
}

/// Windows PowerShell 5.1's `Invoke-RestMethod` sends a string body as ISO-8859-1 unless the content type names a
/// charset, and a script that writes its JSON to a file first may leave a byte-order mark. A body that is not UTF-8
/// is therefore read as Latin-1, which gives every byte a character, so that an accented name in a description does
/// not cost the alert.
fn decode(body: &[u8]) -> Cow<'_, [u8]> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match std::str::from_utf8(body) {
        Ok(_) => Cow::Borrowed(body),
        Err(_) => {
            Cow::Owned(body.iter().map(|&byte| char::from(byte)).collect::<String>().into_bytes())
        }
    }
}

/// Finds the server in a SCOM object path: the first fully qualified host name in it, else the first part of the
/// path (between `;`, `\`, `/`, `,` or `|`) that is a short host name. Management pack class names such as
/// `Microsoft.Exchange.15.Server` are valid host names too, and are skipped.
fn server_in(path: &str, not_servers: &[&str]) -> Option<ServerName> {
    let is_candidate = |part: &&str| {
        !is_class_name(part) && !not_servers.iter().any(|name| name.eq_ignore_ascii_case(part))
    };
    let fully_qualified = path
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        .map(|token| token.trim_matches(|c| c == '.' || c == '-'))
        .filter(|token| token.contains('.'))
        .filter(is_candidate)
        .find_map(|token| ServerName::parse(token).ok());
    fully_qualified.or_else(|| {
        path.split([';', '\\', '/', ',', '|'])
            .map(str::trim)
            .filter(is_candidate)
            .find_map(|part| ServerName::parse(part).ok())
    })
}

fn is_class_name(token: &str) -> bool {
    let first_label = token.split('.').next().unwrap_or_default();
    ["Microsoft", "System"].iter().any(|namespace| namespace.eq_ignore_ascii_case(first_label))
        && token.contains('.')
}

/// Reads `timeRaised`: RFC 3339, else the US-English text of a PowerShell date (`11/26/2026 9:58:12 AM`) or an ISO
/// date without an offset, both taken as UTC because SCOM keeps alert times in UTC. An unreadable time is not worth
/// refusing the alert for; it is left unknown.
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    const LOCAL_FORMATS: [&str; 4] = [
        "%m/%d/%Y %I:%M:%S %p",
        "%m/%d/%Y %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
    ];
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Some(time.with_timezone(&Utc));
    }
    LOCAL_FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())
        .map(|time| time.and_utc())
}

/// A run of characters that can belong to a Managed Availability name, as it stands in free text.
struct Word<'a> {
    /// The run without the dots, hyphens and underscores at its ends (`ActiveSync.` ending a sentence).
    text: &'a str,
    /// Whether such characters were cut from the end, which means the run ended a sentence or a clause.
    cut_at_end: bool,
    /// The text between this run and the next.
    gap_after: &'a str,
}

/// Splits text into [`Word`]s.
fn words(text: &str) -> Vec<Word<'_>> {
    let is_name_byte =
        |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_');
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if is_name_byte(bytes[at]) {
            let start = at;
            while at < bytes.len() && is_name_byte(bytes[at]) {
                at += 1;
            }
            spans.push((start, at));
        } else {
            at += 1;
        }
    }
    // Every span starts at an ASCII byte and ends before a non-name byte or at the end, so the slices below fall on
    // character boundaries.
    spans
        .iter()
        .enumerate()
        .map(|(index, &(start, end))| {
            let raw = &text[start..end];
            let is_trim = |c: char| matches!(c, '.' | '-' | '_');
            let gap_end = spans.get(index + 1).map_or(text.len(), |next| next.0);
            Word {
                text: raw.trim_matches(is_trim),
                cut_at_end: raw.ends_with(is_trim),
                gap_after: &text[end..gap_end],
            }
        })
        .collect()
}

/// Blanks and quotes only: the words on either side belong to one phrase.
fn is_plain_gap(gap: &str) -> bool {
    gap.chars().all(|c| {
        c.is_whitespace()
            || matches!(c, '"' | '\'' | '\u{2018}' | '\u{2019}' | '\u{201C}' | '\u{201D}')
    })
}

/// A colon or an equals sign between blanks and quotes: the word before labels the word after.
fn is_label_gap(gap: &str) -> bool {
    let mut signs = gap.chars().filter(|c| !c.is_whitespace() && !matches!(c, '"' | '\''));
    matches!((signs.next(), signs.next()), (Some(':' | '='), None))
}

/// Finds a health set that the text states as one: `HealthSet: X`, `Health Set Name = X`, `health set X` or
/// `X health set`.
fn stated_health_set(text: &str, known: &[&str]) -> Option<HealthSet> {
    let words = words(text);
    for start in 0..words.len() {
        let Some(end) = health_set_phrase(&words, start) else { continue };
        let after = words.get(end + 1).map(|word| word.text);
        if is_label_gap(words[end].gap_after) {
            match after.and_then(|word| health_set_candidate(word, known)) {
                Some(health_set) => return Some(health_set),
                None => continue,
            }
        }
        let before = start
            .checked_sub(1)
            .map(|index| &words[index])
            .filter(|word| !word.cut_at_end && is_plain_gap(word.gap_after));
        let after = after.filter(|_| is_plain_gap(words[end].gap_after));
        if let Some(health_set) = before
            .and_then(|word| health_set_candidate(word.text, known))
            .or_else(|| after.and_then(|word| health_set_candidate(word, known)))
        {
            return Some(health_set);
        }
    }
    None
}

/// The index of the last word of a "health set" phrase that begins at `start`, if one does.
fn health_set_phrase(words: &[Word<'_>], start: usize) -> Option<usize> {
    const ONE_WORD: [&str; 5] =
        ["HealthSet", "Health-Set", "Health_Set", "HealthSetName", "Health_Set_Name"];
    let first = &words[start];
    let followed_by = |index: usize, next: &str| {
        !words[index].cut_at_end
            && is_plain_gap(words[index].gap_after)
            && words.get(index + 1).is_some_and(|word| word.text.eq_ignore_ascii_case(next))
    };
    let mut end = if ONE_WORD.iter().any(|phrase| phrase.eq_ignore_ascii_case(first.text)) {
        start
    } else if first.text.eq_ignore_ascii_case("health") && followed_by(start, "set") {
        start + 1
    } else {
        return None;
    };
    if followed_by(end, "name") {
        end += 1;
    }
    Some(end)
}

fn health_set_candidate(word: &str, known: &[&str]) -> Option<HealthSet> {
    if let Some(known) = known.iter().find(|known| known.eq_ignore_ascii_case(word)) {
        return HealthSet::parse(known).ok();
    }
    let capitalised = word.starts_with(|c: char| c.is_ascii_uppercase());
    let is_word = NOT_HEALTH_SETS.iter().any(|not| not.eq_ignore_ascii_case(word));
    let is_workflow =
        ["Monitor", "Probe", "Responder"].iter().any(|suffix| ends_with_ignore_case(word, suffix));
    if !capitalised || is_word || is_workflow {
        return None;
    }
    HealthSet::parse(word).ok()
}

/// Finds a known health set's name standing on its own in the text.
fn mentioned_health_set(text: &str, known: &str) -> Option<HealthSet> {
    words(text)
        .iter()
        .any(|word| word.text.eq_ignore_ascii_case(known))
        .then(|| HealthSet::parse(known).ok())
        .flatten()
}

/// Finds the first word that names a monitor: one that ends in `Monitor`, such as `ActiveSyncCTPMonitor`.
fn monitor_in(text: &str, runbooks: &RunbookSet) -> Option<Monitor> {
    words(text).iter().find_map(|word| monitor_candidate(word.text, runbooks))
}

fn monitor_candidate(word: &str, runbooks: &RunbookSet) -> Option<Monitor> {
    let named = word.len() > "Monitor".len()
        && ends_with_ignore_case(word, "Monitor")
        && word.starts_with(|c: char| c.is_ascii_alphabetic());
    if !named || NOT_MONITORS.iter().any(|not| not.eq_ignore_ascii_case(word)) {
        return None;
    }
    // A monitor the runbooks know is spelled as they spell it.
    match runbooks.for_monitor(word).first() {
        Some((runbook, _)) => Some(runbook.monitor.clone()),
        None => Monitor::parse(word).ok(),
    }
}

/// For alerts that name the monitor but not the health set: the health set the runbooks give the monitor (they
/// follow the tables of Microsoft's troubleshooting pages). A monitor of several health sets
/// (`RequestsQueuedGt500Monitor`: ActiveSync and IMAP) takes the one the text mentions, else the first.
fn inferred_health_set(
    monitor: &Monitor,
    runbooks: &RunbookSet,
    mentioned: &dyn Fn(&[&str]) -> Option<HealthSet>,
) -> Option<HealthSet> {
    let candidates: Vec<&str> = runbooks
        .for_monitor(monitor.as_str())
        .into_iter()
        .map(|(runbook, _)| runbook.health_set.as_str())
        .collect();
    match candidates.as_slice() {
        [] => None,
        [only] => HealthSet::parse(only).ok(),
        several => mentioned(several).or_else(|| HealthSet::parse(several[0]).ok()),
    }
}

fn ends_with_ignore_case(word: &str, suffix: &str) -> bool {
    word.len() >= suffix.len()
        && word.as_bytes()[word.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

#[cfg(test)]
mod tests;
