//! `anodet serve` end to end: a real server on an ephemeral loopback port, real HTTP.
//! Scores against `anodet score`, concurrency without cross-talk, bad bodies, tokens,
//! back-pressure, reloads during traffic, slow clients and draining on SIGTERM.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{models_dir, Workspace};

/// One server at a time: they share two cores, and several tests measure timing.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running `anodet serve`.
struct Server {
    child: Child,
    base: String,
    address: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `anodet serve ARGS` in the workspace on a free loopback port and waits until it
    /// is ready (with `token`, if the server needs one).
    async fn start(ws: &Workspace, args: &[&str], token: Option<&str>) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anodet"))
            .current_dir(ws.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--device", "cpu", "--models"])
            .arg(models_dir())
            .args(args)
            .env("ANODET_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start anodet serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = err.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            for _ in lines {}
        });
        let line = receiver.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!("no 'listening on' line; stderr:\n{}", stderr.lock().unwrap())
        });
        let base = line.strip_prefix("listening on ").expect("listening line").to_string();
        let address = base.trim_start_matches("http://").to_string();
        let server = Server { child, base, address, stderr };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let mut request = client.get(server.url("/readyz"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Ok(response) = request.send().await {
                if response.status() == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "not ready; stderr:\n{}", server.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Sends SIGTERM and waits for the exit (at most 60 s).
    fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(60))
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test images of the workspace (relative paths) and their bytes.
fn test_images(ws: &Workspace) -> Vec<(String, Vec<u8>)> {
    let mut images = Vec::new();
    for kind in ["good", "hole", "scratch", "stain"] {
        let dir = ws.data().join("wood/test").join(kind);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let relative = format!("data/wood/test/{kind}/{name}");
            let bytes = std::fs::read(ws.path().join(&relative)).unwrap();
            images.push((relative, bytes));
        }
    }
    images
}

/// `anodet score --json` of `paths` with `model`: path → score.
fn cli_scores(ws: &Workspace, model: &str, paths: &[String]) -> HashMap<String, f64> {
    let mut args = vec!["score", "--json", "--model", model];
    args.extend(paths.iter().map(String::as_str));
    let run = ws.anodet(&args);
    assert!(run.code() <= 1, "{}", run.stderr());
    run.stdout()
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            (row["path"].as_str().unwrap().to_string(), row["score"].as_f64().unwrap())
        })
        .collect()
}

/// Scores from the server and from `anodet score` agree to this relative tolerance (the same
/// code path; only the batch a request shares its forward pass with differs).
const TOLERANCE: f64 = 1e-5;

fn assert_close(served: f64, cli: f64, what: &str) {
    let relative = (served - cli).abs() / cli.abs().max(1e-12);
    assert!(
        relative <= TOLERANCE,
        "{what}: served {served} vs anodet score {cli} (relative {relative:e})"
    );
}

