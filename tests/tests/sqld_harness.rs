//! Pins the sqld test harness (`tests::sqld`): a local sqld starts on a free loopback port and
//! answers `/health`, runs SQL through the Hrana-over-HTTP pipeline endpoint (`/v2/pipeline`),
//! keeps its data across a graceful restart on the same data directory and port, stops for
//! good when asked, moves to a new port on restart only if its old one was taken, holds its
//! port while stopped so that `resume` comes back on it (or fails, never moves), and a
//! second server started with `start_in` on an existing data directory sees the first one's
//! tables. Skips (or, under CI, fails) without the binary.

use tests::sqld::{SqldServer, require_sqld};

/// Runs `sql` statements in one Hrana pipeline (closing the stream) and returns the body.
async fn pipeline(server: &SqldServer, sql: &[&str]) -> anyhow::Result<String> {
    let mut requests: Vec<String> = sql
        .iter()
        .map(|s| format!(r#"{{"type":"execute","stmt":{{"sql":"{s}"}}}}"#))
        .collect();
    requests.push(r#"{"type":"close"}"#.to_owned());
    let body = format!(r#"{{"requests":[{}]}}"#, requests.join(","));
    let (status, response) = server.post("/v2/pipeline", &body).await?;
    anyhow::ensure!(status == 200, "pipeline answered {status}: {response}");
    anyhow::ensure!(
        !response.contains(r#""type":"error""#),
        "pipeline returned an error: {response}"
    );
    Ok(response)
}

#[tokio::test]
async fn sqld_starts_answers_restarts_and_stops() -> anyhow::Result<()> {
    if require_sqld().is_none() {
        return Ok(());
    }
    let mut server = SqldServer::start().await?;
    let url = server.url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let (status, _) = server.get("/health").await?;
    assert_eq!(status, 200);

    let body = r#"{"requests":[{"type":"execute","stmt":{"sql":"select 1"}},{"type":"close"}]}"#;
    let (status, response) = server.post("/v2/pipeline", body).await?;
    assert_eq!(status, 200, "{response}");
    assert!(
        response.contains(r#""rows":[[{"type":"integer","value":"1"}]]"#),
        "{response}"
    );

    pipeline(
        &server,
        &[
            "create table harness(x integer)",
            "insert into harness values (42)",
        ],
    )
    .await?;

    let data_dir = server.data_dir().to_path_buf();
    server.restart().await?;
    assert!(server.is_running());
    assert_eq!(server.data_dir(), data_dir);
    assert_eq!(server.url(), url, "restart should keep the port");

    let response = pipeline(&server, &["select x from harness"]).await?;
    assert!(
        response.contains(r#""rows":[[{"type":"integer","value":"42"}]]"#),
        "{response}"
    );

    server.stop().await;
    assert!(!server.is_running());
    assert!(
        server.get("/health").await.is_err(),
        "a stopped server must not answer"
    );
    let log = std::fs::read_to_string(server.log_path())?;
    assert!(
        log.contains("shutdown gracefully"),
        "stop should shut sqld down gracefully (SIGTERM); log:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn restart_moves_to_a_new_port_when_the_old_one_is_taken() -> anyhow::Result<()> {
    if require_sqld().is_none() {
        return Ok(());
    }
    let mut server = SqldServer::start().await?;
    pipeline(&server, &["create table moved(x integer)"]).await?;
    server.stop().await;
    let squatter = std::net::TcpListener::bind(("127.0.0.1", server.port()))?;

    server.restart().await?;
    assert_ne!(server.port(), squatter.local_addr()?.port());
    pipeline(&server, &["select count(*) from moved"]).await?;
    server.stop().await;
    Ok(())
}

/// While stopped, the server's port refuses connections (as a server that is down) and is
/// not handed to the port-0 binds other tests' servers start from; `resume` comes back on it,
/// and fails rather than move when a listener took it after all.
#[tokio::test]
async fn a_stopped_servers_port_is_held_until_it_resumes() -> anyhow::Result<()> {
    if require_sqld().is_none() {
        return Ok(());
    }
    let mut server = SqldServer::start().await?;
    let (url, port) = (server.url(), server.port());
    pipeline(&server, &["create table held(x integer)"]).await?;
    server.stop().await;
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "a stopped server accepts nothing");
    let others: Vec<_> = (0..64)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    for other in &others {
        assert_ne!(
            other.local_addr()?.port(),
            port,
            "the held port was handed out"
        );
    }
    server.resume().await?;
    assert_eq!(server.url(), url);
    pipeline(&server, &["select count(*) from held"]).await?;

    server.stop().await;
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let err = server.resume().await.expect_err("the port is taken");
    assert!(format!("{err:#}").contains("resume"), "{err:#}");
    drop(squatter);
    Ok(())
}

#[tokio::test]
async fn start_in_reuses_an_existing_data_dir() -> anyhow::Result<()> {
    if require_sqld().is_none() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("sqld-data");

    let mut first = SqldServer::start_in(data.clone()).await?;
    assert_eq!(first.data_dir(), data);
    pipeline(
        &first,
        &[
            "create table kept(x text)",
            "insert into kept values ('yes')",
        ],
    )
    .await?;
    first.stop().await;
    drop(first);
    assert!(data.is_dir(), "start_in must not delete the caller's dir");

    let mut second = SqldServer::start_in(data.clone()).await?;
    let response = pipeline(&second, &["select x from kept"]).await?;
    assert!(
        response.contains(r#""rows":[[{"type":"text","value":"yes"}]]"#),
        "{response}"
    );
    second.stop().await;
    Ok(())
}
