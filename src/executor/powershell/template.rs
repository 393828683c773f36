//! Script templates: the built-in script of each action, an administrator's `[executor.scripts]` overrides, the
//! placeholders they may use, and [`ps_quote`], which turns every substituted value into one PowerShell literal.
//!
//! This module only builds text. It knows nothing of processes, and nothing of what a script's output means.
//!
//! **Invariant:** a value reaches a script only through [`ps_quote`]; a template is checked when it is parsed, so
//! rendering cannot meet an unknown placeholder.

use crate::incident::ActionKind;

/// Opens a remote session to the server's Exchange Management Shell, runs an action's body, prints `$result`.
const EXCHANGE_FRAME: &str = include_str!("../scripts/exchange-frame.ps1");
/// Runs an action's body against the host itself (WinRM, IIS, a restart), prints `$result`.
const HOST_FRAME: &str = include_str!("../scripts/host-frame.ps1");

/// Where a frame takes its action's body.
const BODY: &str = "{body}";
/// Where the Exchange frame names the cmdlets `Import-PSSession` imports.
const COMMANDS: &str = "{commands}";
/// How an Exchange body's first line names its cmdlets.
const CMDLETS: &str = "# cmdlets:";

/// A value a template may ask for, written `{name}` in the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Server,
    ConnectionUri,
    Authentication,
    Probe,
    HealthSets,
    AppPool,
    RestartTimeoutSeconds,
    Attempt,
    Noforce,
    Service,
    LookbackSeconds,
}

impl Slot {
    const ALL: [Slot; 11] = [
        Slot::Server,
        Slot::ConnectionUri,
        Slot::Authentication,
        Slot::Probe,
        Slot::HealthSets,
        Slot::AppPool,
        Slot::RestartTimeoutSeconds,
        Slot::Attempt,
        Slot::Noforce,
        Slot::Service,
        Slot::LookbackSeconds,
    ];

