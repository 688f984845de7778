//! A TCP proxy in front of a Redis server that can lose a reply: what a
//! connection dropped after the server ran a command looks like to the client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

/// `url` (`redis://127.0.0.1:PORT/DB`, what the test engines are) through a proxy
/// that can lose a reply: when `drop_reply` is set, the reply to the next
/// `EVALSHA` is swallowed and both connections are closed (the server ran the
/// script; the client never hears of it). Returns the URL to connect to instead.
pub fn lossy_proxy(url: &str, drop_reply: Arc<AtomicBool>) -> String {
    lossy_proxy_on(url, drop_reply, b"EVALSHA")
}

/// As [`lossy_proxy`], for the next command whose bytes contain `trigger` (e.g.
/// `b"\r\nNX\r\n"`: a `SET … NX`).
#[allow(dead_code)] // not every test crate that includes this file uses it
pub fn lossy_proxy_on(url: &str, drop_reply: Arc<AtomicBool>, trigger: &'static [u8]) -> String {
    proxy(url, drop_reply, trigger, Arc::new(AtomicUsize::new(0)))
}

/// `url` through a proxy that loses nothing and counts the commands whose bytes
/// contain `trigger` into `count` (commands sent whole in one write, as the redis
/// crate does, each counted once).
#[allow(dead_code)]
pub fn counting_proxy(url: &str, trigger: &'static [u8], count: Arc<AtomicUsize>) -> String {
    proxy(url, Arc::new(AtomicBool::new(false)), trigger, count)
}

fn proxy(
    url: &str,
    drop_reply: Arc<AtomicBool>,
    trigger: &'static [u8],
    count: Arc<AtomicUsize>,
) -> String {
    let (upstream, db) = url
        .strip_prefix("redis://127.0.0.1:")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(port, db)| Some((port.parse::<u16>().ok()?, db)))
        .unwrap_or_else(|| panic!("{url} is not redis://127.0.0.1:PORT/DB"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let (drop_reply, count) = (drop_reply.clone(), count.clone());
            thread::spawn(move || {
                let mut server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let mut to_server = server.try_clone().unwrap();
                let mut from_client = client.try_clone().unwrap();
                let drop_next = Arc::new(AtomicBool::new(false));
                let armed = drop_next.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    loop {
                        let n = match from_client.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let seen = buf[..n]
                            .windows(trigger.len())
                            .filter(|w| *w == trigger)
                            .count();
                        count.fetch_add(seen, Ordering::SeqCst);
                        // The reply to drop is the one to the next matching command.
                        if seen > 0 && drop_reply.swap(false, Ordering::SeqCst) {
                            armed.store(true, Ordering::SeqCst);
                        }
                        if to_server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
                let mut buf = [0u8; 65536];
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if drop_next.swap(false, Ordering::SeqCst) {
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        let _ = server.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("redis://127.0.0.1:{port}/{db}")
}
