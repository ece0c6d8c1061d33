//! `trit serve` / `llama-server`: the real binary on a loopback port (port 0, read back
//! from its log), driven over HTTP with reqwest.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
    /// What the server wrote to stderr before it listened.
    startup_log: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `trit serve` (as `prog`) with `args` on a free port; wait until it listens.
fn start_as(prog: &Path, args: &[&str]) -> Server {
    start_with_env(prog, &[], args)
}

/// [`start_as`] with extra environment variables.
fn start_with_env(prog: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
    let mut cmd = Command::new(prog);
    if prog == trit() {
        cmd.arg("serve");
    }
    let mut child = cmd
        .envs(env.iter().copied())
        .args(["--port", "0", "-t", "2"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.split("server is listening on ").nth(1) {
                    break url.trim().to_string();
                }
                log.push_str(&line);
                log.push('\n');
            }
            _ => panic!("server exited before listening:\n{log}"),
        }
    };
    // Keep draining the log so that the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Server { child, base, startup_log: log }
}

/// `trit serve --metrics ARGS`.
fn start(args: &[&str]) -> Server {
    let mut all = vec!["--metrics"];
    all.extend_from_slice(args);
    start_as(&trit(), &all)
}

fn model() -> PathBuf {
    converted("bitnet-2b4t-bf16", "tq2_0")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = client().get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = client().post(self.url(path)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, 200, "{path} {body}: {v}");
        v
    }

    /// POST with stream:true; returns every `data:` payload.
    async fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let r = client().post(self.url(path)).json(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let text = r.text().await.unwrap();
        text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
    }

    /// Greedy native completion text.
    async fn greedy(&self, prompt: &str, n: i32, extra: Value) -> String {
        let mut body = json!({"prompt": prompt, "n_predict": n, "temperature": 0, "ignore_eos": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let v = self.ok("/completion", &body).await;
        assert_eq!(v["tokens_predicted"], n, "{v}");
        v["content"].as_str().unwrap().to_string()
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = client().get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("llamacpp:{name} "))).expect(name);
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn info_endpoints_and_the_llama_server_name() {
    let link = scratch().join("llama-server");
    if !link.exists() {
        std::os::unix::fs::symlink(trit(), &link).unwrap();
    }
    let out = run_as(&link, &["--bogus"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: llama-server"));
    let m = model();
    let s = start_as(&link, &["-m", m.to_str().unwrap(), "-np", "3", "-c", "768", "-a", "tiny-bitnet,other"]);
    rt().block_on(async {
        assert_eq!(s.get("/health").await, (200, json!({"status": "ok"})));
        let (st, v) = s.get("/v1/models").await;
        assert_eq!(st, 200);
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], "tiny-bitnet");
        let (_, props) = s.get("/props").await;
        assert_eq!(props["total_slots"], 3);
        assert_eq!(props["default_generation_settings"]["n_ctx"], 256);
        assert!(props["chat_template"].as_str().unwrap().contains("assistant"), "{props}");
        let (_, slots) = s.get("/slots").await;
        assert_eq!(slots.as_array().unwrap().len(), 3);

        let toks = s.ok("/tokenize", &json!({"content": "Hello world"})).await;
        let ids = toks["tokens"].clone();
        assert!(ids.as_array().unwrap().len() >= 2);
        let back = s.ok("/detokenize", &json!({"tokens": ids})).await;
        assert_eq!(back["content"], "Hello world");
        let pieces = s.ok("/tokenize", &json!({"content": "Hello world", "with_pieces": true})).await;
        assert!(pieces["tokens"][0]["piece"].is_string());

        let msgs = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
        let t = s.ok("/apply-template", &json!({"messages": msgs})).await;
        let prompt = t["prompt"].as_str().unwrap();
        assert!(prompt.contains("Be brief.") && prompt.contains("Hi"), "{prompt}");

        // As in llama-server, /metrics needs --metrics.
        let (status, v) = s.get("/metrics").await;
        assert_eq!((status, v["error"]["type"].as_str()), (501, Some("not_supported_error")));
    });
}

#[test]
fn chat_and_completions_streaming_and_not() {
    let m = model();
    let s = start(&["-m", m.to_str().unwrap(), "-np", "2", "-c", "512"]);
    rt().block_on(async {
        let msgs = json!([{"role": "user", "content": "Tell me a story"}]);
        let body = json!({"model": "x", "messages": msgs, "max_tokens": 12, "temperature": 0, "seed": 1});
        let v = s.ok("/v1/chat/completions", &body).await;
        assert_eq!(v["object"], "chat.completion");
        let content = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        let n_out = v["usage"]["completion_tokens"].as_u64().unwrap();
        assert!(n_out <= 12 && v["usage"]["prompt_tokens"].as_u64().unwrap() > 3, "{v}");
        assert_eq!(v["usage"]["total_tokens"], v["usage"]["prompt_tokens"].as_u64().unwrap() + n_out);
        let fr = v["choices"][0]["finish_reason"].as_str().unwrap();
        assert!(fr == "length" && n_out == 12 || fr == "stop", "{v}");

        // The same request streamed: the deltas add up to the same text.
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        sbody["stream_options"] = json!({"include_usage": true});
        let events = s.stream("/v1/chat/completions", &sbody).await;
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let streamed: String =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
        assert_eq!(streamed, content);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
        assert_eq!(chunks.iter().filter(|c| c["choices"][0]["finish_reason"] == fr).count(), 1);
        assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], n_out);

        // OpenAI completions, with a stop string taken from the greedy text.
        let prompt = "The capital of France is";
        let full = s.greedy(prompt, 16, json!({})).await;
        let v = s.ok("/v1/completions", &json!({"prompt": prompt, "max_tokens": 16, "temperature": 0})).await;
        assert_eq!(v["object"], "text_completion");
        let text = v["choices"][0]["text"].as_str().unwrap();
        assert!(full.starts_with(text), "{full:?} vs {text:?}");
        let events = s
            .stream("/v1/completions", &json!({"prompt": prompt, "max_tokens": 16, "temperature": 0, "stream": true}))
            .await;
        assert_eq!(events.last().unwrap(), "[DONE]");
        let streamed: String = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(streamed, text);

        // A stop word: two consecutive valid characters of the greedy text (random-weight
        // models also emit invalid UTF-8, shown as U+FFFD, which cannot be matched).
        let chars: Vec<char> = full.chars().collect();
        let ok = |c: &char| *c != '\u{FFFD}' && !c.is_control();
        let pick = (1..chars.len().saturating_sub(1)).find(|&i| ok(&chars[i]) && ok(&chars[i + 1]));
        {
            let i = pick.expect("the greedy text has two consecutive valid characters");
            let stop: String = chars[i..i + 2].iter().collect();
            let cut = &full[..full.find(&stop).unwrap()];
            let v = s
                .ok("/completion", &json!({"prompt": prompt, "n_predict": 16, "temperature": 0, "stop": [stop]}))
                .await;
            assert_eq!(v["content"], cut);
            assert_eq!(v["stop_type"], "word");
            assert_eq!(v["stopping_word"], stop);
            // Streamed, the stop word is never sent, not even in part.
            let ev = s
                .stream(
                    "/completion",
                    &json!({"prompt": prompt, "n_predict": 16, "temperature": 0, "stop": [stop], "stream": true}),
                )
                .await;
            let parts: Vec<Value> = ev.iter().map(|e| serde_json::from_str(e).unwrap()).collect();
            let streamed: String = parts.iter().map(|p| p["content"].as_str().unwrap().to_string()).collect();
            assert_eq!(streamed, cut);
            assert_eq!(parts.last().unwrap()["stop"], true);
            assert_eq!(parts.last().unwrap()["stop_type"], "word");
        }

        // Token-id prompts and return_tokens.
        let ids = s.ok("/tokenize", &json!({"content": prompt, "add_special": true})).await["tokens"].clone();
        let v = s
            .ok(
                "/completion",
                &json!({"prompt": ids, "n_predict": 16, "temperature": 0, "ignore_eos": true, "return_tokens": true}),
            )
            .await;
        assert_eq!(v["content"], full);
        assert_eq!(v["tokens"].as_array().unwrap().len(), 16);
    });
}

