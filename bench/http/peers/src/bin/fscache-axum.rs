//! axum + fscache's session layer: the peers' page of bench/http/run.sh, nothing
//! else (no HTML, no middleware). `fscache-axum BIND STORE_URL auto|async|inline|blocking`;
//! 2 runtime workers.
use axum::{Router, routing::get};
use fscache::axum::{Session, SessionLayer, StoreCalls};
use fscache::session::{SessionConfig, Sessions};

async fn page(session: Session) -> Result<String, fscache::Error> {
    let visits = session
        .update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
        .await?
        .unwrap_or(0);
    Ok(format!("visits {visits}\n"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bind, url) = (args[1].clone(), args[2].clone());
    let calls = match args.get(3).map(String::as_str) {
        Some("inline") => StoreCalls::Inline,
        Some("blocking") => StoreCalls::Blocking,
        Some("async") => StoreCalls::Async,
        _ => StoreCalls::Auto,
    };
    let sessions = Sessions::new(fscache::store::open(&url).unwrap(), SessionConfig::default()).unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let app = Router::new()
                .route("/", get(page))
                .layer(SessionLayer::with_store_calls(sessions, calls));
            let listener = tokio::net::TcpListener::bind(&bind).await.unwrap();
            println!("listening on http://{}", listener.local_addr().unwrap());
            axum::serve(listener, app).await.unwrap();
        });
}
