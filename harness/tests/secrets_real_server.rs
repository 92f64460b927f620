//! The generated secrets against a real nats-server: TLS verify, verify_and_map on the leafnode port, and
//! operator mode (JWT accounts, stream import renaming, user permissions, leaf credentials, JetStream).
//!
//! Server binary: $NATS_SERVER_BIN, else `nats-server` on PATH, else natslab's cached pinned install, else
//! /tmp/nsb/bin/nats-server. Without one the tests print "skipped: no nats-server" and pass, unless
//! $NATSLAB_REQUIRE_ALL is set.

use std::fs;
use std::future::Future;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::{ConnectOptions, Event};
use futures::StreamExt;
use natslab::secrets::jwt::{self, AccountSpec, Operator, StreamExport, StreamImport, UserPermissions};
use natslab::secrets::pki::{self, Ca, CertPair};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------------------
// Harness: find the binary, run servers on random loopback ports, poll real state.

fn server_bin() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from) {
        // An explicit choice that is wrong is a configuration error, not a reason to test another binary.
        assert!(
            explicit.is_file(),
            "NATS_SERVER_BIN={} is not a file",
            explicit.display()
        );
        return Some(explicit);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    // Then where `natslab` itself installs the pinned server (CI provisions it there), then the dev fallback.
    let cached = natslab::server::cache_dir()
        .join(format!("nats-server-bin-{}", natslab::server::PINNED))
        .join("bin/nats-server");
    let found = on_path.or_else(|| {
        [cached, PathBuf::from("/tmp/nsb/bin/nats-server")]
            .into_iter()
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("NATSLAB_REQUIRE_ALL").is_none(),
            "NATSLAB_REQUIRE_ALL is set but no nats-server was found"
        );
        eprintln!("skipped: no nats-server");
    }
    found
}

/// A nats-server child process, killed on drop. Ports are chosen by the server (`-1`) and read back from
/// its ports file and /varz, so parallel tests never race for a port.
struct Server {
    child: Child,
    name: String,
    log: PathBuf,
    client_url: String,
    http_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(bin: &Path, dir: &Path, name: &str, body: &str) -> Server {
        let ports_dir = dir.join(format!("{name}-ports"));
        fs::create_dir_all(&ports_dir).expect("ports dir");
        let conf = dir.join(format!("{name}.conf"));
        let text = format!(
            "server_name: {name}\nlisten: 127.0.0.1:-1\nhttp: 127.0.0.1:-1\nports_file_dir: {}\n{body}\n",
            q(&ports_dir)
        );
        fs::write(&conf, text).expect("write conf");
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn nats-server");
        let mut server = Server {
            child,
            name: name.to_owned(),
            log,
            client_url: String::new(),
            http_url: String::new(),
        };
        let ports: Value = eventually(&format!("{name} writes its ports file"), || {
            server.assert_running();
            let ports = read_ports(&ports_dir);
            async move { ports }
        })
        .await;
        server.client_url = first_url(&ports, "nats");
        server.http_url = first_url(&ports, "monitoring");
        server
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// host:port of the client listener, whatever scheme the ports file used.
    fn client_addr(&self) -> String {
        self.client_url.split("://").last().unwrap_or_default().to_owned()
    }

    async fn monitor(&self, endpoint: &str) -> Value {
        let url = format!("{}/{endpoint}", self.http_url);
        reqwest::get(&url)
            .await
            .expect("monitoring GET")
            .json()
            .await
            .expect("monitoring JSON")
    }

    /// The leafnode listen port (not in the ports file, but /varz reports the bound one).
    async fn leaf_port(&self) -> u64 {
        self.monitor("varz").await["leaf"]["port"]
            .as_u64()
            .expect("varz leaf.port")
    }

    async fn wait_log(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            self.assert_running();
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting until {} logs {needle:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn read_ports(dir: &Path) -> Option<Value> {
    let entry = fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "ports"))?;
    // The file may be caught half-written; a parse failure just means "not yet".
    serde_json::from_slice(&fs::read(entry.path()).ok()?).ok()
}

fn first_url(ports: &Value, key: &str) -> String {
    ports[key][0]
        .as_str()
        .unwrap_or_else(|| panic!("ports file has no {key} url: {ports}"))
        .to_owned()
}

/// Polls `probe` until it yields a value; panics naming `what` at the deadline.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A quoted config string (JSON quoting is valid NATS config quoting).
fn q(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).expect("quote")
}

/// Secrets are written owner-only, as the harness proper does.
fn write_secret(path: &Path, contents: &str) -> PathBuf {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("open");
    std::io::Write::write_all(&mut file, contents.as_bytes()).expect("write secret");
    path.to_owned()
}

/// A cert pair on disk: (cert path, key path).
fn write_pair(dir: &Path, name: &str, pair: &CertPair) -> (PathBuf, PathBuf) {
    (
        write_secret(&dir.join(format!("{name}-cert.pem")), &pair.cert_pem),
        write_secret(&dir.join(format!("{name}-key.pem")), &pair.key_pem),
    )
}

fn tls_block(cert: &Path, key: &Path, ca: &Path, extra: &str) -> String {
    format!(
        "tls {{ cert_file: {}, key_file: {}, ca_file: {}, timeout: 5 {extra} }}",
        q(cert),
        q(key),
        q(ca)
    )
}

fn loopback() -> Vec<IpAddr> {
    vec![IpAddr::from([127, 0, 0, 1])]
}

async fn connect(opts: ConnectOptions, addr: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let opts = opts.connection_timeout(Duration::from_secs(5));
    tokio::time::timeout(DEADLINE, opts.connect(addr))
        .await
        .expect("connect neither succeeded nor failed in time")
}

/// Subscribes on `sub_subject` with `rx`, publishes on `pub_subject` with `tx`, returns the subject received.
/// `flush` only drains the client's buffer and the server reads connections concurrently, so a first PUB
/// can overtake the SUB: keep publishing until one arrives.
async fn round_trip(rx: &async_nats::Client, tx: &async_nats::Client, sub_subject: &str, pub_subject: &str) -> String {
    let mut sub = rx.subscribe(sub_subject.to_owned()).await.expect("subscribe");
    rx.flush().await.expect("flush subscription");
    let start = Instant::now();
    loop {
        tx.publish(pub_subject.to_owned(), "ping".into())
            .await
            .expect("publish");
        tx.flush().await.expect("flush publish");
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            let msg = msg.expect("subscription open");
            assert_eq!(&msg.payload[..], b"ping");
            return msg.subject.to_string();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{pub_subject:?} never reached a subscriber on {sub_subject:?}"
        );
    }
}

