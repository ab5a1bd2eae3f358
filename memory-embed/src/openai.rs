//! An [`Embedder`] speaking the OpenAI-compatible `POST /v1/embeddings` API (served by `OpenAI`
//! itself and by gateways and local servers such as `vLLM`, `Ollama`, `LiteLLM` and
//! `text-embeddings-inference`). Behind the `openai` feature.

use std::time::Duration;

use async_trait::async_trait;
use memory_core::{Embedder, Error, Result, l2_normalize};
use serde::{Deserialize, Serialize};

/// Settings of an [`OpenAiEmbedder`].
#[derive(Clone)]
pub struct OpenAiConfig {
    /// API base including the version segment, e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:11434/v1`; `/embeddings` is appended.
    pub base_url: String,
    /// Bearer token, if the server wants one (never logged).
    pub api_key: Option<String>,
    /// Model name sent in each request and reported as the model id, e.g.
    /// `text-embedding-3-small`.
    pub model: String,
    /// Vector length the model returns; a response of another length is an error.
    pub dimensions: usize,
    /// Texts per request.
    pub batch_size: usize,
    /// Time limit of one request.
    pub timeout: Duration,
}

impl OpenAiConfig {
    /// A config for `model` at `base_url` with `dimensions`-long vectors, no key, batches of 64
    /// and a 30 s timeout.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dimensions: usize) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            dimensions,
            batch_size: 64,
            timeout: Duration::from_secs(30),
        }
    }

    /// Sets the bearer token.
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Embeddings from an OpenAI-compatible HTTP server. Vectors are L2-normalized on arrival
/// (not every compatible server normalizes). Sends texts off the machine: only for
/// deployments that accept that; the default embedder is the local [`crate::MiniLmEmbedder`].
///
/// ```no_run
/// use memory_core::Embedder;
/// use memory_embed::{OpenAiConfig, OpenAiEmbedder};
///
/// # async fn demo() -> memory_core::Result<()> {
/// let config = OpenAiConfig::new("https://api.openai.com/v1", "text-embedding-3-small", 1536)
///     .with_api_key(std::env::var("OPENAI_API_KEY").unwrap_or_default());
/// let embedder = OpenAiEmbedder::new(config)?;
/// let vectors = embedder.embed(&["add rate limiting middleware".to_owned()]).await?;
/// assert_eq!(vectors[0].len(), 1536);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    config: OpenAiConfig,
    url: String,
    client: reqwest::Client,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    index: usize,
}

/// Backend name in [`Error::Storage`] for this embedder's failures.
const BACKEND: &str = "openai-embeddings";