#[test]
fn concurrent_requests_decode_in_one_batch_and_match_solo_runs() {
    let m = model();
    let s = start(&["-m", m.to_str().unwrap(), "-np", "8", "-c", "2048"]);
    let prompts: Vec<String> =
        (0..10).map(|i| format!("Request number {i}: the weather in city {} is", i * 7)).collect();
    rt().block_on(async {
        let mut solo = Vec::new();
        for p in &prompts {
            solo.push(s.greedy(p, 32, json!({})).await);
        }
        let text = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(text.contains("# TYPE llamacpp:prompt_tokens_total counter"), "{text}");
        let decodes_before = s.metric("n_decode_total").await;
        // 10 requests on 8 slots: 8 run at once, 2 wait for a free slot.
        let futs = prompts.iter().map(|p| s.greedy(p, 32, json!({})));
        let together = futures_util::future::join_all(futs).await;
        assert_eq!(together, solo, "batched greedy outputs must equal solo runs");
        let decodes = s.metric("n_decode_total").await - decodes_before;
        println!("10 concurrent requests: {decodes} llama_decode calls");
        // Solo: 10 x (1 prefill + 31 decodes) = 320 decode calls; batched, about 70.
        assert!(decodes < 160.0, "{decodes} llama_decode calls for 10 batched requests");
        assert!(s.metric("n_busy_slots_per_decode").await > 1.0);
        // Sampling with a seed is reproducible under concurrency too.
        let body = json!({"prompt": "Seeded", "n_predict": 24, "temperature": 0.9, "seed": 42, "ignore_eos": true});
        let (a, b, c) =
            tokio::join!(s.ok("/completion", &body), s.ok("/completion", &body), s.ok("/completion", &body));
        assert_eq!(a["content"], b["content"]);
        assert_eq!(a["content"], c["content"]);
        // Distinct prompts, distinct outputs (the slots did not share state).
        let distinct: std::collections::HashSet<_> = solo.iter().collect();
        assert!(distinct.len() > 5, "{solo:?}");
    });
}

