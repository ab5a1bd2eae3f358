//! The OTLP export of the spans (feature `otlp`). With the feature, the real `memory` binary is
//! pointed (`[telemetry] otlp_endpoint` in `memory.toml`, or `MEMORY_OTLP_ENDPOINT`) at an
//! OTLP/HTTP receiver this test runs on a free loopback port; what each process posts to
//! `/v1/traces` is decoded with the official protobuf messages (`opentelemetry-proto`), and the
//! spans of the memory operations and of the MCP tool calls must carry the names and
//! attributes of OpenTelemetry's `gen_ai` conventions. Without the feature, a configured
//! endpoint is refused with a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(not(feature = "otlp"))]
#[test]
fn an_endpoint_in_a_build_without_the_exporter_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::memory(dir.path())
        .env("MEMORY_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .arg("stats")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("built without OTLP export") && stderr.contains("--features otlp"),
        "{stderr}"
    );
}

#[cfg(feature = "otlp")]
mod exported {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    use prost::Message;

    use super::common;

    /// One POST the receiver got: its path, content type and body.
    struct Post {
        path: String,
        content_type: String,
        body: Vec<u8>,
    }

    /// A minimal OTLP/HTTP receiver: HTTP/1.1 on a loopback port, every request answered
    /// `200` with an empty `ExportTraceServiceResponse`, every request kept.
    struct Receiver {
        endpoint: String,
        posts: Arc<Mutex<Vec<Post>>>,
    }

