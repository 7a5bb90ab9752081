//! `key commit` and `timestamp request|attach|verify`: flags into `nnmark::workflow`'s
//! commitment and timestamp requests.

use anyhow::{Result, bail};
use nnmark::workflow;

use crate::args::{KeyCommitArgs, TimestampAttachArgs, TimestampRequestArgs, TimestampVerifyArgs};
use crate::emit;

pub fn key_commit(a: KeyCommitArgs) -> Result<()> {
    println!("{}", workflow::commit_key(&a.key, a.out.as_deref())?);
    Ok(())
}

pub fn request(a: TimestampRequestArgs) -> Result<()> {
    println!("{}", workflow::timestamp_request(&a.commitment, &a.out)?);
    Ok(())
}

pub fn attach(a: TimestampAttachArgs) -> Result<()> {
    println!(
        "{}",
        workflow::timestamp_attach(&a.commitment, &a.response, &a.tsa_certs)?
    );
    Ok(())
}

pub fn verify(a: TimestampVerifyArgs) -> Result<()> {
    let check = workflow::timestamp_verify(
        &a.commitment,
        &a.tsa_certs,
        a.key.as_deref(),
        a.vk.as_deref(),
    )?;
    emit(a.output.json, || check.json(), &check);
    if check.report.committed_no_later_than.is_none() {
        bail!(
            "{}: no timestamp verified against the given certificates",
            a.commitment.display()
        );
    }
    Ok(())
}
