//! TLS to PostgreSQL by the URL's `sslmode`, against a throwaway cluster that accepts TCP
//! connections over TLS only (`hostssl` in pg_hba.conf), with a certificate authority and a
//! server certificate for `localhost` made at run time.

use std::path::{Path, PathBuf};

use postgres::Client;

use crate::pg::{PgCluster, PgSetup, config, lethe_pg, pg_ids};
use crate::*;

/// A certificate authority's certificate (PEM), and a certificate and key it issued for
/// `localhost` (and no other name, nor any address).
struct Certs {
    ca: String,
    server: String,
    server_key: String,
}

fn certs(ca_name: &str) -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server.signed_by(&key, &ca).unwrap();
    Certs {
        ca: ca.pem(),
        server: server.pem(),
        server_key: key.serialize_pem(),
    }
}

/// A cluster that takes TCP connections over TLS only, its database `app` holding `logs`
/// (ids 1..=20, the even ones past their window), and two CA files: the server's, and
/// another's.
struct TlsCluster {
    pg: PgCluster,
    files: Tmp,
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let c = certs("lethe test CA");
        let pg = PgCluster::start_setup(PgSetup {
            files: &[
                ("server.crt", c.server.as_bytes()),
                ("server.key", c.server_key.as_bytes()),
            ],
            settings: &[
                "ssl=on",
                "ssl_cert_file=server.crt",
                "ssl_key_file=server.key",
            ],
            hba: Some("hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust"),
            ..PgSetup::default()
        });
        pg.socket_client("postgres")
            .batch_execute("CREATE DATABASE app")
            .unwrap();
        pg.socket_client("app")
            .batch_execute(
                "CREATE TABLE logs (id bigint PRIMARY KEY, user_id text, created_at timestamptz);
                 INSERT INTO logs SELECT g, 'u', now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 40 ELSE 1 END)
                 FROM generate_series(1, 20) g;",
            )
            .unwrap();
        let files = Tmp::new("pg-tls");
        std::fs::write(files.path("ca.pem"), &c.ca).unwrap();
        std::fs::write(files.path("other-ca.pem"), certs("another CA").ca).unwrap();
        TlsCluster { pg, files }
    }

    /// `postgres://postgres@HOST:PORT/app?QUERY`
    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/app?{query}", self.pg.port())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.files.path(name)
    }

    /// A config for `logs` at `url`, the state in SQLite beside the CA files.
    fn config(&self, url: &str) -> PathBuf {
        let state = format!("sqlite://{}/state.db", self.files.0.display());
        config(&self.files.0, url, &state, "logs", "created_at", "")
    }

    fn data(&self) -> Client {
        self.pg.socket_client("app")
    }
}

fn all(r: &Run) -> String {
    format!("{}{}", r.stdout, r.stderr)
}

