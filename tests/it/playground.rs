//! `rulebridge playground`: the real binary on a temporary copy of the default pack,
//! over real HTTP on 127.0.0.1, and driven in a real headless Chromium through
//! ChromeDriver's W3C WebDriver protocol (plain JSON over HTTP with reqwest).
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` packages (`.ci/run`
//! installs them); without them it fails saying how to install them, it does not skip.
//! `RULEBRIDGE_SCREENSHOT=1` rewrites `docs/playground.png` from the browser test.

use crate::common;
mod webdriver;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use webdriver::Browser;

const MAP: &str = "map/microsoft-standard.rhai";
/// A line of the default map rule the browser test edits after.
const ANCHOR: &str = "out.title = clip(out.title, p.max_title ?? 256);";
const TITLE_29: &str =
    "Multi-stage incident involving Execution & Command and control on one endpoint";

/// The playground binary on its own copy of the default pack; killed on drop.
struct Playground {
    child: Child,
    base: String,
    port: u16,
    pack: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Playground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Playground {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("rules");
    common::copy_dir(Path::new("rules"), &pack);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["playground", "--rules"])
        .arg(&pack)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("playground on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .trim_end_matches('/')
        .to_string();
    let port = base.rsplit(':').next().unwrap().parse().unwrap();
    Playground {
        child,
        base,
        port,
        pack,
        _dir: dir,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- plain HTTP

#[tokio::test]
async fn paths_outside_the_pack_are_refused_and_nothing_is_written() {
    let pg = start();
    let c = http();
    for bad in [
        "../Cargo.toml",
        "/etc/passwd",
        "map/../../x.rhai",
        "map/new.rhai",
        "run.sh",
        ".hidden.rhai",
    ] {
        let url = format!("{}/api/file?path={}", pg.base, urlencode(bad));
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 400, "GET {bad}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains('\''), "{body}");
    }
    // A save beside the pack: refused before anything is judged, nothing appears.
    let outside = pg.pack.parent().unwrap().join("outside.rhai");
    let resp = post(
        &c,
        &pg,
        "/api/save",
        &json!({"path": "../outside.rhai", "text": "x"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(!outside.exists());
    // An edit naming a file outside the pack is refused too (not silently ignored).
    let resp = post(
        &c,
        &pg,
        "/api/eval",
        &json!({"edits": {"../outside.rhai": "x"}, "sample": {"generated": 1}}),
    )
    .await;
    assert_eq!(resp.status(), 400);

    // A link out of the pack: the pack no longer reads, so nothing is served or saved
    // through it, and the file it points at is untouched.
    #[cfg(unix)]
    {
        std::fs::write(&outside, "secret").unwrap();
        std::os::unix::fs::symlink(&outside, pg.pack.join("map/escape.rhai")).unwrap();
        let resp = post(
            &c,
            &pg,
            "/api/save",
            &json!({"path": "map/escape.rhai", "text": "x"}),
        )
        .await;
        assert!(!resp.status().is_success(), "{}", resp.status());
        let resp = c
            .get(format!("{}/api/file?path=map/escape.rhai", pg.base))
            .send()
            .await
            .unwrap();
        assert!(!resp.status().is_success());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
    }
}

#[tokio::test]
async fn requests_not_addressed_to_the_playground_are_refused() {
    let pg = start();
    let c = http();
    let page = c.get(format!("{}/", pg.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let localhost = c
        .get(format!("{}/api/files", pg.base))
        .header("Host", format!("localhost:{}", pg.port))
        .send()
        .await
        .unwrap();
    assert_eq!(localhost.status(), 200);
    // DNS rebinding: a foreign name resolving to 127.0.0.1 sends its own Host.
    for host in [
        format!("attacker.example:{}", pg.port),
        "127.0.0.1:1".to_string(),
        "127.0.0.1".to_string(),
    ] {
        let resp = c
            .get(format!("{}/api/files", pg.base))
            .header("Host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "Host {host}");
    }
    // CSRF: another page's script posting a save; its Origin is not ours.
    let before = std::fs::read(pg.pack.join(MAP)).unwrap();
    for origin in ["http://attacker.example", "null", "http://127.0.0.1:1"] {
        let resp = c
            .post(format!("{}/api/save", pg.base))
            .header("Origin", origin)
            .json(&json!({"path": MAP, "text": "// gone"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "Origin {origin}");
    }
    // A form post (no JSON content type) never reaches the handler.
    let resp = c
        .post(format!("{}/api/save", pg.base))
        .header("Content-Type", "text/plain")
        .body(json!({"path": MAP, "text": "// gone"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(std::fs::read(pg.pack.join(MAP)).unwrap(), before);
    // The page's own origin passes.
    let resp = c
        .post(format!("{}/api/eval", pg.base))
        .header("Origin", &pg.base)
        .json(&json!({"sample": {"generated": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let pg = start();
    let c = http();
    let pasted = "x".repeat(rulebridge::playground::MAX_BODY + 1);
    let resp = post(&c, &pg, "/api/eval", &json!({"sample": {"pasted": pasted}})).await;
    assert_eq!(resp.status(), 413);
    let before = std::fs::read(pg.pack.join(MAP)).unwrap();
    let resp = post(&c, &pg, "/api/save", &json!({"path": MAP, "text": pasted})).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(std::fs::read(pg.pack.join(MAP)).unwrap(), before);
}

#[tokio::test]
async fn a_save_whose_pack_fails_its_tests_is_refused_and_a_good_one_is_written() {
    let pg = start();
    let c = http();
    let path = pg.pack.join(MAP);
    let before = std::fs::read_to_string(&path).unwrap();
    let broken = before.replace(ANCHOR, &format!("{ANCHOR}\n    out.title = \"x\";"));
    let resp = post(&c, &pg, "/api/save", &json!({"path": MAP, "text": broken})).await;
    assert_eq!(resp.status(), 422);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["saved"], false);
    let failed: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(
        failed.iter().any(|m| m.starts_with("test failed")),
        "{failed:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

    let good = before.replace(ANCHOR, &format!("{ANCHOR}\n    // reviewed"));
    let resp = post(&c, &pg, "/api/save", &json!({"path": MAP, "text": good})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
    // The new version is what the pack folder now hashes to.
    let report: Value = resp.json().await.unwrap();
    let listing: Value = c
        .get(format!("{}/api/files", pg.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["version"], listing["version"]);
}

#[test]
fn a_non_loopback_listen_address_is_refused_without_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["playground", "--rules", "rules", "--listen", "192.0.2.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(err.contains("--allow-non-loopback"), "{err}");
}

async fn post(c: &reqwest::Client, pg: &Playground, path: &str, body: &Value) -> reqwest::Response {
    c.post(format!("{}{path}", pg.base))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------- the browser

/// Puts the caret (or a selection) in the editor; typing then goes there.
const SELECT: &str = "const e = document.getElementById('editor'); e.focus();
    e.setSelectionRange(arguments[0], arguments[1]); return e.value.length;";
const ENTER: &str = "\u{E007}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_edited_in_the_browser_changes_the_output_shows_its_mistake_and_saves() {
    let pg = start();
    let browser = Browser::start().await;
    let on_disk = pg.pack.join(MAP);
    let original = std::fs::read_to_string(&on_disk).unwrap();

    browser.goto(&format!("{}/", pg.base)).await;
    browser
        .click(&format!("#files li[data-path=\"{MAP}\"]"))
        .await;
    browser
        .wait_for(
            "the map rule in the editor",
            &format!("return document.getElementById('editor').value.includes({ANCHOR:?})"),
        )
        .await;
    let sample = browser
        .js(
            "return document.getElementById('sample-source').value",
            json!([]),
        )
        .await;
    assert_eq!(sample, "pack:samples/graph-incident-29.json");
    browser
        .wait_for(
            "the sample's output",
            &format!("return document.getElementById('output').textContent.includes({TITLE_29:?})"),
        )
        .await;

    // Edit the rule: every title gets a prefix. The output follows.
    let after_anchor = original.find(ANCHOR).unwrap() + ANCHOR.len();
    let caret = utf16_len(&original[..after_anchor]);
    browser.js(SELECT, json!([caret, caret])).await;
    let edit = "    out.title = \"Playground: \" + out.title;";
    browser
        .type_keys("#editor", &format!("{ENTER}{edit}"))
        .await;
    browser
        .wait_for(
            "the edited title in the output",
            &format!(
                "return document.getElementById('output').textContent.includes({:?})",
                format!("\"title\": \"Playground: {TITLE_29}\"")
            ),
        )
        .await;

    // The pack's exact-output test pins the title: the save is refused, disk unchanged.
    browser.click("#save").await;
    browser
        .wait_for(
            "the refused save",
            "return document.getElementById('save-status').textContent.includes('not saved')",
        )
        .await;
    let why = browser
        .js(
            "return document.getElementById('save-status').textContent",
            json!([]),
        )
        .await;
    assert!(why.as_str().unwrap().contains("test failed"), "{why}");
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), original);

    // A syntax error on the next line: found, underlined at its line, listed.
    let mistake_line = original[..after_anchor].lines().count() + 2;
    // The Save click took the focus: put the caret back after the added line.
    let after_edit = caret + utf16_len(&format!("\n{edit}"));
    browser.js(SELECT, json!([after_edit, after_edit])).await;
    browser
        .type_keys("#editor", &format!("{ENTER}    let broken = ;"))
        .await;
    let selector = format!("#overlay .mark[data-line=\"{mistake_line}\"]");
    browser
        .wait_for(
            "the mistake underlined",
            &format!("return document.querySelector({selector:?}) !== null"),
        )
        .await;
    let marked = browser
        .js(
            &format!("return document.querySelector({selector:?}).textContent"),
            json!([]),
        )
        .await;
    assert_eq!(marked, ";", "the underline sits on the unexpected token");
    let listed = browser
        .js(
            &format!(
                "const li = document.querySelector('#findings li[data-line=\"{mistake_line}\"]');
                 return li && li.textContent"
            ),
            json!([]),
        )
        .await;
    let listed = listed
        .as_str()
        .expect("the finding is listed with its line");
    assert!(
        listed.contains(&format!("{MAP}:{mistake_line}:")),
        "{listed}"
    );
    assert!(listed.contains("Unexpected ';'"), "{listed}");
    let gutter = browser
        .js(
            &format!("return document.querySelector('#gutter .bad[data-line=\"{mistake_line}\"]') !== null"),
            json!([]),
        )
        .await;
    assert_eq!(gutter, true, "the gutter marks the line");
    // Clicking the finding puts the caret on its line.
    browser.js(SELECT, json!([0, 0])).await;
    browser
        .click(&format!("#findings li[data-line=\"{mistake_line}\"]"))
        .await;
    let caret_line = browser
        .js(
            "const e = document.getElementById('editor');
             return e.value.slice(0, e.selectionStart).split('\\n').length",
            json!([]),
        )
        .await;
    assert_eq!(caret_line, mistake_line);

    if std::env::var_os("RULEBRIDGE_SCREENSHOT").is_some() {
        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::create_dir_all("docs").unwrap();
        std::fs::write("docs/playground.png", png).unwrap();
    }

    // Fix it: both added lines become a comment. Output and findings come back clean.
    let edited = browser
        .js("return document.getElementById('editor').value", json!([]))
        .await;
    let edited = edited.as_str().unwrap();
    let end = edited.find("let broken = ;").unwrap() + "let broken = ;".len();
    browser
        .js(SELECT, json!([caret, utf16_len(&edited[..end])]))
        .await;
    browser
        .type_keys(
            "#editor",
            &format!("{ENTER}    // reviewed in the playground"),
        )
        .await;
    browser
        .wait_for(
            "the fixed pack's output",
            &format!(
                "return document.querySelector('#findings li.none') !== null &&
                        document.getElementById('output').textContent.includes({:?})",
                format!("\"title\": \"{TITLE_29}\"")
            ),
        )
        .await;
    browser.click("#save").await;
    browser
        .wait_for(
            "the accepted save",
            "return document.getElementById('save-status').textContent.startsWith('saved')",
        )
        .await;
    let expected = original.replace(
        ANCHOR,
        &format!("{ANCHOR}\n    // reviewed in the playground"),
    );
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), expected);
    browser.close().await;
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}