    impl Receiver {
        fn start() -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            let posts = Arc::new(Mutex::new(Vec::new()));
            let kept = Arc::clone(&posts);
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let kept = Arc::clone(&kept);
                    std::thread::spawn(move || serve(stream, &kept));
                }
            });
            Receiver { endpoint, posts }
        }

        /// The spans received so far, decoded.
        fn spans(&self) -> Vec<Span> {
            let posts = self.posts.lock().unwrap();
            let mut spans = Vec::new();
            for post in posts.iter() {
                assert_eq!(post.path, "/v1/traces");
                assert_eq!(post.content_type, "application/x-protobuf");
                let request = ExportTraceServiceRequest::decode(post.body.as_slice())
                    .expect("an OTLP ExportTraceServiceRequest");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .map(|r| attributes(&r.attributes))
                        .and_then(|mut a| a.remove("service.name"))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            spans.push(Span {
                                id: span.span_id,
                                parent: span.parent_span_id,
                                service: service.clone(),
                                kind: span.kind,
                                error: span
                                    .status
                                    .is_some_and(|s| s.code == StatusCode::Error as i32),
                                attributes: attributes(&span.attributes),
                                name: span.name,
                            });
                        }
                    }
                }
            }
            spans
        }

        /// The spans, once `ready` holds of them (the binary exports before it exits, so
        /// this rarely waits).
        fn spans_when(&self, ready: impl Fn(&[Span]) -> bool) -> Vec<Span> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let spans = self.spans();
                if ready(&spans) || Instant::now() > deadline {
                    return spans;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Serves the requests of one connection (keep-alive) until the client closes it.
    fn serve(stream: TcpStream, posts: &Mutex<Vec<Post>>) {
        let mut out = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let (mut length, mut content_type) = (0, String::new());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap_or((header, ""));
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "content-type" => value.trim().clone_into(&mut content_type),
                    "transfer-encoding" => panic!("unexpected transfer-encoding {value}"),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            posts.lock().unwrap().push(Post {
                path,
                content_type,
                body,
            });
            let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                          content-length: 0\r\n\r\n";
            if out.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// An exported span, as the test reads it.
    #[derive(Debug)]
    struct Span {
        id: Vec<u8>,
        parent: Vec<u8>,
        name: String,
        kind: i32,
        error: bool,
        service: String,
        attributes: BTreeMap<String, String>,
    }

    impl Span {
        fn attr(&self, key: &str) -> &str {
            self.attributes.get(key).map_or("", String::as_str)
        }
    }

    /// Attributes as text (integers in decimal).
    fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
        kvs.iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    Some(any_value::Value::IntValue(i)) => i.to_string(),
                    Some(any_value::Value::BoolValue(b)) => b.to_string(),
                    Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), value)
            })
            .collect()
    }

    const NS: &str = "otel/agent";

    /// `memory --json --namespace otel/agent ARGS` on `dir` (whose `memory.toml` names the
    /// receiver): the output, which must be a success unless `ok` is false.
    fn run(dir: &std::path::Path, args: &[&str], ok: bool) -> serde_json::Value {
        let out = common::memory(dir)
            .env_remove("OTEL_SERVICE_NAME")
            .args(["--json", "--namespace", NS])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            ok,
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The one span of the memory call `method` (its `code.function.name`) that `pick` selects.
    fn call<'a>(spans: &'a [Span], method: &str, pick: impl Fn(&Span) -> bool) -> &'a Span {
        let function = format!("memory_core::SelfLearningMemory::{method}");
        let found: Vec<&Span> = spans
            .iter()
            .filter(|s| s.attr("code.function.name") == function && pick(s))
            .collect();
        assert_eq!(found.len(), 1, "{method}: {found:#?}\nin {spans:#?}");
        found[0]
    }

    /// The one span of the memory call `method`.
    fn call_of<'a>(spans: &'a [Span], method: &str) -> &'a Span {
        call(spans, method, |_| true)
    }

    /// The attributes every memory operation's span has.
    fn assert_memory_span(span: &Span, operation: &str) {
        assert_eq!(span.name, operation, "{span:#?}");
        assert_eq!(span.attr("gen_ai.operation.name"), operation, "{span:#?}");
        assert_eq!(span.attr("gen_ai.memory.store.id"), NS, "{span:#?}");
        assert_eq!(span.kind, SpanKind::Internal as i32, "{span:#?}");
        assert_eq!(span.service, "memory", "{span:#?}");
    }

    #[test]
    fn memory_operations_are_exported_with_the_gen_ai_memory_conventions() {
        let receiver = Receiver::start();
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        // The endpoint from the config file this time (the MCP test below uses the variable).
        std::fs::write(
            dir.join("memory.toml"),
            format!("[telemetry]\notlp_endpoint = \"{}/\"\n", receiver.endpoint),
        )
        .unwrap();
        let context = ["--domain", "web_api", "--language", "rust"];
        let start = run(
            dir,
            &[
                &["episode", "start", "--task", "add rate limiting"][..],
                &context,
                &["--type", "code_generation"],
            ]
            .concat(),
            true,
        );
        let id = start["episode_id"].as_str().unwrap().to_owned();
        let step = [
            "episode", "step", &id, "--tool", "cargo", "--action", "test", "--ok", "passed",
        ];
        run(dir, &step, true);
        let done = [
            "episode",
            "complete",
            &id,
            "--success",
            "rate limiting added",
        ];
        run(dir, &done, true);
        let patterns = run(dir, &["pattern", "list"], true);
        let pattern = patterns["patterns"][0]["pattern"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let feedback = [
            "feedback",
            "--pattern",
            &pattern,
            "--episode",
            &id,
            "--outcome",
            "helped",
        ];
        run(dir, &feedback, true);
        let advice = run(
            dir,
            &[
                &["recommend", "--task", "add rate limiting to the API"][..],
                &context,
            ]
            .concat(),
            true,
        );
        assert_eq!(advice["episodes"][0]["episode"]["id"], id.as_str());
        // A failing command exports its spans too, the failure recorded.
        let unknown = "00000000-0000-4000-8000-000000000000";
        run(
            dir,
            &["episode", "complete", unknown, "--success", "x"],
            false,
        );

        let spans = receiver.spans_when(|spans| {
            spans
                .iter()
                .any(|s| s.attr("gen_ai.memory.record.id") == unknown)
        });

        let started = call(&spans, "start_episode", |_| true);
        assert_memory_span(started, "create_memory");
        assert_eq!(started.attr("gen_ai.memory.record.id"), id);
        assert_eq!(started.attr("gen_ai.memory.record.count"), "1");
        assert!(!started.error);

        let logged = call(&spans, "log_step", |_| true);
        assert_memory_span(logged, "update_memory");
        assert_eq!(logged.attr("gen_ai.memory.record.id"), id);

        let completed = call(&spans, "complete_episode", |s| !s.error);
        assert_memory_span(completed, "update_memory");
        assert_eq!(completed.attr("gen_ai.memory.record.id"), id);
        assert_eq!(completed.attr("error.type"), "");

        let judged = call(&spans, "record_feedback", |_| true);
        assert_memory_span(judged, "upsert_memory");
        assert_eq!(judged.attr("gen_ai.memory.record.id"), pattern);
        assert_eq!(judged.attr("episode_id"), id);

        let recommended = call(&spans, "recommend", |_| true);
        assert_memory_span(recommended, "search_memory");
        assert_eq!(recommended.attr("gen_ai.memory.record.count"), "1");
        assert_eq!(recommended.attr("limit"), "5");

        let failed = call(&spans, "complete_episode", |s| s.error);
        assert_memory_span(failed, "update_memory");
        assert_eq!(failed.attr("gen_ai.memory.record.id"), unknown);
        assert_eq!(failed.attr("error.type"), "not_found");

        // The exported spans are the memory crates' own (no span of the HTTP client or of
        // the exporter), and the library's operations go by their convention names only.
        for span in &spans {
            let module = span.attr("code.module.name");
            assert!(
                module.starts_with("memory"),
                "a span from outside the memory crates: {span:#?}"
            );
            if module.starts_with("memory_core::engine") {
                assert!(
                    span.name.ends_with("_memory"),
                    "a memory operation's span not named after its operation: {span:#?}"
                );
            }
        }
    }

    /// Sends one JSON-RPC message to `memory mcp`; for a request (with an `id`), its answer.
    fn rpc(
        stdin: &mut std::process::ChildStdin,
        stdout: &mut impl BufRead,
        message: &serde_json::Value,
    ) -> Option<serde_json::Value> {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        let id = message.get("id")?;
        loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "no answer to {message}"
            );
            if let Ok(answer) = serde_json::from_str::<serde_json::Value>(&line)
                && answer.get("id") == Some(id)
            {
                return Some(answer);
            }
        }
    }

    #[test]
    fn mcp_tool_calls_are_exported_as_mcp_server_spans() {
        let receiver = Receiver::start();
        let dir = tempfile::tempdir().unwrap();
        let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_memory"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--namespace", NS, "mcp"])
            .env_remove("MEMORY_MODE")
            .env_remove("OTEL_SERVICE_NAME")
            .env("MEMORY_MODEL_DIR", "/nonexistent-model-dir")
            .env("MEMORY_OTLP_ENDPOINT", &receiver.endpoint)
            // The stderr log's level, which the export does not follow.
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = server.stdin.take().unwrap();
        let mut stdout = BufReader::new(server.stdout.take().unwrap());
        let init = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": { "name": "otlp-test", "version": "1" }
            }
        });
        rpc(&mut stdin, &mut stdout, &init).unwrap();
        let initialized = serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/initialized"
        });
        rpc(&mut stdin, &mut stdout, &initialized);
        let call = |id: u32, tool: &str, arguments: serde_json::Value| {
            serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": tool, "arguments": arguments }
            })
        };
        let started = rpc(
            &mut stdin,
            &mut stdout,
            &call(
                2,
                "start_episode",
                serde_json::json!({ "task": "add rate limiting" }),
            ),
        )
        .unwrap();
        assert_ne!(started["result"]["isError"], true, "{started}");
        let refused = rpc(
            &mut stdin,
            &mut stdout,
            &call(3, "log_step", serde_json::json!({ "episode_id": "nope" })),
        )
        .unwrap();
        assert_eq!(refused["result"]["isError"], true, "{refused}");
        // The client goes away: the server stops, exporting what is left.
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "memory mcp did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }

        let spans = receiver.spans_when(|spans| spans.iter().any(|s| s.name.contains("log_step")));
        let tool_call = |tool: &str| {
            let name = format!("tools/call {tool}");
            let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
            assert_eq!(found.len(), 1, "{name}: {spans:#?}");
            let span = found[0];
            assert_eq!(span.kind, SpanKind::Server as i32, "{span:#?}");
            assert_eq!(span.attr("mcp.method.name"), "tools/call", "{span:#?}");
            assert_eq!(span.attr("gen_ai.tool.name"), tool, "{span:#?}");
            assert_eq!(
                span.attr("gen_ai.operation.name"),
                "execute_tool",
                "{span:#?}"
            );
            span
        };
        let start = tool_call("start_episode");
        assert!(!start.error, "{start:#?}");
        assert_eq!(start.attr("error.type"), "");
        // The memory operation is the tool call's child.
        let created = call_of(&spans, "start_episode");
        assert_memory_span(created, "create_memory");
        assert_eq!(created.parent, start.id);
        let log = tool_call("log_step");
        assert!(log.error, "{log:#?}");
        assert_eq!(log.attr("error.type"), "tool_error");
    }

    #[test]
    fn an_endpoint_that_is_not_plain_http_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = common::memory(dir.path())
            .env("MEMORY_OTLP_ENDPOINT", "https://collector.example:4318")
            .arg("stats")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid OTLP endpoint") && stderr.contains("https is not supported"),
            "{stderr}"
        );
    }
}