async fn post_image(
    client: &reqwest::Client,
    url: &str,
    bytes: Vec<u8>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = client.post(url).header("content-type", "image/png").body(bytes);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

/// Posts each (path, image) to `/v1/score` at once, one client task each; every answer is 200.
/// The paths with their JSON answers, in order.
async fn score_concurrently(
    client: &reqwest::Client,
    server: &Server,
    requests: Vec<(String, Vec<u8>)>,
) -> Vec<(String, serde_json::Value)> {
    let mut tasks = Vec::new();
    for (path, bytes) in requests {
        let (client, url) = (client.clone(), server.url("/v1/score"));
        tasks.push(tokio::spawn(async move {
            let response = post_image(&client, &url, bytes, None).await;
            assert_eq!(response.status(), 200);
            (path, response.json::<serde_json::Value>().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// `POST /v1/score/batch` with `form`; the JSON answer.
async fn post_batch(
    client: &reqwest::Client,
    server: &Server,
    form: reqwest::multipart::Form,
) -> serde_json::Value {
    let response = client.post(server.url("/v1/score/batch")).multipart(form).send().await;
    response.unwrap().json().await.unwrap()
}

/// Asserts a one-line JSON error body with status `status`; returns the message.
async fn json_error(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status, "{response:?}");
    let text = response.text().await.unwrap();
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
    value["error"].as_str().expect("error message").to_string()
}

fn fitted(train_good: usize) -> Workspace {
    let ws = Workspace::with_images(train_good, 4, 3);
    ws.anodet(&["fit", "--category", "wood"]).ok();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_equal_anodet_score_and_64_clients_each_get_their_own() {
    let _serial = SERIAL.lock().await;
    let ws = fitted(16);
    let images = test_images(&ws);
    let paths: Vec<String> = images.iter().map(|(p, _)| p.clone()).collect();
    let expected = cli_scores(&ws, "runs/wood", &paths);
    assert_eq!(expected.len(), images.len());
    let mut server = Server::start(
        &ws,
        &["--model", "runs/wood", "--max-batch", "16", "--max-wait-ms", "50"],
        None,
    )
    .await;
    let client = reqwest::Client::new();

    // 64 concurrent clients, each with its own image (13 images, so each appears ~5 times).
    let requests = (0..64).map(|i| images[i % images.len()].clone()).collect();
    for (path, body) in score_concurrently(&client, &server, requests).await {
        let score = body["score"].as_f64().unwrap();
        assert_close(score, expected[&path], &path);
        let threshold = body["threshold"].as_f64().unwrap();
        assert_eq!(body["anomalous"].as_bool().unwrap(), score > threshold);
        assert_eq!(body["model"].as_str().unwrap().len(), 64, "{body}");
        assert!(body["latency_ms"].as_f64().unwrap() > 0.0);
    }
    // Requests that arrived together shared forward passes.
    let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let batches: f64 = metric(&metrics, "anodet_batch_size_count");
    assert!((1.0..64.0).contains(&batches), "64 requests in {batches} batches:\n{metrics}");
    assert_eq!(metric(&metrics, "anodet_batch_size_sum"), 64.0);
    assert!(metrics.contains("anodet_http_requests_total{route=\"/v1/score\",status=\"200\"} 64"));
    assert!(metrics.contains("anodet_queue_depth"));
    assert!(metrics.contains("anodet_verdicts_total"));
    assert!(metrics.contains("anodet_http_request_duration_seconds_bucket"));

    // The batch form: one result per part, in order.
    let mut form = reqwest::multipart::Form::new();
    for (path, bytes) in images.iter().take(5) {
        form = form.part(
            "image",
            reqwest::multipart::Part::bytes(bytes.clone())
                .file_name(path.clone())
                .mime_str("image/png")
                .unwrap(),
        );
    }
    form = form.part(
        "image",
        reqwest::multipart::Part::bytes(b"not an image".to_vec()).file_name("bad.png"),
    );
    let body = post_batch(&client, &server, form).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{body}");
    for (result, (path, _)) in results.iter().zip(images.iter().take(5)) {
        assert_eq!(result["name"].as_str().unwrap(), path);
        assert_close(result["score"].as_f64().unwrap(), expected[path], path);
    }
    assert_eq!(results[5]["status"], 415, "{body}");

    // The map: a PNG overlay wider than the image (colour bar), the score in a header.
    let (path, bytes) = &images[4];
    let response = post_image(&client, &server.url("/v1/heatmap"), bytes.clone(), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let score: f64 = response.headers()["x-anodet-score"].to_str().unwrap().parse().unwrap();
    assert_close(score, expected[path], path);
    let png = response.bytes().await.unwrap();
    let overlay = image::load_from_memory(&png).expect("a PNG");
    assert!(overlay.width() > 96, "{}", overlay.width());

    // The model card and health.
    let card: serde_json::Value =
        client.get(server.url("/v1/model")).send().await.unwrap().json().await.unwrap();
    assert_eq!(card["category"], "wood");
    assert_eq!(card["backbone"], "efficientnet_lite0");
    assert_eq!(card["levels"], serde_json::json!([7]));
    assert_eq!(card["map_method"], "patch");
    assert!(card.get("members").is_none(), "only an ensemble's card lists members");
    assert!(!card["threshold"]["method"].as_str().unwrap().is_empty());
    assert!(card["fitted_at"].as_str().unwrap().ends_with('Z'), "{card}");
    assert_eq!(client.get(server.url("/healthz")).send().await.unwrap().status(), 200);

    assert!(server.terminate().success());
    let log = server.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("route=/v1/score ") && l.contains("status=200"))
        .unwrap_or_else(|| panic!("no request line:\n{log}"));
    for field in ["method=POST", "latency_ms=", "verdict="] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
}

/// Sends raw HTTP/1.1 and returns what the server answered before closing or `wait`.
fn raw_exchange(address: &str, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_bodies_get_one_line_json_errors_and_slow_clients_time_out() {
    let _serial = SERIAL.lock().await;
    let ws = fitted(12);
    let images = test_images(&ws);
    let png = images[0].1.clone();
    assert!(png.len() > 4096, "the test image must be larger than the limit below");
    let server = Server::start(
        &ws,
        &[
            "--model",
            "runs/wood",
            "--max-body",
            "4KiB",
            "--request-timeout",
            "2",
            "--header-timeout",
            "1",
            "--no-maps",
        ],
        None,
    )
    .await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/score");

    let message = json_error(post_image(&client, &url, png.clone(), None).await, 413).await;
    assert!(message.contains("--max-body"), "{message}");
    let message = json_error(post_image(&client, &url, Vec::new(), None).await, 400).await;
    assert!(message.contains("empty"), "{message}");
    let zero = client.post(&url).body(Vec::<u8>::new()).send().await.unwrap();
    json_error(zero, 400).await;
    let small = image::RgbImage::from_pixel(40, 40, image::Rgb([10, 200, 30]));
    let mut small_png = Vec::new();
    small.write_to(&mut std::io::Cursor::new(&mut small_png), image::ImageFormat::Png).unwrap();
    let truncated = small_png[..small_png.len() / 2].to_vec();
    let message = json_error(post_image(&client, &url, truncated, None).await, 400).await;
    assert!(message.contains("truncated") || message.contains("corrupt"), "{message}");
    let message =
        json_error(post_image(&client, &url, b"hello, not an image".to_vec(), None).await, 415)
            .await;
    assert!(message.contains("not an image"), "{message}");
    let text =
        client.post(&url).header("content-type", "text/plain").body("hello").send().await.unwrap();
    json_error(text, 415).await;
    let gif = client
        .post(&url)
        .header("content-type", "image/gif")
        .body(b"GIF89a\x01\x00".to_vec())
        .send()
        .await
        .unwrap();
    json_error(gif, 415).await;
    json_error(client.get(server.url("/nowhere")).send().await.unwrap(), 404).await;
    json_error(client.get(&url).send().await.unwrap(), 405).await;
    // The small valid image is scored.
    let ok = post_image(&client, &url, small_png.clone(), None).await;
    assert_eq!(ok.status(), 200);

    // A declared oversize body is refused before any of it is sent.
    let head = format!(
        "POST /v1/score HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\nContent-Length: 104857600\r\n\r\n",
        server.address
    );
    let answer = raw_exchange(&server.address, head.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A chunked body over the limit: 413 once the limit is passed.
    let mut chunked = format!(
        "POST /v1/score HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.address
    )
    .into_bytes();
    for _ in 0..3 {
        chunked.extend_from_slice(b"800\r\n");
        chunked.extend_from_slice(&[0u8; 0x800]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(&server.address, &chunked, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A client that sends part of its body and stalls gets 408 after --request-timeout.
    let started = Instant::now();
    let stall = format!(
        "POST /v1/score HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nPNG",
        server.address
    );
    let answer = raw_exchange(&server.address, stall.as_bytes(), Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(25));
    // A client that never finishes its headers is disconnected after --header-timeout.
    let started = Instant::now();
    let answer = raw_exchange(
        &server.address,
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(30),
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "kept open {:?}: {answer}",
        started.elapsed()
    );
    // And the server still serves.
    assert_eq!(post_image(&client, &url, small_png, None).await.status(), 200);
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_are_required_everywhere_but_healthz() {
    let _serial = SERIAL.lock().await;
    let ws = fitted(12);
    let token = "s3cret-token-0123456789";
    std::fs::write(ws.path().join("token"), format!("{token}\n")).unwrap();
    let server = Server::start(
        &ws,
        &["--model", "runs/wood", "--token-file", "token", "--no-maps"],
        Some(token),
    )
    .await;
    let client = reqwest::Client::new();
    let png = test_images(&ws)[0].1.clone();
    let url = server.url("/v1/score");

    assert_eq!(client.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    let missing = post_image(&client, &url, png.clone(), None).await;
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert!(json_error(missing, 401).await.contains("missing"));
    assert!(json_error(
        post_image(&client, &url, png.clone(), Some("wrong-token-0123456789")).await,
        401
    )
    .await
    .contains("wrong"));
    assert!(json_error(
        post_image(&client, &url, png.clone(), Some(&token[..token.len() - 1])).await,
        401
    )
    .await
    .contains("wrong"));
    for malformed in ["Basic dXNlcjpwYXNz", "Bearer", "bearer s3cret-token-0123456789", token] {
        let response = client
            .post(&url)
            .header("authorization", malformed)
            .header("content-type", "image/png")
            .body(png.clone())
            .send()
            .await
            .unwrap();
        json_error(response, 401).await;
    }
    for path in ["/metrics", "/v1/model", "/readyz"] {
        json_error(client.get(server.url(path)).send().await.unwrap(), 401).await;
    }
    json_error(client.post(server.url("/v1/reload")).send().await.unwrap(), 401).await;
    let ok = post_image(&client, &url, png, Some(token)).await;
    assert_eq!(ok.status(), 200);
    let metrics = client.get(server.url("/metrics")).bearer_auth(token).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_with_retry_after() {
    let _serial = SERIAL.lock().await;
    let ws = fitted(12);
    let server = Server::start(
        &ws,
        &[
            "--model",
            "runs/wood",
            "--queue",
            "1",
            "--max-batch",
            "1",
            "--max-wait-ms",
            "0",
            "--no-maps",
        ],
        None,
    )
    .await;
    // A large image keeps the network busy for a while; a compressible one keeps the body small
    // (a few KB), so each client has sent it whole before a 503 can arrive and close the
    // connection (a 3 MB body would meet a broken pipe instead of the answer).
    let large = image::RgbImage::from_fn(1024, 1024, |x, y| {
        image::Rgb([(x / 64) as u8 * 13, (y / 64) as u8 * 11, ((x / 128) * (y / 128)) as u8])
    });
    let mut png = Vec::new();
    large.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (client, url, png) = (client.clone(), server.url("/v1/score"), png.clone());
        tasks.push(tokio::spawn(async move { post_image(&client, &url, png, None).await }));
    }
    let (mut ok, mut busy) = (0, 0);
    for task in tasks {
        let response = task.await.unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                assert!(json_error(response, 503).await.contains("queue full"));
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "{ok} answered, {busy} refused");
    assert_eq!(ok + busy, 24);
    // Once the burst is over, the server answers again.
    assert_eq!(post_image(&client, &server.url("/v1/score"), png, None).await.status(), 200);
}

/// Keeps `clients` clients posting images until `stop`; returns (answered, failures).
fn traffic(
    server: &Server,
    images: &[(String, Vec<u8>)],
    clients: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    (0..clients)
        .map(|c| {
            let client = reqwest::Client::new();
            let url = server.url("/v1/score");
            let images = images.to_vec();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut answered, mut failures) = (0, Vec::new());
                let mut i = c;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let response =
                        post_image(&client, &url, images[i % images.len()].1.clone(), None).await;
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status == 200 {
                        answered += 1;
                    } else {
                        failures.push(format!("{status}: {text}"));
                    }
                    i += clients;
                }
                (answered, failures)
            })
        })
        .collect()
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>) -> usize {
    let mut total = 0;
    for task in tasks {
        let (answered, failures) = task.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        total += answered;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_during_traffic_fail_no_request_and_a_corrupt_run_is_refused() {
    let _serial = SERIAL.lock().await;
    let ws = fitted(12);
    let images = test_images(&ws);
    let server = Server::start(&ws, &["--model", "runs/wood", "--no-maps"], None).await;
    let client = reqwest::Client::new();
    let identity = |card: &serde_json::Value| card["identity"].as_str().unwrap().to_string();
    let first: serde_json::Value =
        client.get(server.url("/v1/model")).send().await.unwrap().json().await.unwrap();

    // Refit the run with other levels while traffic flows, then reload through the API.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = traffic(&server, &images, 4, Arc::clone(&stop));
    ws.anodet(&["fit", "--category", "wood", "--levels", "6,7"]).ok();
    let reloaded = client.post(server.url("/v1/reload")).send().await.unwrap();
    assert_eq!(reloaded.status(), 200);
    let reloaded: serde_json::Value = reloaded.json().await.unwrap();
    assert_eq!(reloaded["model"]["levels"], serde_json::json!([6, 7]));
    assert_ne!(identity(&reloaded["model"]), identity(&first));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A corrupt run is refused; the previous one keeps serving.
    std::fs::write(ws.path().join("runs/wood/model.safetensors"), b"garbage").unwrap();
    let refused = client.post(server.url("/v1/reload")).send().await.unwrap();
    let message = json_error(refused, 409).await;
    assert!(message.contains("refused") && message.contains("model.safetensors"), "{message}");
    // SIGHUP with the corrupt run: refused too.
    server.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answered = finish(tasks).await;
    assert!(answered > 0);
    let card: serde_json::Value =
        client.get(server.url("/v1/model")).send().await.unwrap().json().await.unwrap();
    assert_eq!(identity(&card), identity(&reloaded["model"]));

    // Scores after the reload are those of the new run.
    ws.anodet(&["fit", "--category", "wood", "--levels", "5,7", "--out", "runs/other"]).ok();
    std::fs::remove_dir_all(ws.path().join("runs/wood")).unwrap();
    std::fs::rename(ws.path().join("runs/other"), ws.path().join("runs/wood")).unwrap();
    let expected = cli_scores(&ws, "runs/wood", &[images[5].0.clone()]);
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let card: serde_json::Value =
            client.get(server.url("/v1/model")).send().await.unwrap().json().await.unwrap();
        if card["levels"] == serde_json::json!([5, 7]) {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {}", server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body: serde_json::Value =
        post_image(&client, &server.url("/v1/score"), images[5].1.clone(), None)
            .await
            .json()
            .await
            .unwrap();
    assert_close(body["score"].as_f64().unwrap(), expected[&images[5].0], "after SIGHUP");
    let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("anodet_reloads_total{outcome=\"ok\"} 2"), "{metrics}");
    assert!(metrics.contains("anodet_reloads_total{outcome=\"refused\"} 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_requests_in_flight_and_exits_0() {
    let _serial = SERIAL.lock().await;
    let ws = fitted(12);
    let images = test_images(&ws);
    let mut server = Server::start(
        &ws,
        &["--model", "runs/wood", "--max-wait-ms", "400", "--max-batch", "64", "--no-maps"],
        None,
    )
    .await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for (_, bytes) in images.iter().take(8) {
        let (client, url, bytes) = (client.clone(), server.url("/v1/score"), bytes.clone());
        tasks.push(tokio::spawn(
            async move { post_image(&client, &url, bytes, None).await.status() },
        ));
    }
    // The requests are waiting for their batch to fill when SIGTERM arrives.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let status = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(server.stderr().contains("drained"), "{}", server.stderr());
    // Nothing listens any more.
    assert!(TcpStream::connect(&server.address).is_err());
}

#[test]
fn a_broken_run_at_start_is_one_error_line_and_exit_2() {
    let _serial = SERIAL.blocking_lock();
    let ws = Workspace::new();
    let output = Command::new(env!("CARGO_BIN_EXE_anodet"))
        .current_dir(ws.path())
        .args([
            "serve",
            "--model",
            "runs/none",
            "--listen",
            "127.0.0.1:0",
            "--device",
            "cpu",
            "--models",
        ])
        .arg(models_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("anodet: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("runs/none"), "{stderr}");
    let bad_flag = Command::new(env!("CARGO_BIN_EXE_anodet"))
        .current_dir(ws.path())
        .args(["serve", "--max-batch", "0", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_flag.stderr).contains("--max-batch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ensemble_on_two_networks_is_served_as_anodet_score_scores_it() {
    let _serial = SERIAL.lock().await;
    let ws = Workspace::with_images(16, 4, 3);
    let fit = "fit --category wood --scorer ensemble --member knn:6,7 \
               --member gaussian:7@efficientnet_lite1 --out runs/e";
    ws.anodet(&fit.split_whitespace().collect::<Vec<_>>()).ok();
    let images = test_images(&ws);
    let paths: Vec<String> = images.iter().map(|(p, _)| p.clone()).collect();
    let expected = cli_scores(&ws, "runs/e", &paths);
    assert_eq!(expected.len(), images.len());
    let mut server = Server::start(&ws, &["--model", "runs/e", "--max-wait-ms", "20"], None).await;
    let client = reqwest::Client::new();

    // Each image alone and all of them at once: each network's input prepared from the bytes,
    // each member scoring its own, the members standardised and summed.
    for (path, body) in score_concurrently(&client, &server, images.clone()).await {
        assert_close(body["score"].as_f64().unwrap(), expected[&path], &path);
    }
    let mut form = reqwest::multipart::Form::new();
    for (path, bytes) in images.iter().take(4) {
        let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(path.clone());
        form = form.part("image", part.mime_str("image/png").unwrap());
    }
    let body = post_batch(&client, &server, form).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{body}");
    for (result, (path, _)) in results.iter().zip(&images) {
        assert_close(result["score"].as_f64().unwrap(), expected[path], path);
    }

    // Its map is its knn member's, with the ensemble's score.
    let (path, bytes) = &images[4];
    let response = post_image(&client, &server.url("/v1/heatmap"), bytes.clone(), None).await;
    assert_eq!(response.status(), 200);
    let score: f64 = response.headers()["x-anodet-score"].to_str().unwrap().parse().unwrap();
    assert_close(score, expected[path], path);
    image::load_from_memory(&response.bytes().await.unwrap()).expect("a PNG");
    let card: serde_json::Value =
        client.get(server.url("/v1/model")).send().await.unwrap().json().await.unwrap();
    assert_eq!(card["map_method"], "knn", "{card}");
    let members = card["members"].as_array().expect("an ensemble's card lists its members");
    let described: Vec<(&str, &str)> = members
        .iter()
        .map(|m| (m["scorer"].as_str().unwrap(), m["backbone"].as_str().unwrap()))
        .collect();
    assert_eq!(described, [("knn", "efficientnet_lite0"), ("gaussian", "efficientnet_lite1")]);
    assert!(members.iter().all(|m| m["backbone_sha256"].as_str().unwrap().len() == 64));
    assert!(server.terminate().success());
}
