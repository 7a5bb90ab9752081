//! A throwaway time-stamping authority run by the `openssl` command (`openssl ts -reply`), for
//! tests and for trying the timestamp workflow without a real authority: a self-signed root CA
//! and a TSA certificate it issued (extended key usage `timeStamping`, critical), in a folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// Key type of the authority's certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048.
    Rsa,
    /// ECDSA on P-256.
    EcP256,
}

/// A local authority in a folder of its own.
#[derive(Debug, Clone)]
pub struct LocalAuthority {
    /// Its folder: `ca.crt`, `ca.key`, `tsa.crt`, `tsa.key`, `tsa.cnf`.
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::Invalid(format!("cannot run openssl (is OpenSSL installed?): {e}")))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl LocalAuthority {
    /// Creates the CA and TSA certificates in `dir/name`, the TSA's valid for `tsa_days` days
    /// from now (negative: expired already).
    pub fn new(dir: &Path, name: &str, key: KeyKind, tsa_days: i32) -> Result<Self> {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| Error::Invalid(format!("{}: {e}", d.display())))?;
        let newkey: &[&str] = match key {
            KeyKind::Rsa => &["-newkey", "rsa:2048"],
            KeyKind::EcP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        };
        let ca_subject = format!("/CN={name} Root CA");
        let tsa_subject = format!("/CN={name} TSA");
        let days = tsa_days.to_string();
        let mut ca = vec!["req", "-x509"];
        ca.extend(newkey);
        ca.extend([
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
        ]);
        ca.extend(["-subj", &ca_subject]);
        openssl(&d, &ca)?;
        let mut csr = vec!["req"];
        csr.extend(newkey);
        csr.extend([
            "-nodes",
            "-keyout",
            "tsa.key",
            "-out",
            "tsa.csr",
            "-subj",
            &tsa_subject,
        ]);
        openssl(&d, &csr)?;
        let write = |file: &str, text: &str| {
            std::fs::write(d.join(file), text)
                .map_err(|e| Error::Invalid(format!("{}: {e}", d.join(file).display())))
        };
        write("ext.cnf", "extendedKeyUsage=critical,timeStamping\n")?;
        openssl(
            &d,
            &[
                "x509",
                "-req",
                "-in",
                "tsa.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "tsa.crt",
                "-days",
                &days,
                "-extfile",
                "ext.cnf",
            ],
        )?;
        write(
            "tsa.cnf",
            "[ tsa ]\ndefault_tsa = tsa_config1\n[ tsa_config1 ]\nserial = ./tsaserial\n\
             signer_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256, sha384\n\
             accuracy = secs:1\ness_cert_id_alg = sha256\n",
        )?;
        write("tsaserial", "01\n")?;
        Ok(Self { dir: d })
    }

    /// The authority's DER response to a DER request.
    pub fn reply(&self, request: &[u8]) -> Result<Vec<u8>> {
        let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", self.dir.display()));
        std::fs::write(self.dir.join("q.tsq"), request).map_err(io)?;
        openssl(
            &self.dir,
            &[
                "ts",
                "-reply",
                "-queryfile",
                "q.tsq",
                "-config",
                "tsa.cnf",
                "-inkey",
                "tsa.key",
                "-signer",
                "tsa.crt",
                "-out",
                "r.tsr",
            ],
        )?;
        std::fs::read(self.dir.join("r.tsr")).map_err(io)
    }

    /// The root CA's certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The TSA's own certificate (PEM).
    pub fn tsa_cert(&self) -> PathBuf {
        self.dir.join("tsa.crt")
    }
}
