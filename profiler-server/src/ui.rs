//! The web UI: static files compiled into the binary (no external assets, no build step), served
//! by the API router for every path outside `/api/`, `/ingest` and the health checks.
//!
//! The UI is plain ES modules in `ui/`: `app.js` mounts the page the URL hash names
//! (`#/flamegraph`, `#/diff`, `#/services`, `#/traces`, `#/trace/<id>`), `api.js` calls the JSON
//! API of `docs/api.md`. Every file there must be listed in [`ASSETS`] (a test checks it).

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the UI: request path, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("/index.html", HTML, include_bytes!("../ui/index.html")),
    ("/style.css", CSS, include_bytes!("../ui/style.css")),
    ("/app.js", JS, include_bytes!("../ui/app.js")),
    ("/api.js", JS, include_bytes!("../ui/api.js")),
    ("/router.js", JS, include_bytes!("../ui/router.js")),
    ("/util.js", JS, include_bytes!("../ui/util.js")),
    ("/timerange.js", JS, include_bytes!("../ui/timerange.js")),
    ("/labels.js", JS, include_bytes!("../ui/labels.js")),
    ("/charts.js", JS, include_bytes!("../ui/charts.js")),
    ("/flamegraph.js", JS, include_bytes!("../ui/flamegraph.js")),
    ("/page-flame.js", JS, include_bytes!("../ui/page-flame.js")),
    (
        "/page-services.js",
        JS,
        include_bytes!("../ui/page-services.js"),
    ),
    (
        "/page-traces.js",
        JS,
        include_bytes!("../ui/page-traces.js"),
    ),
];

/// The file for a request path, with its content type; `/` is the app's `index.html`.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == path)
        .map(|&(_, content_type, bytes)| (content_type, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::BTreeSet, fs, path::Path};

    fn ui_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
    }

    #[test]
    fn root_is_the_app() {
        let (content_type, bytes) = asset("/").expect("/ is served");
        assert_eq!(content_type, HTML);
        assert!(String::from_utf8_lossy(bytes).contains(r#"<script type="module" src="app.js">"#));
        assert_eq!(asset("/index.html"), asset("/"));
        assert_eq!(asset("/nope.js"), None);
        assert_eq!(asset("/../Cargo.toml"), None);
    }

    #[test]
    fn every_ui_file_is_embedded() {
        let on_disk: BTreeSet<String> = fs::read_dir(ui_dir())
            .expect("read ui/")
            .map(|entry| {
                format!(
                    "/{}",
                    entry.expect("ui/ entry").file_name().to_string_lossy()
                )
            })
            .collect();
        let embedded: BTreeSet<String> = ASSETS.iter().map(|(p, _, _)| p.to_string()).collect();
        assert_eq!(
            on_disk, embedded,
            "ui/ and ASSETS differ: list new files in ASSETS"
        );
    }

    /// Every `import ... from './x.js'` names an embedded file, so no module 404s at run time,
    /// and nothing is loaded from another origin.
    #[test]
    fn imports_resolve_to_embedded_files() {
        for (path, content_type, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).expect("UI files are UTF-8");
            for external in ["http://", "https://", "//cdn", "@import"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|line| line.contains(external) && !line.contains("www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{path} refers to {external}: {hits:?}");
            }
            if *content_type != JS {
                continue;
            }
            for import in text.split(" from '").skip(1) {
                let target = import.split('\'').next().unwrap_or_default();
                let target = target.strip_prefix('.').unwrap_or(target);
                assert!(
                    asset(target).is_some(),
                    "{path} imports {target}, which is not embedded"
                );
            }
        }
    }
}
