//! `canary-router status URL`: the filter's status view (`statusPath`, the document of
//! src/health/status.rs) as `kubectl get isvc` prints InferenceServices, plus what only
//! the filter knows: the split in effect now, ejected revisions, automatic rollbacks.

use std::io::Write;
use std::time::Duration;

use serde::Deserialize;
use tabwriter::TabWriter;

use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// kubectl's columns and the filter's split, ejections and rollbacks.
    Table,
    /// Also the configured split, revisions out of rotation for failed probes, fail-open.
    Wide,
    /// The status view as the filter wrote it.
    Json,
}

pub struct Options {
    pub url: String,
    pub output: Format,
    pub timeout: Duration,
}

/// The status view; fields the filter may add later are ignored.
#[derive(Debug, Deserialize)]
pub struct View {
    pub services: Vec<ServiceView>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub name: String,
    pub url: String,
    pub ready: bool,
    pub prev: Option<f64>,
    pub latest: Option<f64>,
    pub prev_rolledout_revision: Option<String>,
    pub latest_ready_revision: Option<String>,
    pub rolled_back: bool,
    pub fail_open: bool,
    pub configured_split: Vec<Share>,
    pub effective_split: Vec<Share>,
    pub revisions: Vec<RevisionView>,
}

#[derive(Debug, Deserialize)]
pub struct Share {
    pub revision: String,
    pub percent: f64,
}

#[derive(Debug, Deserialize)]
pub struct RevisionView {
    pub name: String,
    pub ready: bool,
    pub ejected: bool,
}

pub fn run(opts: &Options) -> Result<(), Error> {
    let body = fetch(&opts.url, opts.timeout)?;
    let view: View = serde_json::from_str(&body)
        .map_err(|e| Error::Http(format!("{}: not the filter's status view: {e}", opts.url)))?;
    let text = match opts.output {
        Format::Json => body,
        Format::Table => table(&view, false)?,
        Format::Wide => table(&view, true)?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Input(format!("writing standard output: {e}")))
}

fn fetch(url: &str, timeout: Duration) -> Result<String, Error> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| Error::Http(format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(Error::Http(format!(
                "{url}: {other} is not supported: the status view belongs on an internal listener; \
                 reach it over plain HTTP, e.g. through `kubectl port-forward`"
            )))
        }
        None => {
            return Err(Error::Http(format!(
                "{url:?}: give the whole URL, e.g. http://127.0.0.1:8080/canary-router/status"
            )))
        }
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut response) => response
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::Http(format!("GET {url}: {e}"))),
        Err(ureq::Error::StatusCode(404)) => Err(Error::Http(format!(
            "GET {url}: 404: is statusPath set to {} in the plugin configuration?",
            uri.path()
        ))),
        Err(e) => Err(Error::Http(format!("GET {url}: {e}"))),
    }
}

