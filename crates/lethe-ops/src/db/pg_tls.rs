//! TLS to PostgreSQL, chosen by the URL's `sslmode` as libpq reads it:
//!
//! - unset or `disable`: no TLS (Lethe's default, unlike libpq's `prefer`);
//! - `prefer`: TLS if the server offers it, else plain;
//! - `require`: TLS, the server's certificate not checked, unless `sslrootcert` is given
//!   (then as `verify-ca`);
//! - `verify-ca`: TLS, the certificate's chain checked against `sslrootcert` (a PEM file) or,
//!   without it or with `sslrootcert=system`, the system's roots;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host connected to.

use std::sync::Arc;

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How to connect.
pub enum Tls {
    Off,
    /// TLS, and what is checked of the server's certificate (for messages).
    On(SslMode, MakeRustlsConnect, String),
}

/// The values `sslmode` may take.
const MODES: &str = "disable, prefer, require, verify-ca or verify-full";

/// The TLS a URL's `sslmode` and `sslrootcert` ask for; `Err` is a message naming what is
/// wrong (an unknown mode, a root certificate file that cannot be read).
pub fn for_url(sslmode: Option<&str>, sslrootcert: Option<&str>) -> Result<Tls, String> {
    let Some(m) = sslmode.filter(|m| *m != "disable") else {
        return Ok(Tls::Off);
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let against = match sslrootcert {
        None | Some("system") => "the system's root certificates".to_string(),
        Some(path) => format!("sslrootcert {path}"),
    };
    let mode = if m == "prefer" {
        SslMode::Prefer
    } else {
        SslMode::Require
    };
    let (verifier, checked): (Arc<dyn ServerCertVerifier>, String) = match (m, sslrootcert) {
        ("prefer" | "require", None) => (
            Arc::new(Unchecked(provider.clone())),
            format!("sslmode={m} does not check the server's certificate"),
        ),
        // As libpq: given a root certificate, `prefer` and `require` check the chain too.
        ("prefer" | "require" | "verify-ca", _) => (
            Arc::new(ChainOnly {
                roots: roots(sslrootcert)?,
                provider: provider.clone(),
            }),
            format!("sslmode={m} checks the server's certificate against {against}"),
        ),
        ("verify-full", _) => (
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots(sslrootcert)?,
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("sslmode={m}: {e}"))?,
            format!(
                "sslmode={m} checks the server's certificate against {against}, and that it \
                 names the host"
            ),
        ),
        _ => return Err(format!("sslmode={m}: expected {MODES}")),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Tls::On(mode, MakeRustlsConnect::new(config), checked))
}

/// Whether a connection failed on the server's certificate.
pub fn is_certificate_error(e: &postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let tls = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| c.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(_)) = tls {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The certificates a server's chain must end in: `sslrootcert`'s, or the system's.
fn roots(sslrootcert: Option<&str>) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    match sslrootcert {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "no system root certificates were found to check the server's certificate \
                     against: give sslrootcert=FILE (a PEM file of the certificate authority)"
                        .to_string(),
                );
            }
        }
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {path} cannot be read: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "sslrootcert {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                ));
            }
        }
    }
    Ok(Arc::new(roots))
}

/// `require` without a root certificate: the connection is encrypted, and the server's
/// handshake signature checked against its certificate, but the certificate itself is not.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the certificate must chain to one of `roots` and be valid now; the name it
/// gives is not compared with the host.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