impl OpenAiEmbedder {
    /// Builds the HTTP client. Fails with [`Error::InvalidInput`] on an empty model, zero
    /// dimensions or batch size, or a base URL that is not `http(s)://`.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        if config.model.trim().is_empty() {
            return Err(Error::invalid("openai.model", "empty"));
        }
        if config.dimensions == 0 {
            return Err(Error::invalid("openai.dimensions", "must be positive"));
        }
        if config.batch_size == 0 {
            return Err(Error::invalid("openai.batch_size", "must be positive"));
        }
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::invalid(
                "openai.base_url",
                format!("{base:?} is not an http(s) URL"),
            ));
        }
        let url = format!("{base}/embeddings");
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::storage(BACKEND, "build client", false, e))?;
        Ok(Self {
            config,
            url,
            client,
        })
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let body = Request {
            model: &self.config.model,
            input: texts,
            encoding_format: "float",
        };
        let mut request = self.client.post(&self.url).json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            let transient = e.is_timeout() || e.is_connect() || e.is_request();
            Error::storage(BACKEND, "embed", transient, e)
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let snippet: String = text.chars().take(300).collect();
            let transient = status.is_server_error() || status.as_u16() == 429;
            return Err(Error::storage(
                BACKEND,
                "embed",
                transient,
                format!("{} answered {status}: {snippet}", self.url),
            ));
        }
        let parsed: Response = response
            .json()
            .await
            .map_err(|e| Error::storage(BACKEND, "embed", false, e))?;
        self.check(parsed, texts.len())
    }

    /// Orders the items by `index` and checks count and lengths.
    fn check(&self, parsed: Response, expected: usize) -> Result<Vec<Vec<f32>>> {
        let bad = |reason: String| Error::storage(BACKEND, "embed", false, reason);
        if parsed.data.len() != expected {
            return Err(bad(format!(
                "{} vectors for {expected} texts",
                parsed.data.len()
            )));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
        for item in parsed.data {
            if item.embedding.len() != self.config.dimensions {
                return Err(bad(format!(
                    "vector of length {}, expected {}",
                    item.embedding.len(),
                    self.config.dimensions
                )));
            }
            match out.get_mut(item.index) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => return Err(bad(format!("bad or repeated index {}", item.index))),
            }
        }
        out.into_iter()
            .map(|v| {
                let mut v = v.ok_or_else(|| bad("missing index".to_owned()))?;
                l2_normalize(&mut v);
                Ok(v)
            })
            .collect()
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.config.model
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.config.batch_size) {
            out.extend(self.embed_batch(chunk).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one HTTP exchange per connection with `respond(request_text) -> (status, body)`,
    /// and returns the base URL.
    async fn serve(respond: fn(&str) -> (u16, String)) -> std::io::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read headers, then the body by Content-Length.
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                let l = l.to_ascii_lowercase();
                                l.strip_prefix("content-length:")
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let (status, body) = respond(&String::from_utf8_lossy(&buf));
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        Ok(format!("http://{addr}/v1"))
    }

    /// Answers with vectors `[i+1, 0, 0]` for input `i`, in reverse order, so ordering by
    /// `index` is exercised; checks the path, auth header and model.
    fn echo(request: &str) -> (u16, String) {
        if !request.starts_with("POST /v1/embeddings ")
            || !request
                .to_ascii_lowercase()
                .contains("authorization: bearer k3y")
            || !request.contains(r#""model":"m""#)
        {
            return (400, r#"{"error":"bad request"}"#.to_owned());
        }
        let body = &request[request.find("\r\n\r\n").map_or(0, |i| i + 4)..];
        let n = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["input"].as_array().map(Vec::len))
            .unwrap_or(0);
        let items: Vec<String> = (0..n)
            .rev()
            .map(|i| {
                format!(
                    r#"{{"object":"embedding","index":{i},"embedding":[{}.0,0.0,0.0]}}"#,
                    i + 1
                )
            })
            .collect();
        (
            200,
            format!(
                r#"{{"object":"list","data":[{}],"model":"m"}}"#,
                items.join(",")
            ),
        )
    }

    fn config(base: String) -> OpenAiConfig {
        let mut c = OpenAiConfig::new(base, "m", 3).with_api_key("k3y");
        c.batch_size = 2;
        c
    }

    #[tokio::test]
    async fn embeds_in_order_across_batches_and_normalizes() -> anyhow::Result<()> {
        let base = serve(echo).await?;
        let e = OpenAiEmbedder::new(config(base))?;
        assert_eq!((e.model_id(), e.dimensions()), ("m", 3));
        let texts: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        let v = e.embed(&texts).await?;
        assert_eq!(v.len(), 5);
        for row in &v {
            assert_eq!(row, &vec![1.0, 0.0, 0.0]);
        }
        assert!(e.embed(&[]).await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn wrong_dimensions_and_http_errors_are_reported() -> anyhow::Result<()> {
        let base = serve(echo).await?;
        let mut c = config(base.clone());
        c.dimensions = 4;
        let err = OpenAiEmbedder::new(c)?.embed(&["a".to_owned()]).await.err();
        assert!(
            matches!(
                err,
                Some(Error::Storage {
                    transient: false,
                    ..
                })
            ),
            "{err:?}"
        );

        let mut c = config(base);
        c.api_key = Some("wrong".to_owned());
        let err = OpenAiEmbedder::new(c)?.embed(&["a".to_owned()]).await.err();
        let msg = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(msg.contains("400"), "{msg}");
        assert!(err.is_some_and(|e| !e.is_transient()));
        Ok(())
    }

    #[tokio::test]
    async fn server_errors_are_transient() -> anyhow::Result<()> {
        let base = serve(|_| (503, "{}".to_owned())).await?;
        let err = OpenAiEmbedder::new(config(base))?
            .embed(&["a".to_owned()])
            .await
            .err();
        assert!(err.is_some_and(|e| e.is_transient()));
        Ok(())
    }

    #[test]
    fn config_is_validated_and_key_redacted() {
        assert!(OpenAiEmbedder::new(OpenAiConfig::new("ftp://x", "m", 3)).is_err());
        assert!(OpenAiEmbedder::new(OpenAiConfig::new("http://x", "", 3)).is_err());
        assert!(OpenAiEmbedder::new(OpenAiConfig::new("http://x", "m", 0)).is_err());
        let c = OpenAiConfig::new("http://x", "m", 3).with_api_key("secret");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