fn rootcert(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

#[test]
fn require_prefer_and_verified_connections_reach_a_tls_only_server() {
    let t = TlsCluster::start();
    let ca = rootcert(&t.file("ca.pem"));
    for url in [
        t.url("127.0.0.1", "sslmode=require"),
        t.url("127.0.0.1", "sslmode=prefer"),
        // verify-ca checks the chain, not the name: 127.0.0.1 is not in the certificate.
        t.url("127.0.0.1", &format!("sslmode=verify-ca&{ca}")),
        t.url("localhost", &format!("sslmode=verify-full&{ca}")),
        // Given a root certificate, require checks the chain, as libpq's does.
        t.url("127.0.0.1", &format!("sslmode=require&{ca}")),
    ] {
        let cfg = t.config(&url);
        let r = lethe_pg(&cfg, &["check"]);
        assert_eq!(r.code, Some(0), "{url}: {}", all(&r));
        let r = lethe_pg(&cfg, &["sweep", "--json"]);
        assert_eq!(r.code, Some(0), "{url}: {}", all(&r));
        assert_eq!(r.json()["targets"][0]["found"], 10, "{url}");
    }
    // A sweep that deletes, over TLS with the certificate and its name checked.
    let cfg = t.config(&t.url("localhost", &format!("sslmode=verify-full&{ca}")));
    let r = lethe_pg(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["deleted"], 10);
    let left: Vec<String> = (1..=20)
        .filter(|i| i % 2 == 1)
        .map(|i| i.to_string())
        .collect();
    let mut got = pg_ids(&mut t.data(), "logs");
    got.sort_by_key(|k| k.parse::<i64>().unwrap());
    assert_eq!(got, left);
}

#[test]
fn an_unverifiable_certificate_or_no_tls_is_refused_and_nothing_is_touched() {
    let t = TlsCluster::start();
    let ca = rootcert(&t.file("ca.pem"));
    let other = rootcert(&t.file("other-ca.pem"));
    for (url, expect) in [
        // The certificate names localhost, not 127.0.0.1.
        (
            t.url("127.0.0.1", &format!("sslmode=verify-full&{ca}")),
            "certificate",
        ),
        // Issued by a CA the client was not given.
        (
            t.url("localhost", &format!("sslmode=verify-full&{other}")),
            "certificate",
        ),
        (
            t.url("127.0.0.1", &format!("sslmode=verify-ca&{other}")),
            "certificate",
        ),
        (
            t.url("127.0.0.1", &format!("sslmode=require&{other}")),
            "certificate",
        ),
        // Without TLS the server refuses: disable, and the default, which is disable.
        (t.url("127.0.0.1", "sslmode=disable"), "no encryption"),
        (
            t.url("127.0.0.1", "application_name=lethe"),
            "no encryption",
        ),
    ] {
        let cfg = t.config(&url);
        let shown = url.split('?').next().unwrap();
        for args in [
            &["check"][..],
            &["sweep", "--apply", "--json"],
            &["erase", "--subject", "u", "--apply", "--json"],
        ] {
            let r = lethe_pg(&cfg, args);
            // As for any target that cannot be reached: bad config, nothing touched.
            assert_eq!(r.code, Some(2), "{url} {args:?}: {}", all(&r));
            assert!(all(&r).contains(expect), "{url} {args:?}: {}", all(&r));
            assert!(all(&r).contains(shown), "{url} {args:?}: {}", all(&r));
            if std::env::var_os("SHOW").is_some() {
                eprintln!("{url}: {}", all(&r));
            }
        }
        assert_eq!(pg_ids(&mut t.data(), "logs").len(), 20, "{url}");
    }
}

#[test]
fn a_root_certificate_that_cannot_be_read_or_an_unknown_sslmode_is_bad_config() {
    let t = TlsCluster::start();
    std::fs::write(t.file("not-a-cert.pem"), "hello\n").unwrap();
    let missing = t.file("missing.pem");
    let garbage = t.file("not-a-cert.pem");
    for (url, expect) in [
        (
            t.url(
                "localhost",
                &format!("sslmode=verify-full&{}", rootcert(&missing)),
            ),
            format!("sslrootcert {} cannot be read", missing.display()),
        ),
        (
            t.url(
                "localhost",
                &format!("sslmode=verify-ca&{}", rootcert(&garbage)),
            ),
            format!("sslrootcert {} holds no PEM certificate", garbage.display()),
        ),
        (
            t.url(
                "localhost",
                &format!("sslmode=require&{}", rootcert(&garbage)),
            ),
            format!("sslrootcert {} holds no PEM certificate", garbage.display()),
        ),
        (
            t.url("localhost", "sslmode=verify-everything"),
            "sslmode=verify-everything: expected disable, prefer, require, verify-ca or verify-full"
                .to_string(),
        ),
    ] {
        let cfg = t.config(&url);
        for args in [&["check"][..], &["sweep", "--apply", "--json"]] {
            let r = lethe_pg(&cfg, args);
            assert_eq!(r.code, Some(2), "{url} {args:?}: {}", all(&r));
            assert!(all(&r).contains(&expect), "{url} {args:?}: {}", all(&r));
        }
        assert_eq!(pg_ids(&mut t.data(), "logs").len(), 20, "{url}");
    }
}

#[test]
fn prefer_falls_back_to_a_server_without_tls_and_require_refuses_it() {
    let pg = PgCluster::start();
    pg.create_db("app")
        .batch_execute(
            "CREATE TABLE logs (id bigint PRIMARY KEY, user_id text, created_at timestamptz);
             INSERT INTO logs VALUES (1, 'u', now() - interval '40 days');",
        )
        .unwrap();
    let state = format!("sqlite://{}/state.db", pg.dir().display());
    let url = |q: &str| format!("{}?{q}", pg.url("app"));
    let cfg = config(
        pg.dir(),
        &url("sslmode=prefer"),
        &state,
        "logs",
        "created_at",
        "",
    );
    let r = lethe_pg(&cfg, &["check"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    for q in ["sslmode=require", "sslmode=verify-full"] {
        let cfg = config(pg.dir(), &url(q), &state, "logs", "created_at", "");
        let r = lethe_pg(&cfg, &["sweep", "--apply", "--json"]);
        assert_eq!(r.code, Some(2), "{q}: {}", all(&r));
        assert!(all(&r).contains("does not support TLS"), "{q}: {}", all(&r));
    }
    assert_eq!(pg_ids(&mut pg.client("app"), "logs"), ["1"]);
}