async fn creds_client(creds: PathBuf, addr: &str) -> async_nats::Client {
    let opts = ConnectOptions::with_credentials_file(creds).await.expect("read creds");
    connect(opts, addr).await.expect("connect with creds")
}

async fn leafz_accounts(server: &Server) -> Vec<String> {
    let leafz = server.monitor("leafz").await;
    let leafs = leafz["leafs"].as_array().cloned().unwrap_or_default();
    leafs
        .iter()
        .filter_map(|l| l["account"].as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// 1. Client TLS with verify: true.

#[tokio::test]
async fn tls_verify_accepts_own_ca_and_refuses_foreign_and_missing_certs() {
    let Some(bin) = server_bin() else { return };
    let dir = TempDir::new().expect("tempdir");
    let d = dir.path();
    let ca = Ca::generate("natslab test CA").expect("CA");
    let foreign = Ca::generate("foreign CA").expect("foreign CA");
    let ca_file = write_secret(&d.join("ca.pem"), &ca.cert_pem);
    let (server_cert, server_key) = write_pair(
        d,
        "server",
        &ca.issue_server("hub", &["localhost".into()], &loopback())
            .expect("server cert"),
    );
    let (client_cert, client_key) = write_pair(d, "client", &ca.issue_client("app", None).expect("client cert"));
    let (alien_cert, alien_key) = write_pair(d, "alien", &foreign.issue_client("app", None).expect("alien cert"));

    let body = tls_block(&server_cert, &server_key, &ca_file, ", verify: true");
    let server = Server::start(&bin, d, "tls-hub", &body).await;
    let addr = format!("tls://{}", server.client_addr());
    let trusted = || {
        ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(ca_file.clone())
    };

    let good = connect(trusted().add_client_certificate(client_cert, client_key), &addr)
        .await
        .expect("own-CA client");
    assert_eq!(round_trip(&good, &good, "tls.check", "tls.check").await, "tls.check");

    let alien = connect(trusted().add_client_certificate(alien_cert, alien_key), &addr).await;
    assert!(alien.is_err(), "a client cert from a foreign CA must be refused");
    let anonymous = connect(trusted(), &addr).await;
    assert!(anonymous.is_err(), "a client without a cert must be refused");
}

// ---------------------------------------------------------------------------------------------------------
// 2. verify_and_map on the leafnode port maps the client cert subject to a user of account A.

#[tokio::test]
async fn leaf_verify_and_map_binds_the_mapped_identity_only() {
    let Some(bin) = server_bin() else { return };
    let dir = TempDir::new().expect("tempdir");
    let d = dir.path();
    let ca = Ca::generate("natslab test CA").expect("CA");
    let foreign = Ca::generate("foreign CA").expect("foreign CA");
    let ca_file = write_secret(&d.join("ca.pem"), &ca.cert_pem);
    let (hub_cert, hub_key) = write_pair(
        d,
        "hub",
        &ca.issue_server("hub", &["localhost".into()], &loopback())
            .expect("hub cert"),
    );

    let (cn, org) = ("leaf.cim.local", Some("CIM"));
    let identity = pki::mapped_identity(cn, org);
    let hub_body = format!(
        "accounts {{ A: {{ users: [ {{ user: {} }} ] }} }}\nleafnodes {{ listen: 127.0.0.1:-1, {} }}",
        serde_json::to_string(&identity).expect("quote"),
        tls_block(&hub_cert, &hub_key, &ca_file, ", verify_and_map: true")
    );
    let mut hub = Server::start(&bin, d, "map-hub", &hub_body).await;
    let url = format!("tls://127.0.0.1:{}", hub.leaf_port().await);
    let leaf_body = |cert: &Path, key: &Path| {
        format!(
            "leafnodes {{ remotes: [ {{ url: {}, {} }} ] }}",
            serde_json::to_string(&url).expect("quote"),
            tls_block(cert, key, &ca_file, "")
        )
    };

    // Refusals first, each proven by the refused leaf's own log, so the later count of one is meaningful.
    let (cert, key) = write_pair(
        d,
        "intruder",
        &ca.issue_client("intruder.cim.local", org).expect("cert"),
    );
    let mut intruder = Server::start(&bin, d, "intruder", &leaf_body(&cert, &key)).await;
    intruder.wait_log("Authorization Violation").await;
    let (cert, key) = write_pair(d, "alien", &foreign.issue_client(cn, org).expect("cert"));
    let _alien = Server::start(&bin, d, "alien", &leaf_body(&cert, &key)).await;
    hub.wait_log("TLS leafnode handshake error").await;

    let (cert, key) = write_pair(d, "leaf", &ca.issue_client(cn, org).expect("cert"));
    let _leaf = Server::start(&bin, d, "leaf", &leaf_body(&cert, &key)).await;
    let accounts = eventually("the mapped leaf shows in hub /leafz", || async {
        let accounts = leafz_accounts(&hub).await;
        (!accounts.is_empty()).then_some(accounts)
    })
    .await;
    assert_eq!(
        accounts,
        vec!["A".to_owned()],
        "only the mapped leaf is bound, to account A"
    );
}

// ---------------------------------------------------------------------------------------------------------
// 3. Operator mode: preloaded JWTs, stream import with local_subject, permissions, leaf creds, JetStream.

#[tokio::test]
async fn operator_mode_accounts_imports_permissions_leaf_and_jetstream() {
    let Some(bin) = server_bin() else { return };
    let dir = TempDir::new().expect("tempdir");
    let d = dir.path();

    let (operator, sys) = Operator::generate("natslab").expect("operator");
    let (a_key, b_key) = (jwt::account_key(), jwt::account_key());
    let a_pub = a_key.public_key();
    let a_spec = AccountSpec {
        name: "A",
        exports: vec![StreamExport {
            subject: "commands.>".into(),
        }],
        imports: vec![],
        jetstream: true,
    };
    let a = operator.account(a_key, &a_spec).expect("account A");
    let b_spec = AccountSpec {
        name: "B",
        exports: vec![],
        imports: vec![StreamImport {
            from_account: a_pub.clone(),
            subject: "commands.>".into(),
            local_subject: Some("hub.commands.>".into()),
        }],
        jetstream: false,
    };
    let b = operator.account(b_key, &b_spec).expect("account B");

    let operator_file = write_secret(&d.join("operator.jwt"), &operator.jwt);
    let resolver_dir = d.join("jwt");
    let store_dir = d.join("js");
    let preload: String = [&sys, &a, &b]
        .iter()
        .map(|acc| format!("  {}: {}\n", acc.key.public_key(), acc.jwt))
        .collect();
    let hub_body = format!(
        "operator: {}\nsystem_account: {}\nresolver {{ type: full, dir: {} }}\nresolver_preload {{\n{preload}}}\n\
         jetstream {{ store_dir: {} }}\nleafnodes {{ listen: 127.0.0.1:-1 }}",
        q(&operator_file),
        sys.key.public_key(),
        q(&resolver_dir),
        q(&store_dir)
    );
    let hub = Server::start(&bin, d, "op-hub", &hub_body).await;
    let addr = hub.client_addr();

    let creds_file = |acc: &jwt::Account, user: &str, perms: Option<&UserPermissions>| {
        let (user_jwt, seed) = acc.user(user, perms).expect("user");
        write_secret(&d.join(format!("{user}.creds")), &jwt::creds(&user_jwt, &seed))
    };

    // A's `commands.x` reaches B as `hub.commands.x`: local_subject renames the import.
    let a_user = creds_client(creds_file(&a, "a-user", None), &addr).await;
    let b_user = creds_client(creds_file(&b, "b-user", None), &addr).await;
    assert_eq!(
        round_trip(&b_user, &a_user, "hub.commands.>", "commands.x").await,
        "hub.commands.x"
    );

    // A denied publish is reported by the server as a permissions violation.
    let perms = UserPermissions {
        pub_deny: vec!["system.>".into()],
        ..Default::default()
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let opts = ConnectOptions::with_credentials_file(creds_file(&a, "restricted", Some(&perms)))
        .await
        .expect("read creds")
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                let _ = events_tx.send(event);
            }
        });
    let restricted = connect(opts, &addr).await.expect("restricted user connects");
    restricted
        .publish("system.x", "no".into())
        .await
        .expect("publish is sent");
    restricted.flush().await.expect("flush");
    let violation = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.recv().await {
            if let Event::ServerError(err) = event {
                return err.to_string();
            }
        }
        String::new()
    })
    .await
    .expect("a server error in time");
    assert!(
        violation.to_lowercase().contains("permissions violation"),
        "got: {violation}"
    );
    assert!(violation.contains("system.x"), "got: {violation}");

    // JetStream: the limits in A's JWT enable it for A; B (no JS limits) is refused.
    let js = async_nats::jetstream::new(a_user.clone());
    let config = async_nats::jetstream::stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    };
    js.create_stream(config.clone()).await.expect("A creates a stream");
    let ack = js
        .publish("orders.1", "o".into())
        .await
        .expect("publish")
        .await
        .expect("stream ack");
    assert_eq!(ack.stream, "ORDERS");
    // Checked before B gets a leaf: once a leaf is bound to B, B's $JS.API requests reach the leaf and
    // time out instead of failing fast with 10039.
    let refused = async_nats::jetstream::new(b_user.clone()).create_stream(config).await;
    let refused = refused
        .expect_err("B has no JetStream limits, so no JetStream")
        .to_string();
    assert!(refused.contains("not enabled for account"), "got: {refused}");

    // A leaf dialing with a B user's creds is bound to account B.
    let leaf_creds = creds_file(&b, "b-leaf", None);
    let url = format!("nats://127.0.0.1:{}", hub.leaf_port().await);
    let leaf_body = format!(
        "leafnodes {{ remotes: [ {{ url: {}, credentials: {} }} ] }}",
        serde_json::to_string(&url).expect("quote"),
        q(&leaf_creds)
    );
    let _leaf = Server::start(&bin, d, "op-leaf", &leaf_body).await;
    let accounts = eventually("the creds leaf shows in hub /leafz", || async {
        let accounts = leafz_accounts(&hub).await;
        (!accounts.is_empty()).then_some(accounts)
    })
    .await;
    assert_eq!(accounts, vec![b.key.public_key()]);
}
