//! HTML pages from templates: minijinja, with the templates of
//! `harness/templates/` compiled into the binary (no files to find at run
//! time). A template whose name ends in `.html` escapes every value it
//! prints (minijinja's default for that extension), so a case title holding
//! `<script>` is shown, never run; the `.css` and `.js` templates are
//! included verbatim and print no values.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use std::sync::OnceLock;

/// Every template, by the name pages and `{% include %}` use.
const TEMPLATES: &[(&str, &str)] = &[
    ("compare.html", include_str!("../../templates/compare.html")),
    ("compare.css", include_str!("../../templates/compare.css")),
    ("compare.js", include_str!("../../templates/compare.js")),
    (
        "swimlanes.html",
        include_str!("../../templates/swimlanes.html"),
    ),
    (
        "swimlanes.css",
        include_str!("../../templates/swimlanes.css"),
    ),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // A misspelt field is an error, not an empty string on the page.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name} does not compile: {e:#}"));
        }
        env
    })
}

/// Renders template `name` with `context`. The templates are part of the
/// binary and every one is rendered by the tests, so an error here is a bug
/// in this crate, not bad input.
pub fn render(name: &str, context: impl Serialize) -> String {
    env()
        .get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(context)))
        .unwrap_or_else(|e| panic!("template {name}: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            assert!(env().get_template(name).is_ok(), "{name}");
        }
    }
}
