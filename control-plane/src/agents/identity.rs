//! An agent's identity is its client certificate's Subject common name
//! (falling back to the first DNS subject alternative name). The TLS layer
//! has already verified the chain against `agents.tls.client_ca`.

use x509_parser::prelude::*;

pub fn agent_id_from_cert(der: &[u8]) -> Result<String, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("unreadable client certificate: {e}"))?;
    if let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        if !cn.trim().is_empty() {
            return Ok(cn.trim().to_owned());
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                return Ok((*dns).to_owned());
            }
        }
    }
    Err("the client certificate has neither a Subject CN nor a DNS name: issue agent certificates with CN=<agent id>".into())
}
