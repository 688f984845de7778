//! actix-web + actix-session's RedisSessionStore: the page of bench/http/run.sh.
//! `actix-redis BIND REDIS_URL`; 2 workers.
use actix_session::storage::RedisSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{App, HttpServer, web};

async fn page(session: Session) -> String {
    let visits = session.get::<u64>("visits").unwrap().unwrap_or(0) + 1;
    session.insert("visits", visits).unwrap();
    format!("visits {visits}\n")
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (bind, url) = (args[1].clone(), args[2].clone());
    let store = RedisSessionStore::new(url).await.unwrap();
    let key = Key::generate();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_secure(false)
                    .build(),
            )
            .route("/", web::get().to(page))
    })
    .workers(2)
    .bind(&bind)?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}