    fn name(self) -> &'static str {
        match self {
            Slot::Server => "server",
            Slot::ConnectionUri => "connection_uri",
            Slot::Authentication => "authentication",
            Slot::Probe => "probe",
            Slot::HealthSets => "health_sets",
            Slot::AppPool => "app_pool",
            Slot::RestartTimeoutSeconds => "restart_timeout_seconds",
            Slot::Attempt => "attempt",
            Slot::Noforce => "noforce",
            Slot::Service => "service",
            Slot::LookbackSeconds => "lookback_seconds",
        }
    }

    /// Whether an action of this kind has a value for the slot.
    fn offered_by(self, kind: ActionKind) -> bool {
        match self {
            Slot::Server | Slot::ConnectionUri | Slot::Authentication => true,
            Slot::Probe => kind == ActionKind::Probe,
            Slot::HealthSets => kind == ActionKind::ServerHealth,
            Slot::AppPool => kind == ActionKind::RecycleAppPool,
            Slot::RestartTimeoutSeconds => kind == ActionKind::RestartServer,
            Slot::Attempt => kind == ActionKind::DisableActivation,
            Slot::Noforce => kind == ActionKind::IisReset,
            Slot::Service => kind == ActionKind::RestartService,
            Slot::LookbackSeconds => kind == ActionKind::MaHistory,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(Slot),
}

/// A checked script template for one action kind.
#[derive(Debug, Clone)]
pub(super) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// The script the product ships for an action: its body from `scripts/<action>.ps1` inside the frame that suits
    /// it. `None` for `wait`, which runs no script.
    pub(super) fn builtin_text(kind: ActionKind) -> Option<String> {
        let (frame, body) = match kind {
            ActionKind::Probe => (EXCHANGE_FRAME, include_str!("../scripts/probe.ps1")),
            ActionKind::ServerHealth => {
                (EXCHANGE_FRAME, include_str!("../scripts/server_health.ps1"))
            }
            ActionKind::RecycleAppPool => {
                (HOST_FRAME, include_str!("../scripts/recycle_app_pool.ps1"))
            }
            ActionKind::IisReset => (HOST_FRAME, include_str!("../scripts/iis_reset.ps1")),
            ActionKind::DisableActivation => {
                (EXCHANGE_FRAME, include_str!("../scripts/disable_activation.ps1"))
            }
            ActionKind::CopyStatus => (EXCHANGE_FRAME, include_str!("../scripts/copy_status.ps1")),
            ActionKind::RestartServer => {
                (HOST_FRAME, include_str!("../scripts/restart_server.ps1"))
            }
            ActionKind::EnableActivation => {
                (EXCHANGE_FRAME, include_str!("../scripts/enable_activation.ps1"))
            }
            ActionKind::ComponentState => {
                (EXCHANGE_FRAME, include_str!("../scripts/component_state.ps1"))
            }
            ActionKind::RestartService => {
                (HOST_FRAME, include_str!("../scripts/restart_service.ps1"))
            }
            ActionKind::MaHistory => (HOST_FRAME, include_str!("../scripts/ma_history.ps1")),
            ActionKind::Wait | ActionKind::Approval => return None,
        };
        // An Exchange body's first line names the cmdlets it uses (`# cmdlets: A, B`): the session imports those only.
        let (frame, body) = match body.strip_prefix(CMDLETS) {
            Some(rest) => {
                let (names, body) =
                    rest.split_once('\n').expect("a cmdlets line is followed by the body");
                (frame.replacen(COMMANDS, &format!("-CommandName {}", names.trim()), 1), body)
            }
            None => (frame.to_owned(), body),
        };
        // The body goes where the frame's `{body}` line stands, indented as that line is.
        let at = frame.find(BODY).expect("every frame has a {body} line");
        let indent = &frame[frame[..at].rfind('\n').map_or(0, |i| i + 1)..at];
        let body = body.trim_end().replace('\n', &format!("\n{indent}"));
        Some(frame.replacen(BODY, &body, 1))
    }

    /// Checks a template for one action kind and prepares it for standard input.
    ///
    /// `pwsh -Command -` reads standard input as if it were typed at a prompt: each complete statement runs on its
    /// own, a blank line ends a statement early, and a line that does not parse is skipped while the rest still
    /// runs. So the script is sent as one statement, `& { ... }` followed by a blank line, with the template's blank
    /// lines dropped; then a parse error runs nothing, and `exit` inside the block ends the shell with its code.
    ///
    /// A placeholder is `{` letters-and-underscores `}`; anything else in braces (`{ $_.Name }`, `@{ n = 1 }`) is
    /// script text.
    pub(super) fn parse(kind: ActionKind, text: &str) -> Result<Template, String> {
        let body: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
        let text = format!("& {{\n{}\n}}\n\n", body.join("\n"));
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            rest = &rest[open..];
            let name_len =
                rest[1..].bytes().take_while(|b| b.is_ascii_lowercase() || *b == b'_').count();
            if name_len == 0 || rest.as_bytes().get(1 + name_len) != Some(&b'}') {
                literal.push('{');
                rest = &rest[1..];
                continue;
            }
            let name = &rest[1..1 + name_len];
            let slot = Slot::ALL.into_iter().find(|slot| slot.name() == name && slot.offered_by(kind)).ok_or_else(|| {
                format!("{{{name}}} is not a placeholder of {kind}, which offers {} (write a script block as \"{{ ... }}\", with spaces)", offered(kind))
            })?;
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Slot(slot));
            rest = &rest[name_len + 2..];
        }
        literal.push_str(rest);
        pieces.push(Piece::Text(literal));
        if !pieces.contains(&Piece::Slot(Slot::Server)) {
            return Err("never uses {server}: every script must name the server it acts on".into());
        }
        Ok(Template { pieces })
    }

    /// The script with each placeholder replaced by its values, each a quoted literal, separated by commas (a
    /// recycle's several application pools make a PowerShell array).
    pub(super) fn render(&self, values: impl Fn(Slot) -> Vec<String>) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.clone(),
                Piece::Slot(slot) => {
                    values(*slot).iter().map(|value| ps_quote(value)).collect::<Vec<_>>().join(", ")
                }
            })
            .collect()
    }
}

