//! `key commit` and `timestamp request|attach|verify`: argument handling around
//! `nnmark::commit::KeyCommitment` and `nnmark_tsp`.

use anyhow::{Context, Result};
use nnmark::KeyFile;
use nnmark::commit::{KeyCommitment, VerificationKey};
use serde_json::json;

use nnmark::workflow::{default_commitment_path, load_tsa_certs};

use crate::args::{KeyCommitArgs, TimestampAttachArgs, TimestampRequestArgs, TimestampVerifyArgs};
use nnmark::workflow::versions;

pub fn key_commit(a: KeyCommitArgs) -> Result<()> {
    let mut key = KeyFile::load(&a.key)?;
    if key.ensure_commitment_salt()? {
        key.save(&a.key)?;
        println!(
            "added a commitment salt to {} (its fingerprint changes; the key's material does not)",
            a.key.display()
        );
    }
    let c = KeyCommitment::for_key(&key)?;
    let out = a.out.unwrap_or_else(|| default_commitment_path(&a.key));
    c.save(&out)?;
    println!(
        "wrote key commitment {} ({}); publish it and timestamp it: nnmark timestamp request --commitment {}",
        out.display(),
        c.commitment,
        out.display()
    );
    Ok(())
}

pub fn request(a: TimestampRequestArgs) -> Result<()> {
    let c = KeyCommitment::load(&a.commitment)?;
    let der = nnmark_tsp::request(&c.statement_digest())?;
    nnmark::io::write_atomic(&a.out, &der, Some(0o644))?;
    println!(
        "wrote RFC 3161 request {} (SHA-256 of the commitment statement {}); send it to a time-stamping authority, then: nnmark timestamp attach --commitment {} --response RESPONSE.tsr --tsa-cert AUTHORITY.pem",
        a.out.display(),
        hex::encode(c.statement_digest()),
        a.commitment.display()
    );
    Ok(())
}

pub fn attach(a: TimestampAttachArgs) -> Result<()> {
    let mut c = KeyCommitment::load(&a.commitment)?;
    let resp =
        std::fs::read(&a.response).with_context(|| format!("reading {}", a.response.display()))?;
    let token = nnmark_tsp::token_from_response(&resp)
        .with_context(|| format!("{}", a.response.display()))?;
    let v = c.attach_token(&token, &load_tsa_certs(&a.tsa_certs)?)?;
    c.save(&a.commitment)?;
    println!(
        "attached a timestamp to {}: committed no later than {} (authority '{}', chain to '{}', serial {})",
        a.commitment.display(),
        v.gen_time,
        v.tsa,
        v.trusted,
        v.serial
    );
    Ok(())
}

pub fn verify(a: TimestampVerifyArgs) -> Result<()> {
    let c = KeyCommitment::load(&a.commitment)?;
    let key = a.key.as_deref().map(KeyFile::load).transpose()?;
    let vk = a.vk.as_deref().map(VerificationKey::load).transpose()?;
    let report = c.check(key.as_ref(), vk.as_ref(), &load_tsa_certs(&a.tsa_certs)?)?;
    if a.output.json {
        println!(
            "{}",
            json!({"versions": versions(), "commitment": a.commitment, "check": report})
        );
    } else {
        println!("{}: {}", a.commitment.display(), report.summary());
    }
    if report.committed_no_later_than.is_none() {
        anyhow::bail!(
            "{}: no timestamp verified against the given certificates",
            a.commitment.display()
        );
    }
    Ok(())
}
