//! `nnmark attack`: run a removal attack on a model file, as a thief holding the attacker's
//! third of the training data would.

use anyhow::{Context, Result};
use nnmark::Device;
use nnmark::attack::{self, AttackContext};
use nnmark::keyfile::KeyFile;
use nnmark::train;
use nnmark::weights::{self, WeightsMeta};
use serde_json::json;

use crate::args::AttackArgs;
use crate::{load_data, versions};

pub fn run(a: AttackArgs, device: &Device) -> Result<()> {
    // Parse (and so check) the attack before loading anything.
    let attack = attack::parse(&a.attack)?;
    let split = load_data(&a.data)?;
    let (_, attacker) = attack::owner_attacker_split(&split.train)?;
    let loaded = weights::load(&a.model, None, device)?;
    // The key tells the attack the scheme under attack (overwriting) and the key size
    // (adversarial fine-tuning); nothing secret from it is used or printed.
    let key = a.key.as_deref().map(KeyFile::load).transpose()?;
    let key_items = key
        .as_ref()
        .map(|k| k.triggers.as_ref().map_or(0, |t| t.labels.len()));
    let scheme = match &key {
        Some(k) => Some(nnmark::scheme::by_name(&k.meta.scheme)?),
        None => None,
    };
    let before = train::evaluate(&loaded.model, &split.test, 256)
        .with_context(|| format!("evaluating {}", a.model.display()))?;
    let started = std::time::Instant::now();
    let model = attack.remove(
        loaded.model,
        &AttackContext {
            data: Some(&attacker),
            device,
            seed: a.seed,
            key_items,
            scheme,
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let after = train::evaluate(&model, &split.test, 256)?;
    let mut meta = WeightsMeta::new(model.spec.clone(), loaded.meta.dataset.clone(), a.seed);
    meta.extra.insert("attack".into(), attack.describe());
    meta.extra
        .insert("attacked_model_sha256".into(), loaded.sha256.clone());
    if let Some(t) = attack.query_transform() {
        // The weights are unchanged; the filter is what the thief serves them behind.
        meta.extra
            .insert("query_transform".into(), format!("{t:?}"));
    }
    let sha = weights::save(&model, &meta, &a.out)?;
    if a.output.json {
        println!(
            "{}",
            json!({ "versions": versions(), "seed": a.seed, "attack": attack.describe(), "model": a.model, "model_sha256": loaded.sha256, "attacker_examples": attacker.len(), "accuracy_before": before.accuracy, "accuracy_after": after.accuracy, "seconds": seconds, "out": a.out, "sha256": sha })
        );
    } else {
        println!(
            "{}: accuracy {:.2}% -> {:.2}% on {} test images ({:.1} s, attacker data {} images, seed {})",
            attack.describe(),
            before.accuracy * 100.0,
            after.accuracy * 100.0,
            after.examples,
            seconds,
            attacker.len(),
            a.seed
        );
        if attack.query_transform().is_some() {
            println!(
                "the weights are unchanged: this attack filters queries; verify through it with `nnmark verify --through {}`",
                attack.describe()
            );
        }
        println!("wrote {} (sha256 {sha})", a.out.display());
    }
    Ok(())
}
