//! ImageFolder: one sub-folder per class (sorted by name → class index), PNG or JPEG files,
//! converted to the requested channel count and resized to the model's input size.

use std::path::Path;

use image::imageops::FilterType;

use super::{Dataset, ImageShape};
use crate::error::{Error, Result};

/// Loads every PNG/JPEG under `root/<class>/`. Class names are returned in index order.
pub fn load_image_folder(root: &Path, shape: ImageShape) -> Result<(Dataset, Vec<String>)> {
    if shape.channels != 1 && shape.channels != 3 {
        return Err(Error::invalid(
            "channels",
            shape.channels,
            "image folders load as 1 (grey) or 3 (RGB) channels",
        ));
    }
    let mut classes: Vec<String> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.len() < 2 {
        return Err(Error::format(
            root,
            format!(
                "an image folder needs at least 2 class sub-folders, found {}",
                classes.len()
            ),
        ));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (class_idx, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
                    .unwrap_or(false)
            })
            .collect();
        files.sort();
        if files.is_empty() {
            // A class without images cannot be learnt, and shifts nothing visibly: refuse it.
            return Err(Error::format(
                &dir,
                "holds no PNG or JPEG image; every class folder needs at least one",
            ));
        }
        for file in files {
            let img = image::open(&file)
                .map_err(|e| Error::format(&file, format!("cannot decode image: {e}")))?;
            let img = img.resize_exact(
                shape.width as u32,
                shape.height as u32,
                FilterType::Triangle,
            );
            if shape.channels == 1 {
                pixels.extend(img.to_luma8().pixels().map(|p| p.0[0] as f32 / 255.0));
            } else {
                // Stored channel-first (C, H, W) like every other tensor in nnmark.
                let rgb = img.to_rgb8();
                for c in 0..3 {
                    pixels.extend(rgb.pixels().map(|p| p.0[c] as f32 / 255.0));
                }
            }
            labels.push(class_idx as u8);
        }
    }
    if labels.is_empty() {
        return Err(Error::format(
            root,
            "no .png/.jpg/.jpeg file in any class folder",
        ));
    }
    let ds = Dataset::new(
        root.display().to_string(),
        shape,
        classes.len(),
        pixels,
        labels,
    )?;
    Ok((ds, classes))
}

/// Writes trigger images as PNG files `DIR/NNNN-label-L.png` (grey or RGB), e.g. for an owner
/// auditing a key. The folder is created; existing files of the same names are replaced.
pub fn write_pngs(dir: &Path, set: &crate::keyfile::TriggerSet) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let s = set.shape;
    for i in 0..set.len() {
        let px = set.image_u8(i);
        let path = dir.join(format!("{i:04}-label-{}.png", set.labels[i]));
        let (w, h) = (s.width as u32, s.height as u32);
        let mut bytes = Vec::new();
        let enc = image::codecs::png::PngEncoder::new(&mut bytes);
        let result = match s.channels {
            1 => image::ImageEncoder::write_image(enc, px, w, h, image::ExtendedColorType::L8),
            3 => {
                // Planar (C, H, W) to interleaved RGB.
                let plane = s.height * s.width;
                let rgb: Vec<u8> = (0..plane)
                    .flat_map(|p| [px[p], px[plane + p], px[2 * plane + p]])
                    .collect();
                image::ImageEncoder::write_image(enc, &rgb, w, h, image::ExtendedColorType::Rgb8)
            }
            c => {
                return Err(Error::invalid(
                    "channels",
                    c,
                    "PNG export supports 1 or 3 channels",
                ));
            }
        };
        result.map_err(|e| Error::format(&path, format!("PNG encoding failed: {e}")))?;
        crate::io::write_atomic(&path, &bytes, Some(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_resizes_grey_and_rgb() {
        let dir = tempfile::tempdir().unwrap();
        for (class, value) in [("a_cat", 10u8), ("b_dog", 200u8)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            for i in 0..2 {
                let img = image::RgbImage::from_pixel(40, 30, image::Rgb([value, value, value]));
                img.save(dir.path().join(class).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        let (ds, classes) = load_image_folder(dir.path(), ImageShape::MNIST).unwrap();
        assert_eq!(classes, vec!["a_cat", "b_dog"]);
        assert_eq!(ds.len(), 4);
        assert_eq!(ds.labels(), &[0, 0, 1, 1]);
        assert!((ds.image(3)[0] - 200.0 / 255.0).abs() < 0.01);
        let rgb = ImageShape {
            channels: 3,
            height: 8,
            width: 8,
        };
        let (ds, _) = load_image_folder(dir.path(), rgb).unwrap();
        assert_eq!(ds.image(0).len(), 192);
    }

    #[test]
    fn broken_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for class in ["a", "b"] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
        }
        std::fs::write(dir.path().join("a/bad.png"), b"not a png").unwrap();
        let err = load_image_folder(dir.path(), ImageShape::MNIST)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.png"), "{err}");
    }

    #[test]
    fn an_empty_class_folder_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for class in ["a", "b"] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
        }
        image::GrayImage::from_pixel(28, 28, image::Luma([9]))
            .save(dir.path().join("a/0.png"))
            .unwrap();
        let err = load_image_folder(dir.path(), ImageShape::MNIST)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/b") && err.contains("no PNG or JPEG"),
            "{err}"
        );
    }
}