fn offered(kind: ActionKind) -> String {
    Slot::ALL
        .into_iter()
        .filter(|slot| slot.offered_by(kind))
        .map(|slot| format!("{{{}}}", slot.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The characters PowerShell's tokenizer takes for a single quote: the ASCII one and four typographic look-alikes.
fn is_single_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}')
}

/// `s` as one single-quoted PowerShell literal: PowerShell expands nothing inside single quotes (no `$`, no
/// backtick escapes, no subexpressions), and a quote character is written twice to stand for itself. Every quote
/// character PowerShell recognises is doubled, the typographic ones too, since any of them would end the literal.
///
/// The values the executor passes are validated names that hold no quote at all; this is the second wall.
pub fn ps_quote(s: &str) -> String {
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('\'');
    for c in s.chars() {
        if is_single_quote(c) {
            quoted.push(c);
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads `text` as PowerShell reads a single-quoted string: its value, if the whole of `text` is one literal.
    fn parse_literal(text: &str) -> Option<String> {
        let mut chars = text.chars();
        if !chars.next().is_some_and(is_single_quote) {
            return None;
        }
        let mut value = String::new();
        let mut chars = chars.peekable();
        while let Some(c) = chars.next() {
            if is_single_quote(c) {
                match chars.next() {
                    // Two quote characters in a row stand for the second one.
                    Some(next) if is_single_quote(next) => value.push(next),
                    Some(_) => return None,
                    None => return Some(value),
                }
            } else {
                value.push(c);
            }
        }
        None
    }

    #[test]
    fn hostile_strings_stay_one_literal() {
        let hostile = [
            "'; Restart-Computer -Force; '",
            "$(Remove-Item C:\\ -Recurse)",
            "`$env:PATH`n`0",
            "cas01\n'; iisreset; '\r\n",
            "cas01\u{2019}; Stop-Computer; \u{2018}",
            "\u{201A}\u{201B}''\u{2019}\u{2019}",
            "nul\0byte",
            "",
            "'",
            "@{ a = 1 }; {server}",
        ];
        for value in hostile {
            let quoted = ps_quote(value);
            assert_eq!(parse_literal(&quoted).as_deref(), Some(value), "{quoted:?}");
        }
    }

    proptest! {
        #[test]
        fn any_string_stays_one_literal(value in any::<String>()) {
            prop_assert_eq!(parse_literal(&ps_quote(&value)), Some(value));
        }

        #[test]
        fn quote_heavy_strings_stay_one_literal(value in "['\u{2018}\u{2019}\u{201A}\u{201B}a;$`\n]{0,24}") {
            prop_assert_eq!(parse_literal(&ps_quote(&value)), Some(value));
        }
    }

    #[test]
    fn builtin_scripts_parse_and_quote_every_value() {
        for kind in ActionKind::ALL.iter().copied().filter(|k| k.runs_script()) {
            let text = Template::builtin_text(kind).unwrap();
            assert!(
                text.contains("$ErrorActionPreference = 'Stop'")
                    && text.contains("ConvertTo-Json -InputObject $result -Depth 4 -Compress")
            );
            let template = Template::parse(kind, &text).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let script = template.render(|slot| vec![format!("<{}>", slot.name())]);
            assert!(script.starts_with("& {\n") && script.ends_with("\n}\n\n"), "{kind}: {script}");
            assert!(
                !script.trim_end().lines().any(|line| line.trim().is_empty()),
                "{kind}: a blank line would end the statement early"
            );
            assert!(
                script.contains("'<server>'")
                    && !script.contains("{server}")
                    && !script.contains("{body}"),
                "{kind}: {script}"
            );
        }
        assert!(
            Template::builtin_text(ActionKind::Wait).is_none()
                && Template::builtin_text(ActionKind::Approval).is_none()
        );
    }

    #[test]
    fn templates_are_checked_when_parsed() {
        let cases: &[(ActionKind, &str, Result<&str, &str>)] = &[
            (ActionKind::Probe, "Invoke-MonitoringProbe {probe} -Server {server}", Ok("& {\nInvoke-MonitoringProbe '<probe>' -Server '<server>'\n}\n\n")),
            (ActionKind::IisReset, "Invoke-Command -ComputerName {server} {iisreset}", Err("{iisreset} is not a placeholder of iis_reset")),
            (
                ActionKind::IisReset,
                "Restart-WebAppPool {app_pool} -Server {server}",
                Err("{app_pool} is not a placeholder of iis_reset, which offers {server}, {connection_uri}, {authentication}"),
            ),
            (ActionKind::Probe, "Invoke-MonitoringProbe {probe} -Server cas01", Err("never uses {server}")),
            (ActionKind::CopyStatus, "@{ a = 1 }\n\n  \n{ $_ } {} {x1} {A} {server", Err("never uses {server}")),
            (
                ActionKind::CopyStatus,
                "Get-X {server} | % { $_ } | @{n={[string]$_}}\r\n\r\nexit 0",
                Ok("& {\nGet-X '<server>' | % { $_ } | @{n={[string]$_}}\nexit 0\n}\n\n"),
            ),
        ];
        for (kind, text, expected) in cases {
            match (Template::parse(*kind, text), expected) {
                (Ok(template), Ok(want)) => {
                    assert_eq!(template.render(|slot| vec![format!("<{}>", slot.name())]), *want)
                }
                (Err(err), Err(want)) => assert!(err.contains(want), "{text:?}: {err}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
