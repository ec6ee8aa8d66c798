//! TLS of the federation: the listener's certificate, and the trust of the
//! outbound client (public web roots, a configured CA file, or, for tests
//! only, no verification at all).

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};

use crate::config::FederationConfig;

/// Returns the *ring* provider, the one reqwest's rustls support is built with. rustls
/// now prefers aws-lc-rs for its post-quantum key exchange; moving both to it
/// needs a C toolchain with cmake at build time.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server side of the federation listener from the PEM files in config.
pub fn server_config(certificate: &Path, private_key: &Path) -> Result<ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| format!("could not read the certificate file {}: {e}", certificate.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate in {}: {e}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", certificate.display()));
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|e| format!("could not read a private key from {}: {e}", private_key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and private key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Builds the client side of outbound federation requests.
pub fn client_config(config: &FederationConfig) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut client = if config.insecure_skip_tls_verify_for_tests {
        tracing::warn!(
            "federation.insecure_skip_tls_verify_for_tests is on: outbound federation accepts any certificate"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = &config.tls_ca_file {
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("could not read federation.tls_ca_file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("invalid certificate in {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(format!("federation.tls_ca_file {} holds no usable CA certificate", path.display()));
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(client)
}

/// Accepts every certificate; only the handshake signatures are checked.
/// Behind `insecure_skip_tls_verify_for_tests` alone.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
