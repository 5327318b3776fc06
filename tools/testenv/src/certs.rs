//! Certificates and keys for one control plane: a CA, the API server's serving certificate
//! (for 127.0.0.1 and localhost) and the service-account token signing key.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

/// The files written, and the CA in DER form for clients.
pub struct Files {
    pub ca_cert: PathBuf,
    pub ca_der: Vec<u8>,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_private: PathBuf,
    pub sa_public: PathBuf,
}

/// Generates everything into `dir`.
pub fn write_all(dir: &Path) -> Result<Files> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "testenv-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut serving_params = CertificateParams::new(vec!["localhost".to_owned()])?;
    serving_params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let serving_key = KeyPair::generate()?;
    let serving = serving_params.signed_by(&serving_key, &ca)?;

    // ECDSA P-256: the API server signs ServiceAccount tokens with ES256.
    let sa_key = KeyPair::generate()?;

    let files = Files {
        ca_cert: dir.join("ca.crt"),
        ca_der: ca.der().to_vec(),
        serving_cert: dir.join("serving.crt"),
        serving_key: dir.join("serving.key"),
        sa_private: dir.join("sa.key"),
        sa_public: dir.join("sa.pub"),
    };
    std::fs::write(&files.ca_cert, ca.pem())?;
    std::fs::write(&files.serving_cert, serving.pem())?;
    std::fs::write(&files.serving_key, serving_key.serialize_pem())?;
    std::fs::write(&files.sa_private, sa_key.serialize_pem())?;
    std::fs::write(&files.sa_public, sa_key.public_key_pem())?;
    Ok(files)
}