#[test]
fn a_dropped_stream_frees_its_slot() {
    let m = model();
    // One slot with a long context, so that the stream runs long enough to be dropped.
    let s = start(&["-m", m.to_str().unwrap(), "-np", "1", "-c", "16384"]);
    rt().block_on(async {
        let body = json!({"prompt": "Once upon a time", "n_predict": 16000, "ignore_eos": true, "stream": true});
        let r = client().post(s.url("/completion")).json(&body).send().await.unwrap();
        let mut bytes = r.bytes_stream();
        let first = bytes.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: "));
        assert_eq!(s.get("/slots").await.1[0]["is_processing"], true);
        drop(bytes);
        let t0 = Instant::now();
        loop {
            if s.get("/slots").await.1[0]["is_processing"] == false {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "slot still busy after the client went away");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(s.metric("requests_cancelled_total").await, 1.0);
        assert!(s.metric("tokens_predicted_total").await < 15000.0);
        // A non-streaming request whose client gives up is dropped the same way.
        let slow = client()
            .post(s.url("/completion"))
            .timeout(Duration::from_millis(300))
            .json(&json!({"prompt": "Once upon a time", "n_predict": 16000, "ignore_eos": true}))
            .send()
            .await;
        assert!(slow.is_err(), "the client times out first");
        let t0 = Instant::now();
        while s.metric("requests_cancelled_total").await < 2.0 {
            assert!(t0.elapsed() < Duration::from_secs(20), "slot still busy after the client went away");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The single slot serves the next request, from a clean cache.
        let a = s.greedy("Hello there", 8, json!({})).await;
        let b = s.greedy("Hello there", 8, json!({})).await;
        assert_eq!(a, b);
    });
}

#[test]
fn bad_requests_get_json_errors_and_do_not_disturb_other_slots() {
    let m = model();
    let s = start(&[
        "-m",
        m.to_str().unwrap(),
        "-np",
        "2",
        "-c",
        "512",
        "--api-key",
        "other,sekrit",
        "--body-limit",
        "65536",
    ]);
    rt().block_on(async {
        let c = client();
        let auth = |r: reqwest::RequestBuilder| r.header("Authorization", "Bearer sekrit");
        // /health is public; everything else needs the key.
        assert_eq!(c.get(s.url("/health")).send().await.unwrap().status(), 200);
        for key in [None, Some("Bearer wrong"), Some("sekrit")] {
            let mut r = c.get(s.url("/v1/models"));
            if let Some(k) = key {
                r = r.header("Authorization", k);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 401);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], 401);
            assert_eq!(v["error"]["type"], "authentication_error");
        }
        assert_eq!(auth(c.get(s.url("/v1/models"))).send().await.unwrap().status(), 200);
        let r = c.get(s.url("/v1/models")).header("x-api-key", "other").send().await.unwrap();
        assert_eq!(r.status(), 200, "any of the comma-separated keys, also as X-Api-Key");

        // A long generation runs in one slot while bad requests come in.
        let good = json!({"prompt": "Keep going", "n_predict": 64, "temperature": 0, "ignore_eos": true});
        let expected = auth(c.post(s.url("/completion"))).json(&good).send().await.unwrap();
        let expected: Value = expected.json().await.unwrap();
        let in_flight = tokio::spawn({
            let r = auth(c.post(s.url("/completion"))).json(&good);
            async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
        });

        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("/completion", b"{not json".to_vec(), 400),
            ("/v1/chat/completions", b"[1,2]".to_vec(), 400),
            ("/v1/chat/completions", br#"{"messages": "hi"}"#.to_vec(), 400),
            ("/completion", br#"{"prompt": "x", "temperature": "hot"}"#.to_vec(), 400),
            ("/completion", br#"{"prompt": [1, 99999999]}"#.to_vec(), 400),
            ("/completion", br#"{"prompt": "x", "lora": [{"id": 5, "scale": 1}]}"#.to_vec(), 400),
            ("/completion", br#"{"prompt": []}"#.to_vec(), 400),
            ("/v1/completions", br#"{"prompt": "x", "n": 2}"#.to_vec(), 400),
            ("/completion", json!({"prompt": "word ".repeat(400)}).to_string().into_bytes(), 400),
            ("/completion", vec![b' '; 100_000], 413),
            ("/no/such/endpoint", b"{}".to_vec(), 404),
        ];
        for (path, body, status) in cases {
            let r = auth(c.post(s.url(path)))
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), status, "{path} {}", String::from_utf8_lossy(&body[..body.len().min(60)]));
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], status, "{v}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()) && v["error"]["type"].is_string());
        }
        let got = in_flight.await.unwrap();
        assert_eq!(got["content"], expected["content"]);
        assert_eq!(got["tokens_predicted"], 64);
    });
}

/// A LoRA adapter GGUF for the fixture's shape (hidden 256): random A/B on q and output
/// projections of both layers, large enough to change greedy outputs.
fn make_adapter(path: &Path) {
    use trit_gguf::{GgmlType, GgufWriter};
    let (n, r) = (256u64, 8u64);
    let names: Vec<String> =
        (0..2).flat_map(|l| ["attn_q", "attn_output"].map(|t| format!("blk.{l}.{t}.weight"))).collect();
    let mut w = GgufWriter::new();
    w.add_kv("general.type", "adapter").unwrap();
    w.add_kv("general.architecture", "bitnet").unwrap();
    w.add_kv("adapter.type", "lora").unwrap();
    w.add_kv("adapter.lora.alpha", r as f32).unwrap();
    for name in &names {
        w.add_tensor(format!("{name}.lora_a"), GgmlType::F32, &[n, r]).unwrap();
        w.add_tensor(format!("{name}.lora_b"), GgmlType::F32, &[r, n]).unwrap();
    }
    let mut stream = w.create(path).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    };
    for name in &names {
        for suffix in ["lora_a", "lora_b"] {
            let bytes: Vec<u8> = (0..n * r).flat_map(|_| (rand() * 0.5).to_le_bytes()).collect();
            stream.write_tensor(&format!("{name}.{suffix}"), &bytes).unwrap();
        }
    }
    stream.finish().unwrap();
}

#[test]
fn lora_adapters_switch_globally_and_per_request() {
    let m = model();
    let adapter = scratch().join("server-test-lora.gguf");
    make_adapter(&adapter);
    let s = start(&[
        "-m",
        m.to_str().unwrap(),
        "-np",
        "4",
        "-c",
        "1024",
        "--lora",
        adapter.to_str().unwrap(),
        "--lora-init-without-apply",
    ]);
    rt().block_on(async {
        let (_, list) = s.get("/lora-adapters").await;
        assert_eq!(list[0]["id"], 0);
        assert_eq!(list[0]["scale"], 0.0);
        assert!(list[0]["path"].as_str().unwrap().ends_with("server-test-lora.gguf"));
        let p = "The quick brown fox";
        let base = s.greedy(p, 16, json!({})).await;
        let with = s.greedy(p, 16, json!({"lora": [{"id": 0, "scale": 1.0}]})).await;
        assert_ne!(base, with, "the adapter must change the output");
        assert_eq!(s.greedy(p, 16, json!({})).await, base, "a request's scale does not stick");
        // Both kinds at once: slots with different scales take turns, each gets its own.
        let (a, b) =
            tokio::join!(s.greedy(p, 16, json!({})), s.greedy(p, 16, json!({"lora": [{"id": 0, "scale": 1}]})));
        assert_eq!((a, b), (base.clone(), with.clone()));
        // The global scale.
        s.ok("/lora-adapters", &json!([{"id": 0, "scale": 1.0}])).await;
        assert_eq!(s.get("/lora-adapters").await.1[0]["scale"], 1.0);
        assert_eq!(s.greedy(p, 16, json!({})).await, with);
        assert_eq!(s.greedy(p, 16, json!({"lora": []})).await, base);
    });
}

#[test]
fn official_openai_python_client() {
    let probe = Command::new("python3").args(["-c", "import openai"]).output();
    match probe {
        Err(e) => {
            println!("SKIPPED: official_openai_python_client: python3 not runnable ({e})");
            return;
        }
        Ok(o) if !o.status.success() => {
            println!(
                "SKIPPED: official_openai_python_client: the `openai` Python package is not importable \
                 (pip install openai to run this test)"
            );
            return;
        }
        Ok(_) => {}
    }
    let m = model();
    let s = start(&["-m", m.to_str().unwrap(), "-np", "2", "-c", "512", "--api-key", "k1", "-a", "tiny"]);
    let script = r#"
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="k1")
assert [m.id for m in c.models.list().data] == ["tiny"]
r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0)
text = r.choices[0].message.content
assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
parts = []
for ch in c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                    temperature=0, stream=True):
    if ch.choices and ch.choices[0].delta.content:
        parts.append(ch.choices[0].delta.content)
