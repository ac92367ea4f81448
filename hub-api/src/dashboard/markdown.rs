//! Model cards: Markdown to HTML with no way for a README to put markup or
//! script on the page. Raw HTML in the Markdown is shown as text (escaped),
//! link and image URLs keep only `http`, `https` and `mailto` schemes (and
//! relative URLs, resolved against the repo), and the page's CSP forbids
//! inline script besides.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

/// Where relative links of a card point.
pub struct Base<'a> {
    /// `/{ns}/{name}` (or `/datasets/...`).
    pub repo_url: &'a str,
    /// The revision, URL-encoded as one segment.
    pub rev: &'a str,
}

/// Whether a URL is safe to put in `href`/`src`: relative, or one of the
/// allowed schemes. Browsers ignore tabs and newlines inside a scheme
/// (`java\tscript:`), so those are removed before looking.
pub fn safe_url(url: &str) -> bool {
    let cleaned: String = url
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .collect();
    let end = cleaned.find([':', '/', '?', '#']).unwrap_or(cleaned.len());
    if cleaned[end..].starts_with(':') {
        let scheme = cleaned[..end].to_ascii_lowercase();
        return matches!(scheme.as_str(), "http" | "https" | "mailto");
    }
    true
}

fn is_relative(url: &str) -> bool {
    !(url.starts_with('#') || url.starts_with('/') || url.contains(':'))
}

fn rewrite(url: CowStr<'_>, base: &Base<'_>, image: bool) -> CowStr<'static> {
    if !safe_url(&url) {
        return CowStr::from("#");
    }
    if is_relative(&url) {
        let rel = url.trim_start_matches("./");
        let kind = if image { "resolve" } else { "blob" };
        return CowStr::from(format!("{}/{kind}/{}/{rel}", base.repo_url, base.rev));
    }
    CowStr::from(url.into_string())
}

/// Renders Markdown (a card body, front matter already removed) to HTML.
pub fn render(md: &str, base: &Base<'_>) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    opts.insert(Options::ENABLE_TASKLISTS);
    opts.insert(Options::ENABLE_FOOTNOTES);
    let events = Parser::new_ext(md, opts).map(|ev| match ev {
        // Raw HTML becomes text: pulldown-cmark escapes text when writing.
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: rewrite(dest_url, base, false),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: rewrite(dest_url, base, true),
            title,
            id,
        }),
        other => other,
    });
    let mut out = String::with_capacity(md.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Base<'static> = Base {
        repo_url: "/a/m",
        rev: "main",
    };

    #[test]
    fn raw_html_is_escaped() {
        let out = render(
            "# Hi\n\n<script>alert(1)</script>\n\nx <img src=x onerror=alert(1)> y\n",
            &B,
        );
        assert!(!out.contains("<script"), "{out}");
        assert!(!out.contains("<img src=x"), "{out}");
        assert!(out.contains("&lt;script&gt;"), "{out}");
        assert!(out.contains("<h1>Hi</h1>"));
    }

    #[test]
    fn dangerous_links_are_dropped() {
        for md in [
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](<java\tscript:alert(1)>)",
            "[x](data:text/html,hi)",
            "![x](vbscript:msgbox)",
        ] {
            let out = render(md, &B);
            assert!(!out.to_lowercase().contains("script:"), "{md} -> {out}");
            assert!(!out.contains("data:"), "{md} -> {out}");
        }
        let out = render("[ok](https://example.com/a?b=1&c=\"2\")", &B);
        assert!(
            out.contains("href=\"https://example.com/a?b=1&amp;c=%222%22\""),
            "{out}"
        );
    }

    #[test]
    fn relative_links_point_into_the_repo() {
        let out = render("[cfg](config.json) ![p](./img/a.png) [top](#usage)", &B);
        assert!(out.contains("href=\"/a/m/blob/main/config.json\""), "{out}");
        assert!(out.contains("src=\"/a/m/resolve/main/img/a.png\""), "{out}");
        assert!(out.contains("href=\"#usage\""), "{out}");
    }
}
