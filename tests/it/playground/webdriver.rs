//! A small W3C WebDriver client for the playground's browser test: ChromeDriver on a
//! free loopback port, one headless Chromium session, and the handful of commands the
//! test needs (navigate, find, click, type, run a script, screenshot), as JSON over
//! HTTP with reqwest. ChromeDriver runs in its own process group, ended with it, so a
//! failing test leaves no browser behind.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// ChromeDriver and one Chromium session; both ended on drop.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver runs in its own process group with the Chromium it started: ending
        // the group by its id leaves no browser behind when a test fails midway.
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    // A variable naming a missing file is a missing program, not a fallback.
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    pub async fn start() -> Browser {
        let install = "install them with `apt-get install -y chromium chromium-driver` (Debian; `.ci/run` does this), or point CHROMIUM and CHROMEDRIVER at them";
        let chromium = find_program(
            "CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        )
        .unwrap_or_else(|| panic!("the playground's browser test needs Chromium: {install}"));
        let chromedriver =
            find_program("CHROMEDRIVER", &["/usr/bin/chromedriver"]).unwrap_or_else(|| {
                panic!("the playground's browser test needs ChromeDriver: {install}")
            });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(&chromedriver);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut driver, 0);
        let driver = driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; {install}", chromedriver.display()));
        let http = http();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(resp) = ready {
                let status: Value = resp.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1440,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
            .to_string();
        Browser {
            driver,
            http,
            session: format!("{base}/session/{id}"),
            _profile: profile,
        }
    }

    pub async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let value: Value = resp.json().await.unwrap();
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {value}"
        );
        value["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Clicks the element `css` names. The page re-renders its lists after every
    /// evaluation, so an element found a moment ago can be replaced: found again then.
    pub async fn click(&self, css: &str) {
        for _ in 0..20 {
            let el = self.find(css).await;
            let resp = self
                .http
                .post(format!("{}/element/{el}/click", self.session))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            if resp.status().is_success() {
                return;
            }
            let body: Value = resp.json().await.unwrap();
            assert_eq!(
                body["value"]["error"], "stale element reference",
                "click {css}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{css} kept being replaced before it could be clicked");
    }

    /// Types into an element as a user would (key events, so `input` fires).
    pub async fn type_keys(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Polls `script` (a function body returning a value) until it is truthy.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script, json!([])).await;
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            if Instant::now() > deadline {
                let page = self
                    .js(
                        "return {status: document.getElementById('status').textContent,
                                 output: document.getElementById('output').textContent.slice(0, 400),
                                 findings: document.getElementById('findings').textContent,
                                 save: document.getElementById('save-status').textContent}",
                        json!([]),
                    )
                    .await;
                panic!("waited 30 s for {what}; the page shows {page:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