assert "".join(parts) == text, (parts, text)
r = c.completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0)
assert r.choices[0].text is not None
try:
    openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="bad").models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError:
    pass
print("openai client OK")
"#;
    let out = Command::new("python3").args(["-c", script, &s.base]).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn long_prompts_prefill_in_chunks_beside_generating_slots() {
    let m = model();
    // -b 32: a 60-token prompt takes two steps or more, sharing batches with other slots'
    // next tokens; -nocb is accepted too (admission only between generations).
    let prompts: Vec<String> =
        (0..4).map(|i| format!("{i} {}", "alpha beta gamma delta epsilon zeta eta theta ".repeat(6))).collect();
    for extra in [&[][..], &["-nocb"][..]] {
        let mut args = vec!["-m", m.to_str().unwrap(), "-np", "4", "-c", "1024", "-b", "32", "-ub", "32"];
        args.extend_from_slice(extra);
        let s = start(&args);
        rt().block_on(async {
            let n = s.ok("/tokenize", &json!({"content": prompts[0]})).await["tokens"].as_array().unwrap().len();
            assert!(n > 40, "{n} prompt tokens");
            let mut solo = Vec::new();
            for p in &prompts {
                solo.push(s.greedy(p, 20, json!({})).await);
            }
            let together = futures_util::future::join_all(prompts.iter().map(|p| s.greedy(p, 20, json!({})))).await;
            assert_eq!(together, solo, "{extra:?}");
        });
    }
}

/// The server runs the CPU kernels `--ternary-kernels` names, trit's by default, as `trit run`
/// does (it used to accept the flag and keep ggml's kernels either way).
#[test]
fn serve_installs_the_chosen_cpu_kernels() {
    let m = model();
    let m = m.to_str().unwrap();
    let debug = [("TRIT_LOG", "debug")];
    for (args, want) in [
        (vec!["-m", m], "ternary kernels: trit"),
        (vec!["-m", m, "--ternary-kernels", "ggml"], "ternary kernels: ggml"),
    ] {
        let s = start_with_env(&trit(), &debug, &args);
        assert!(s.startup_log.contains(want), "{args:?}: no '{want}' in the start-up log:\n{}", s.startup_log);
    }
}
