//! IDX files, the format of the original MNIST distribution (optionally gzip-compressed).
//!
//! Images: magic 0x00000803, count, rows, cols (big-endian u32), then `count*rows*cols` u8 pixels.
//! Labels: magic 0x00000801, count, then `count` u8 labels.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Raw images read from an IDX3 file.
#[derive(Debug, Clone)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// Pixels, row-major, image after image.
    pub pixels: Vec<u8>,
}

/// Most bytes an IDX file may decompress to: 1 GiB (Fashion-MNIST's training images are 47 MB).
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// The size an IDX file's header promises, from its first bytes (None when they do not hold
/// a known header yet).
fn promised_size(header: &[u8]) -> Option<u64> {
    let u = |at: usize| {
        header
            .get(at..at + 4)
            .map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    };
    match u32::try_from(u(0)?).ok()? {
        IMAGES_MAGIC => Some(16 + u(4)?.checked_mul(u(8)?)?.checked_mul(u(12)?)?),
        LABELS_MAGIC => Some(8 + u(4)?),
        _ => None,
    }
}

/// Gunzips `raw` when it carries the gzip magic; `path` only names the source in errors.
/// Decompression stops one byte past what the header promises (and never passes
/// [`MAX_IDX_BYTES`]), so a small gzip bomb cannot fill memory before its size is checked.
pub fn decode_maybe_gz(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !(raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
        return Ok(raw);
    }
    let corrupt = |e: std::io::Error| Error::format(path, format!("corrupt gzip stream: {e}"));
    let mut gz = flate2::read::GzDecoder::new(raw.as_slice());
    let mut out = Vec::new();
    (&mut gz).take(16).read_to_end(&mut out).map_err(corrupt)?;
    let limit = promised_size(&out).map_or(MAX_IDX_BYTES, |n| n.min(MAX_IDX_BYTES));
    (&mut gz)
        .take(limit + 1 - out.len() as u64)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() as u64 > limit {
        return Err(Error::format(
            path,
            format!(
                "decompresses to more than the {limit} bytes its header promises (at most {MAX_IDX_BYTES})"
            ),
        ));
    }
    Ok(out)
}

fn be_u32(path: &Path, bytes: &[u8], at: usize, what: &str) -> Result<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::format(path, format!("truncated header: missing {what}")))
}

/// Parses IDX3 image bytes (already decompressed).
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<IdxImages> {
    let magic = be_u32(path, bytes, 0, "magic number")?;
    if magic != IMAGES_MAGIC {
        return Err(Error::format(
            path,
            format!("not an IDX image file: magic 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x}"),
        ));
    }
    let count = be_u32(path, bytes, 4, "image count")? as usize;
    let rows = be_u32(path, bytes, 8, "row count")? as usize;
    let cols = be_u32(path, bytes, 12, "column count")? as usize;
    if rows == 0 || cols == 0 || rows > 4096 || cols > 4096 {
        return Err(Error::format(
            path,
            format!("implausible image size {rows}x{cols}"),
        ));
    }
    let expected = count
        .checked_mul(rows * cols)
        .ok_or_else(|| Error::format(path, "image count overflows"))?;
    let body = &bytes[16..];
    if body.len() < expected {
        return Err(Error::format(
            path,
            format!(
                "truncated: header promises {count} images of {rows}x{cols} ({expected} bytes) but only {} bytes follow",
                body.len()
            ),
        ));
    }
    if body.len() > expected {
        return Err(Error::format(
            path,
            format!(
                "{} unexpected bytes after {count} images",
                body.len() - expected
            ),
        ));
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: body.to_vec(),
    })
}

/// Parses IDX1 label bytes (already decompressed).
pub fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let magic = be_u32(path, bytes, 0, "magic number")?;
    if magic != LABELS_MAGIC {
        return Err(Error::format(
            path,
            format!("not an IDX label file: magic 0x{magic:08x}, expected 0x{LABELS_MAGIC:08x}"),
        ));
    }
    let count = be_u32(path, bytes, 4, "label count")? as usize;
    let body = &bytes[8..];
    if body.len() != count {
        return Err(Error::format(
            path,
            if body.len() < count {
                format!(
                    "truncated: header promises {count} labels but only {} bytes follow",
                    body.len()
                )
            } else {
                format!(
                    "{} unexpected bytes after {count} labels",
                    body.len() - count
                )
            },
        ));
    }
    Ok(body.to_vec())
}

/// Encodes images as IDX3 bytes (uncompressed).
pub fn encode_images(rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let count = pixels.len() / (rows * cols);
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC, count as u32, rows as u32, cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Encodes labels as IDX1 bytes (uncompressed).
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// Gzip-compresses bytes (deterministic: no timestamp, no file name).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gzip_bomb_stops_at_the_promised_size() {
        // A header promising 10 labels, then 64 MiB of zeros: about 64 KiB compressed.
        let mut plain = encode_labels(&[1; 10]);
        plain.extend(std::iter::repeat_n(0u8, 64 << 20));
        let bomb = gzip(&plain);
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let err = decode_maybe_gz(Path::new("bomb.gz"), bomb)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bomb.gz") && err.contains("18 bytes"), "{err}");
        // An honest file decodes whole.
        let ok = decode_maybe_gz(Path::new("ok.gz"), gzip(&encode_labels(&[3; 10]))).unwrap();
        assert_eq!(parse_labels(Path::new("ok"), &ok).unwrap(), vec![3; 10]);
    }

    #[test]
    fn round_trip_and_errors() {
        let p = Path::new("x.idx");
        let px: Vec<u8> = (0..2 * 4 * 3).map(|i| i as u8).collect();
        let enc = encode_images(4, 3, &px);
        let img = parse_images(p, &enc).unwrap();
        assert_eq!((img.count, img.rows, img.cols), (2, 4, 3));
        assert_eq!(img.pixels, px);
        let gz = decode_maybe_gz(p, gzip(&enc)).unwrap();
        assert_eq!(gz, enc);

        let err = parse_images(p, &enc[..enc.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = parse_labels(p, &enc).unwrap_err().to_string();
        assert!(err.contains("magic 0x00000803"), "{err}");
        let err = parse_images(p, &enc[..6]).unwrap_err().to_string();
        assert!(err.contains("truncated header"), "{err}");
        let labels = encode_labels(&[1, 2, 3]);
        assert_eq!(parse_labels(p, &labels).unwrap(), vec![1, 2, 3]);
        let mut long = labels.clone();
        long.push(0);
        assert!(
            parse_labels(p, &long)
                .unwrap_err()
                .to_string()
                .contains("unexpected bytes")
        );
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut gz = gzip(&encode_labels(&[1; 100]));
        let n = gz.len();
        gz.truncate(n / 2);
        let err = decode_maybe_gz(Path::new("l.gz"), gz)
            .unwrap_err()
            .to_string();
        assert!(err.contains("l.gz") && err.contains("gzip"), "{err}");
    }
}
