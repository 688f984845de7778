//! axum + tower-sessions + tower-sessions-redis-store (fred): the page of
//! bench/http/run.sh. `tower-redis BIND REDIS_URL`; 2 runtime workers.
use axum::{Router, routing::get};
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tower_sessions_redis_store::{RedisStore, fred::prelude::*};

async fn page(session: Session) -> String {
    let visits = session.get::<u64>("visits").await.unwrap().unwrap_or(0) + 1;
    session.insert("visits", visits).await.unwrap();
    format!("visits {visits}\n")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bind, url) = (args[1].clone(), args[2].clone());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            // Reconnecting (every 100 ms, for ever), as a deployed app would: without
            // a policy fred's clients stay down after Redis drops their connections
            // (a `CLIENT KILL` by fscache's tests on the same Redis), and the page
            // then hangs.
            let policy = ReconnectPolicy::new_constant(0, 100);
            let pool = Pool::new(Config::from_url(&url).unwrap(), None, None, Some(policy), 2).unwrap();
            let _conn = pool.connect();
            pool.wait_for_connect().await.unwrap();
            let layer = SessionManagerLayer::new(RedisStore::new(pool))
                .with_secure(false)
                .with_expiry(Expiry::OnInactivity(time::Duration::days(7)));
            let app = Router::new().route("/", get(page)).layer(layer);
            let listener = tokio::net::TcpListener::bind(&bind).await.unwrap();
            println!("listening on http://{}", listener.local_addr().unwrap());
            axum::serve(listener, app).await.unwrap();
        });
}
