//! The HTML part of an escalation email: one column, inline styles (mail clients drop style sheets), large type,
//! commands in boxes that wrap; it reads on a phone and in Outlook. Every piece of text passes through [`escape`].

use std::fmt::Write as _;

use super::{
    escape, shell_arg, Content, Tone, SUPPORT_FORWARD, SUPPORT_INTRO, SUPPORT_OWN_PROCEDURE,
    SUPPORT_URL,
};

impl Content {
    /// The HTML part: one column, inline styles, large type; reads on a phone and in Outlook.
    pub(in crate::mailer) fn html(&self, subject: &str) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n</head>\n",
            escape(subject)
        );
        out.push_str("<body style=\"margin:0;padding:0;background:#f3f4f6;\">\n");
        let _ = writeln!(
            out,
            "<div style=\"display:none;max-height:0;overflow:hidden;\">{}</div>",
            escape(&format!("{} {}", self.summary, self.reason))
        );
        out.push_str(
            "<div style=\"max-width:680px;margin:0 auto;padding:12px;font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;\
             font-size:16px;line-height:1.45;color:#111827;\">\n",
        );
        let _ = writeln!(
            out,
            "<div style=\"background:{};color:#ffffff;padding:14px 16px;border-radius:8px 8px 0 0;\">\
             <div style=\"font-size:13px;font-weight:700;letter-spacing:0.06em;\">{}</div>\
             <div style=\"font-size:20px;font-weight:700;overflow-wrap:anywhere;\">{}</div>\
             <div style=\"font-size:16px;overflow-wrap:anywhere;\">on {}</div></div>",
            self.banner.banner(),
            escape(&self.headline),
            escape(&self.title),
            escape(&self.server)
        );
        out.push_str("<div style=\"background:#ffffff;padding:4px 16px 16px 16px;border:1px solid #e5e7eb;border-top:0;border-radius:0 0 8px 8px;\">\n");
        let _ = writeln!(
            out,
            "<p style=\"margin:12px 0 4px 0;font-weight:600;\">{}</p>",
            escape(&self.summary)
        );
        let _ = writeln!(
            out,
            "<p style=\"margin:4px 0 0 0;\"><span style=\"color:#6b7280;\">Reason:</span> {}</p>",
            escape(&self.reason)
        );
        if !self.links.is_empty() {
            out.push_str("<p style=\"margin:14px 0 0 0;\">");
            for (label, link) in &self.links {
                let colour = if *label == "Approve" { "#15803d" } else { "#b91c1c" };
                let _ = write!(
                    out,
                    "<a href=\"{}\" style=\"display:inline-block;background:{colour};color:#ffffff;font-weight:700;text-decoration:none;padding:10px 18px;\
                     border-radius:6px;margin:0 10px 8px 0;\">{}</a>",
                    escape(link),
                    escape(label)
                );
            }
            out.push_str("</p>\n");
        }

        section(&mut out, "What you must know now");
        if self.notes.is_empty() {
            out.push_str("<p style=\"margin:0;\">Nothing beyond the reason above.</p>\n");
        }
        for note in &self.notes {
            let (fg, bg, border) = note.tone.colours();
            let _ = write!(
                out,
                "<div style=\"background:{bg};border-left:4px solid {border};color:{fg};padding:10px 12px;margin:0 0 10px 0;border-radius:4px;\">{}",
                escape(&note.text)
            );
            if let Some(command) = &note.command {
                out.push_str(&code(command));
            }
            out.push_str("</div>\n");
        }

        match &self.final_check {
            Some((label, step)) => {
                section(&mut out, label);
                let _ = writeln!(
                    out,
                    "<p style=\"margin:0 0 4px 0;\">{} on <strong>{}</strong> <span style=\"color:#6b7280;\">at {}</span></p>",
                    badge(&step.outcome, step.tone),
                    escape(&step.server),
                    escape(&step.when)
                );
                out.push_str(&code(&step.command));
                if !step.detail.is_empty() {
                    let _ = writeln!(out, "<div style=\"{DETAIL}\">{}</div>", escape(&step.detail));
                }
            }
            None => {
                section(&mut out, "Final probe");
                out.push_str("<p style=\"margin:0;\">No probe or health check ran before automation stopped.</p>\n");
            }
        }

        section(&mut out, "The alert");
        facts(&mut out, &self.alert, "break-word");
        match &self.message {
            Some(message) => {
                out.push_str("<div style=\"color:#6b7280;margin:8px 0 2px 0;\">Message</div>\n");
                let _ = writeln!(
                    out,
                    "<blockquote style=\"margin:0;padding:8px 12px;border-left:4px solid #d1d5db;background:#f9fafb;white-space:pre-wrap;\
                     overflow-wrap:anywhere;word-break:break-word;font-size:14px;\">{}</blockquote>",
                    escape(message)
                );
            }
            None => out.push_str("<p>No alert is recorded for this incident.</p>\n"),
        }
        if !self.extra_alerts.is_empty() {
            out.push_str("<div style=\"color:#6b7280;margin:10px 0 2px 0;\">Further alerts attached to this incident</div>\n<ul style=\"margin:0;padding-left:20px;font-size:14px;\">\n");
            for alert in &self.extra_alerts {
                let _ =
                    writeln!(out, "<li style=\"overflow-wrap:anywhere;\">{}</li>", escape(alert));
            }
            if self.more_alerts > 0 {
                let _ = writeln!(out, "<li>and {} more</li>", self.more_alerts);
            }
            out.push_str("</ul>\n");
        }

        section(&mut out, "Timeline <span style=\"font-weight:400;color:#6b7280;font-size:14px;\">(times in UTC)</span>");
        if self.steps.is_empty() {
            out.push_str("<p style=\"margin:0;\">No step ran.</p>\n");
        }
        for step in &self.steps {
            let (_, _, border) = step.tone.colours();
            let took = step
                .took
                .as_deref()
                .map(|t| format!(" <span style=\"color:#6b7280;\">({})</span>", escape(t)))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<div style=\"border-left:4px solid {border};padding:2px 0 2px 10px;margin:0 0 14px 0;\">\
                 <div><span style=\"color:#6b7280;\">#{} {}</span></div>\
                 <div style=\"overflow-wrap:anywhere;\"><strong>{}</strong> on {} {}{took}</div>",
                step.seq,
                escape(&step.when),
                escape(&step.action),
                escape(&step.server),
                badge(&step.outcome, step.tone)
            );
            out.push_str(&code(&step.command));
            if !step.detail.is_empty() {
                let _ = write!(out, "<div style=\"{DETAIL}\">{}</div>", escape(&step.detail));
            }
            out.push_str("</div>\n");
        }

        if self.escalates {
            section(&mut out, "Microsoft Support");
            let _ = writeln!(
                out,
                "<p style=\"margin:0 0 6px 0;\">{}</p>\n<ol style=\"margin:0;padding-left:22px;\">",
                escape(SUPPORT_INTRO)
            );
            let _ = writeln!(out, "<li>{}</li>", escape(SUPPORT_OWN_PROCEDURE));
            let _ = writeln!(
                out,
                "<li>Otherwise go to Support for business:<br>\
                 <a href=\"{url}\" style=\"color:#1d4ed8;overflow-wrap:anywhere;word-break:break-all;\">{url}</a></li>",
                url = escape(SUPPORT_URL)
            );
            let _ = writeln!(out, "<li>Choose <strong>Servers</strong> &gt; <strong>Exchange Server</strong>.</li>\n</ol>");
            let _ = writeln!(out, "<p style=\"margin:6px 0 0 0;\">{}</p>", escape(SUPPORT_FORWARD));
        }

        section(&mut out, "Incident");
        facts(&mut out, &self.incident, "break-all");
        if let Some(link) = &self.incident_link {
            let _ = write!(out, "<p style=\"margin:10px 0 0 0;\"><a href=\"{0}\">Open the incident in a browser</a></p>", escape(link));
        }
        let url = &self.url_flag;
        if let Some(id) = &self.replay {
            let _ = write!(out, "<p style=\"margin:10px 0 0 0;\">Replay the first alert (automation verifies again and acts):</p>");
            out.push_str(&code(&format!("healthset-responder replay {id}{url}")));
            let _ = write!(
                out,
                "<p style=\"margin:6px 0 0 0;\">Rehearse it without changing anything:</p>"
            );
            out.push_str(&code(&format!("healthset-responder replay {id} --dry-run{url}")));
        }
        let _ = write!(out, "<p style=\"margin:6px 0 0 0;\">Show the incident:</p>");
        out.push_str(&code(&format!(
            "healthset-responder incidents show {}{url}",
            shell_arg(&self.incident_id)
        )));
        out.push_str("</div>\n");
        let _ = writeln!(
            out,
            "<p style=\"color:#9ca3af;font-size:12px;text-align:center;margin:10px 0;\">Sent by healthset-responder for incident {}.</p>",
            escape(&self.incident_id)
        );
        out.push_str("</div>\n</body>\n</html>\n");
        out
    }
}