/// kubectl's layout: upper-case headers, columns three spaces apart, `<none>` for an
/// empty list, PREV and LATEST empty where there is nothing to split.
pub fn table(view: &View, wide: bool) -> Result<String, Error> {
    let mut headers = vec![
        "NAME",
        "URL",
        "READY",
        "PREV",
        "LATEST",
        "PREVROLLEDOUTREVISION",
        "LATESTREADYREVISION",
        "SPLIT",
        "EJECTED",
        "ROLLEDBACK",
    ];
    if wide {
        headers.extend(["CONFIGURED", "NOTREADY", "FAILOPEN"]);
    }
    // kubectl's Go tabwriter (minwidth 6, padding 3) makes a column max(6, text + 3)
    // wide; this one max(minwidth, text) + padding, so minwidth 3 gives the same.
    let mut tw = TabWriter::new(Vec::new()).minwidth(3).padding(3);
    let mut rows = vec![headers.join("\t")];
    for s in &view.services {
        let out_of_rotation = |pick: fn(&RevisionView) -> bool| {
            list(
                s.revisions
                    .iter()
                    .filter(|r| pick(r))
                    .map(|r| r.name.clone()),
            )
        };
        let mut row = vec![
            s.name.clone(),
            s.url.clone(),
            title(s.ready),
            s.prev.map(|p| p.to_string()).unwrap_or_default(),
            s.latest.map(|p| p.to_string()).unwrap_or_default(),
            s.prev_rolledout_revision.clone().unwrap_or_default(),
            s.latest_ready_revision.clone().unwrap_or_default(),
            split(&s.effective_split),
            out_of_rotation(|r| r.ejected),
            title(s.rolled_back),
        ];
        if wide {
            row.extend([
                split(&s.configured_split),
                out_of_rotation(|r| !r.ready),
                title(s.fail_open),
            ]);
        }
        rows.push(row.join("\t"));
    }
    for row in rows {
        writeln!(tw, "{row}").map_err(|e| Error::Input(e.to_string()))?;
    }
    let bytes = tw.into_inner().map_err(|e| Error::Input(e.to_string()))?;
    let mut text = String::from_utf8(bytes).map_err(|e| Error::Input(e.to_string()))?;
    // The writer joins lines with newlines and leaves the last one open.
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

fn title(b: bool) -> String {
    if b { "True" } else { "False" }.to_owned()
}

fn split(shares: &[Share]) -> String {
    list(
        shares
            .iter()
            .map(|s| format!("{}={}", s.revision, s.percent)),
    )
}

fn list(items: impl Iterator<Item = String>) -> String {
    let joined = items.collect::<Vec<_>>().join(",");
    if joined.is_empty() {
        "<none>".to_owned()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: &str = r#"{"services": [
      {"name": "sklearn-iris", "url": "http://sklearn-iris.kserve-test.example.com", "ready": true,
       "prev": 90.0, "latest": 10.0, "prevRolledoutRevision": "sklearn-iris-predictor-00001",
       "latestReadyRevision": "sklearn-iris-predictor-00002", "rolledBack": false, "failOpen": false,
       "configuredSplit": [{"revision": "sklearn-iris-predictor-00002", "percent": 10.0},
                           {"revision": "sklearn-iris-predictor-00001", "percent": 90.0}],
       "effectiveSplit": [{"revision": "sklearn-iris-predictor-00001", "percent": 100.0}],
       "revisions": [{"name": "sklearn-iris-predictor-00001", "cluster": "c1", "ready": true, "ejected": false},
                     {"name": "sklearn-iris-predictor-00002", "cluster": "c2", "ready": false, "ejected": true}]},
      {"name": "bert", "url": "http://bert.example.com", "ready": true, "latest": 100.0,
       "latestReadyRevision": "bert-1", "rolledBack": false, "failOpen": false,
       "configuredSplit": [{"revision": "bert-1", "percent": 100.0}],
       "effectiveSplit": [{"revision": "bert-1", "percent": 100.0}],
       "revisions": [{"name": "bert-1", "cluster": "c3", "ready": true, "ejected": false}], "future": 1}]}"#;

    #[test]
    fn the_table_reads_like_kubectl_get_isvc() {
        let view: View = serde_json::from_str(VIEW).unwrap();
        let text = table(&view, false).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let cells: Vec<Vec<&str>> = lines
            .iter()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            cells[0][..7],
            [
                "NAME",
                "URL",
                "READY",
                "PREV",
                "LATEST",
                "PREVROLLEDOUTREVISION",
                "LATESTREADYREVISION"
            ]
        );
        assert_eq!(
            cells[1],
            [
                "sklearn-iris",
                "http://sklearn-iris.kserve-test.example.com",
                "True",
                "90",
                "10",
                "sklearn-iris-predictor-00001",
                "sklearn-iris-predictor-00002",
                "sklearn-iris-predictor-00001=100",
                "sklearn-iris-predictor-00002",
                "False"
            ]
        );
        // No PREV column value: the cells under LATEST line up, as kubectl's do.
        let latest_at = lines[0].find("LATEST ").unwrap();
        assert_eq!(&lines[2][latest_at..latest_at + 3], "100");
        assert!(lines[2].contains("<none>"));
        // kubectl's spacing: three spaces after the widest cell of a column.
        assert!(lines[0].starts_with("NAME           URL"), "{:?}", lines[0]);
        assert!(
            lines[0].contains(" READY   PREV   LATEST   PREVROLLEDOUTREVISION "),
            "{:?}",
            lines[0]
        );
        assert!(text.ends_with("False\n"), "{text:?}");
    }

    #[test]
    fn wide_adds_the_configured_split_and_unready_revisions() {
        let view: View = serde_json::from_str(VIEW).unwrap();
        let text = table(&view, true).unwrap();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row[10..],
            [
                "sklearn-iris-predictor-00002=10,sklearn-iris-predictor-00001=90",
                "sklearn-iris-predictor-00002",
                "False"
            ]
        );
    }
}
