//! HTTPS probes against real TLS backends on loopback, with certificates from a test CA made
//! here: a trusted certificate passes; an untrusted, expired or wrong-name one fails with a
//! reason that says which; `ca_file` trusts an internal CA instead of the system store.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use healthdns::config::{CheckConfig, CheckKind, HttpCheck};
use healthdns::health::probe::{Check, Probers};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A CA and its key.
struct Authority {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let certificate = params.self_signed(&key).unwrap();
    Authority { certificate, key }
}

/// A server certificate for `name`, signed by `ca`; `expired` puts its validity in the past.
fn leaf(ca: &Authority, name: &str, expired: bool) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let certificate = params.signed_by(&key, &ca.certificate, &ca.key).unwrap();
    (certificate.der().to_vec(), key)
}

/// An HTTPS server on `address` (port 0) answering 200 with this certificate; it runs until
/// the test process ends (a thread blocked in accept), serving one connection at a time.
fn serve_tls(address: IpAddr, certificate: Vec<u8>, key: KeyPair) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(certificate)],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind(SocketAddr::new(address, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            // A handshake the client rejects ends here with an error: that is the test.
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                match tls.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            }
            let _ = tls.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhealthy\n",
            );
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}

fn https_check(port: u16, host: &str, ca_file: Option<std::path::PathBuf>) -> CheckConfig {
    CheckConfig {
        kind: CheckKind::Http(HttpCheck {
            url: format!("https://{{address}}:{port}/health"),
            host: Some(host.to_string()),
            expect_status: vec![200],
            max_latency: None,
            body_sha256: None,
            follow_redirects: false,
            ca_file,
        }),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        fall: 1,
        rise: 1,
        source: None,
    }
}

#[test]
fn https_probes_verify_certificates_against_the_configured_ca() {
    let folder = tempfile::tempdir().unwrap();
    let ca = authority("healthdns test CA");
    let ca_file = folder.path().join("ca.pem");
    std::fs::write(&ca_file, ca.certificate.pem()).unwrap();
    let stranger = authority("some other CA");
    let name = "www.example.test";
    let address = |host: u8| IpAddr::from([127, 64, 0, host]);

    let cases: Vec<(IpAddr, CheckConfig, Option<&str>)> = vec![
        // Signed by the CA in ca_file, for the name asked: passes.
        {
            let (certificate, key) = leaf(&ca, name, false);
            let port = serve_tls(address(1), certificate, key);
            (
                address(1),
                https_check(port, name, Some(ca_file.clone())),
                None,
            )
        },
        // Signed by a CA nobody trusts.
        {
            let (certificate, key) = leaf(&stranger, name, false);
            let port = serve_tls(address(2), certificate, key);
            (
                address(2),
                https_check(port, name, Some(ca_file.clone())),
                Some("UnknownIssuer"),
            )
        },
        // Expired.
        {
            let (certificate, key) = leaf(&ca, name, true);
            let port = serve_tls(address(3), certificate, key);
            (
                address(3),
                https_check(port, name, Some(ca_file.clone())),
                Some("certificate expired"),
            )
        },
        // For another name.
        {
            let (certificate, key) = leaf(&ca, "other.example.test", false);
            let port = serve_tls(address(4), certificate, key);
            (
                address(4),
                https_check(port, name, Some(ca_file.clone())),
                Some("not valid for name"),
            )
        },
        // Without ca_file the system store decides, and it does not know the test CA.
        {
            let (certificate, key) = leaf(&ca, name, false);
            let port = serve_tls(address(5), certificate, key);
            (
                address(5),
                https_check(port, name, None),
                Some("certificate"),
            )
        },
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let probers =
            Probers::new(cases.iter().map(|(address, check, _)| (*address, check))).unwrap();
        for (address, check, expected) in &cases {
            let outcome = probers.checker(*address, check).unwrap().check().await;
            match expected {
                None => assert!(outcome.passed, "{address}: {outcome:?}"),
                Some(reason) => {
                    assert!(!outcome.passed, "{address}: {outcome:?}");
                    assert!(outcome.reason.contains(reason), "{address}: {outcome:?}");
                }
            }
        }
    });
}

/// `ca_file` is checked when the config is read: a missing or non-PEM file is an error with
/// the file, line and key.
#[test]
fn a_bad_ca_file_is_a_config_error() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("not.pem"), "hello\n").unwrap();
    for (file, expected) in [
        ("missing.pem", "cannot read"),
        ("not.pem", "no PEM certificate"),
    ] {
        let text = format!(
            "[[zone]]\norigin = \"example.test\"\nfile = \"z\"\n[[pool]]\nname = \"p\"\n\
             names = [\"www.example.test\"]\naddresses = [\"10.0.0.1\"]\n[[pool.check]]\n\
             kind = \"http\"\nurl = \"https://{{address}}/\"\nca_file = \"{file}\"\n"
        );
        let error = healthdns::config::Config::parse(&text, &folder.path().join("config.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.toml:11: pool.check.ca_file:") && error.contains(expected),
            "{error}"
        );
    }
}