impl Tone {
    /// (text colour, background, border)
    fn colours(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Tone::Bad => ("#991b1b", "#fef2f2", "#fca5a5"),
            Tone::Warn => ("#92400e", "#fffbeb", "#fcd34d"),
            Tone::Good => ("#166534", "#f0fdf4", "#86efac"),
            Tone::Plain => ("#374151", "#f9fafb", "#d1d5db"),
        }
    }

    fn banner(self) -> &'static str {
        match self {
            Tone::Bad => "#b91c1c",
            Tone::Warn => "#b45309",
            Tone::Good => "#15803d",
            Tone::Plain => "#374151",
        }
    }
}

const DETAIL: &str = "color:#374151;font-size:14px;white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;margin:2px 0 0 0;";

/// A two-column table of labels and values; `word_break` is how long values (ids, messages) may wrap.
fn facts(out: &mut String, rows: &[(&'static str, String)], word_break: &str) {
    out.push_str("<table role=\"presentation\" style=\"border-collapse:collapse;width:100%;font-size:15px;\">\n");
    for (key, value) in rows {
        let _ = writeln!(
            out,
            "<tr><td style=\"padding:3px 10px 3px 0;color:#6b7280;vertical-align:top;white-space:nowrap;\">{}</td>\
             <td style=\"padding:3px 0;overflow-wrap:anywhere;word-break:{word_break};\">{}</td></tr>",
            escape(key),
            escape(value)
        );
    }
    out.push_str("</table>\n");
}

fn section(out: &mut String, title_html: &str) {
    let _ = writeln!(out, "<h2 style=\"font-size:17px;margin:22px 0 8px 0;padding-bottom:4px;border-bottom:1px solid #e5e7eb;\">{title_html}</h2>");
}

fn code(text: &str) -> String {
    format!(
        "<pre style=\"font-family:Consolas,Menlo,'Courier New',monospace;font-size:13px;color:#111827;background:#f3f4f6;border:1px solid #e5e7eb;\
         border-radius:4px;padding:8px 10px;margin:6px 0;white-space:pre-wrap;word-wrap:break-word;overflow-wrap:anywhere;\">{}</pre>",
        escape(text)
    )
}

fn badge(outcome: &str, tone: Tone) -> String {
    let (fg, bg, border) = tone.colours();
    format!(
        "<span style=\"display:inline-block;font-size:13px;font-weight:700;color:{fg};background:{bg};border:1px solid {border};border-radius:10px;padding:0 8px;\">{}</span>",
        escape(outcome)
    )
}
