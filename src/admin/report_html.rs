//! Gate reports as HTML for the status page's links (`?format=html`).
//!
//! The Markdown report is the source of truth (it is what lands in
//! `state_dir/reports/`); this only renders it. Reports quote operator input
//! (incident summaries, approver names), so any raw HTML in the Markdown is
//! turned into escaped text rather than passed through: a summary like
//! `<script>` must show up as those characters, never run.

use pulldown_cmark::{html, Event, Options, Parser};

const STYLE: &str = "\
body{font:14px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f8fa;color:#1f2328}\
main{max-width:1100px;margin:1.5rem auto;background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:1rem 2rem 2rem}\
nav{max-width:1100px;margin:1rem auto 0;font-size:13px}a{color:#0969da}\
table{border-collapse:collapse;margin:.8rem 0;font-size:13px}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}\
th{background:#f6f8fa}code{background:#eff1f3;padding:.1rem .3rem;border-radius:4px}h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:1.6rem}";

/// Markdown -> a standalone HTML page with no scripts and no external resources.
pub fn page(title: &str, markdown: &str, links: &[(&str, String)]) -> String {
    let parser = Parser::new_ext(markdown, Options::ENABLE_TABLES).map(|ev| match ev {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut body = String::with_capacity(markdown.len() * 2);
    html::push_html(&mut body, parser);

    let mut nav = String::new();
    for (label, href) in links {
        if !nav.is_empty() {
            nav.push_str(" · ");
        }
        nav.push_str(&format!(
            "<a href=\"{}\">{}</a>",
            escape(href),
            escape(label)
        ));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\
         <body><nav>{nav}</nav><main>\n{body}</main></body></html>\n",
        escape(title)
    )
}

/// HTML-escapes text for element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tables_and_escapes_raw_html() {
        let md = "# Report 1 — GO\n\n| gate | status |\n|---|---|\n| a | GREEN |\n\n\
                  - incident: <script>alert(1)</script> & <b>bold</b>\n";
        let html = page("Report <1>", md, &[("status", "/".into())]);
        assert!(html.contains("<table>"), "{html}");
        assert!(html.contains("<td>GREEN</td>"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<b>bold"), "{html}");
        assert!(html.contains("<title>Report &lt;1&gt;</title>"), "{html}");
        assert!(html.contains("<a href=\"/\">status</a>"), "{html}");
    }

    #[test]
    fn raw_html_blocks_are_text() {
        let html = page("t", "<div onclick=\"x()\">hi</div>\n", &[]);
        assert!(!html.contains("<div onclick"), "{html}");
        assert!(html.contains("&lt;div onclick="), "{html}");
    }
}
