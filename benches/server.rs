//! The example server over loopback: requests per second of `GET /` (session load,
//! counter update, save) with 1, 2 and 4 client threads, each its own session, on
//! keep-alive connections. `cargo bench --bench server`.

#[allow(dead_code)]
#[path = "../examples/server.rs"]
mod server;

use std::time::{Duration, Instant};

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = server::Settings {
        bind: "127.0.0.1:0".into(),
        store: format!("file://{}", tmp.path().join("sessions").display()),
        cleanup: false,
        secrets: vec!["bench secret".into()],
        secure: false,
        threads: 4,
        ..server::Settings::default()
    };
    let running = server::start(&settings).unwrap();
    let url = format!("http://{}/", running.addr);
    let secs = 3.0;
    println!("{:>8} {:>10} {:>10}", "clients", "req/s", "µs/req");
    for clients in [1usize, 2, 4] {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..clients)
                .map(|_| {
                    let url = url.clone();
                    s.spawn(move || {
                        let agent = ureq::Agent::new_with_defaults();
                        let mut resp = agent.get(&url).call().unwrap();
                        let cookie = resp
                            .headers()
                            .get("set-cookie")
                            .unwrap()
                            .to_str()
                            .unwrap()
                            .split(';')
                            .next()
                            .unwrap()
                            .to_owned();
                        let _ = resp.body_mut().read_to_string();
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            let mut r = agent.get(&url).header("Cookie", &cookie).call().unwrap();
                            let _ = r.body_mut().read_to_string().unwrap();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let rate = total as f64 / secs;
        println!(
            "{clients:>8} {rate:>10.0} {:>10.1}",
            1e6 / rate * clients as f64
        );
    }
    running.stop();
}
