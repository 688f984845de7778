//! TLS to Redis (`rediss://`) and PostgreSQL (`sslmode=…`), feature `tls`, against
//! servers started here on 127.0.0.1 with certificates of a private CA made here
//! with openssl: a redis-server that listens only on a TLS port, and a PostgreSQL
//! cluster whose pg_hba.conf accepts only TLS connections (`hostssl`), so a store
//! that opens spoke TLS. The server certificate names `localhost` only, so a
//! connection to `127.0.0.1` passes the chain check and fails the name check.
//! Locally a skip without redis-server, PostgreSQL or openssl; under `CI=true` a
//! failure.
#![cfg(all(feature = "tls", feature = "redis", feature = "postgres"))]

mod common;

#[path = "common/pg.rs"]
mod pg;
#[path = "common/servers.rs"]
mod servers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fscache::Error;
use fscache::store::{self, Store};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MINUTE: Duration = Duration::from_secs(60);

/// The files of a private CA, a server certificate it signed for `localhost`, and
/// a second CA that signed nothing here.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn make() -> Option<Certs> {
        let dir = tempfile::tempdir().unwrap();
        let ossl = |args: &[&str]| {
            Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN=fscache test {ca}"),
            );
            let mut args = vec![
                "req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt,
            ];
            args.extend(ec);
            args.extend([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            if !ossl(&args) {
                servers::missing("openssl");
                return None;
            }
        }
        let mut args = vec![
            "req",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ];
        args.extend(ec);
        assert!(ossl(&args), "openssl req for the server");
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        assert!(
            ossl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.crt",
            ]),
            "openssl x509 signs the server certificate"
        );
        Some(Certs { dir })
    }
}

fn round_trip(st: &dyn Store, what: &str) -> TestResult {
    let key = format!("tls-{what}");
    st.save(&key, b"over tls", MINUTE)?;
    assert_eq!(
        st.load(&key)?.map(|v| v.value),
        Some(b"over tls".to_vec()),
        "{what}"
    );
    st.update(&key, MINUTE, &mut |old| {
        let mut v = old.unwrap_or_default().to_vec();
        v.extend_from_slice(b"!");
        Ok(fscache::Merge::Put(v))
    })?;
    assert_eq!(st.load(&key)?.unwrap().value, b"over tls!", "{what}");
    assert!(st.remove(&key)?, "{what}");
    Ok(())
}

#[test]
fn rediss_verifies_the_server_against_the_named_ca() -> TestResult {
    let Some(certs) = Certs::make() else {
        return Ok(());
    };
    let port = servers::free_port();
    let args: Vec<std::ffi::OsString> = vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        port.to_string().into(),
        "--tls-auth-clients".into(),
        "no".into(),
        "--tls-cert-file".into(),
        certs.path("server.crt").into(),
        "--tls-key-file".into(),
        certs.path("server.key").into(),
        "--tls-ca-cert-file".into(),
        certs.path("ca.crt").into(),
    ];
    let Some(_redis) = servers::redis_server(port, &args) else {
        return Ok(());
    };
    let ca = certs.path("ca.crt");
    let ca = ca.display();

    let st = store::open(&format!(
        "rediss://localhost:{port}/0?ssl_ca_certs={ca}&pool_size=4"
    ))?;
    round_trip(&*st, "rediss with the CA")?;

    // The name, the chain, the protocol: each wrong one is refused.
    let other = certs.path("other-ca.crt");
    for (url, why) in [
        (
            format!("rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"),
            "a name the certificate does not hold",
        ),
        (
            format!(
                "rediss://localhost:{port}/0?ssl_ca_certs={}",
                other.display()
            ),
            "a CA that did not sign it",
        ),
        (format!("rediss://localhost:{port}/0"), "the system's roots"),
        (format!("redis://localhost:{port}/0"), "no TLS"),
    ] {
        let e = store::open(&url)
            .err()
            .unwrap_or_else(|| panic!("{why}: opened"));
        assert!(matches!(e, Error::Engine { .. }), "{why}: {e:?}");
    }
    // A CA file that is missing or holds no certificate, or one given to a URL
    // that has no TLS, is a configuration error.
    let mut bad: Vec<String> = [certs.path("nosuch.crt"), certs.path("ext.cnf")]
        .iter()
        .map(|p| format!("rediss://localhost:{port}/0?ssl_ca_certs={}", p.display()))
        .collect();
    bad.push(format!("redis://localhost:{port}/0?ssl_ca_certs={ca}"));
    bad.push(format!(
        "redis-cluster://localhost:{port}?ssl_ca_certs={ca}"
    ));
    for url in bad {
        let e = store::open(&url).err().expect("refused");
        assert!(matches!(e, Error::Config { .. }), "{url}: {e:?}");
    }
    Ok(())
}

/// A cluster with TLS on and only `hostssl` lines in pg_hba.conf.
fn tls_cluster(certs: &Certs, dir: &Path) -> Option<pg::Cluster> {
    let Some(bin) = pg::pg_bin() else {
        servers::missing("PostgreSQL (apt-get install postgresql)");
        return None;
    };
    let cluster = pg::Cluster::init(&bin, dir, "tls", servers::free_port());
    for f in ["server.crt", "server.key"] {
        std::fs::copy(certs.path(f), cluster.data.join(f)).unwrap();
    }
    let key = cluster.data.join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let hba = cluster.data.join("pg_hba.conf");
    let only_tls: String = std::fs::read_to_string(&hba)
        .unwrap()
        .lines()
        .map(|l| match l.strip_prefix("host ") {
            Some(rest) => format!("hostssl {rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&hba, only_tls).unwrap();
    pg::give_to_postgres(dir);
    cluster.start("-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
    Some(cluster)
}

#[test]
fn postgres_sslmodes_check_what_libpq_checks() -> TestResult {
    let Some(certs) = Certs::make() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let Some(cluster) = tls_cluster(&certs, tmp.path()) else {
        return Ok(());
    };
    let port = cluster.port;
    let ca = certs.path("ca.crt");
    let ca = ca.display();
    let other = certs.path("other-ca.crt");
    let other = other.display();
    let url =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");

    for (u, what) in [
        (
            url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "verify-full",
        ),
        (
            url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
            "verify-ca, another name",
        ),
        (
            url("127.0.0.1", "sslmode=require"),
            "require, no CA: encrypted, unverified",
        ),
        (url("127.0.0.1", "sslmode=prefer"), "prefer"),
        (
            format!(
                "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={ca}"
            ),
            "key-value verify-full",
        ),
    ] {
        let st = store::PostgresStore::open(&u).map_err(|e| format!("{what}: {e}"))?;
        round_trip(&st, what)?;
    }
    for (u, why) in [
        (
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "verify-full, a name the certificate does not hold",
        ),
        (
            url(
                "localhost",
                &format!("sslmode=verify-ca&sslrootcert={other}"),
            ),
            "verify-ca, a CA that did not sign it",
        ),
        // require with a root file checks the chain, as libpq does.
        (
            url("localhost", &format!("sslmode=require&sslrootcert={other}")),
            "require with another CA",
        ),
        (
            url("127.0.0.1", "sslmode=disable"),
            "no TLS: pg_hba.conf has only hostssl",
        ),
        (url("127.0.0.1", ""), "no TLS by default"),
    ] {
        let e = store::PostgresStore::open(&u)
            .err()
            .unwrap_or_else(|| panic!("{why}: opened"));
        assert!(matches!(e, Error::Engine { .. }), "{why}: {e:?}");
    }
    let e = store::PostgresStore::open(&url("localhost", "sslmode=verify-sometimes"))
        .expect_err("refused");
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    Ok(())
}
