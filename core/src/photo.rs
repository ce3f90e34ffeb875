//! Photos are prepared on the device before they are queued, so a rural 2G link can carry them:
//! orientation applied, long edge at most [`MAX_EDGE`] px, re-encoded as JPEG, which drops every
//! metadata block (EXIF GPS, camera serials).

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageDecoder, ImageReader};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

/// Longest edge of a stored photo in pixels.
pub const MAX_EDGE: u32 = 1600;
/// JPEG quality of stored photos.
pub const JPEG_QUALITY: u8 = 80;
/// Largest input accepted (a phone camera original is well below this).
pub const MAX_INPUT_BYTES: usize = 40 * 1024 * 1024;

/// A photo ready to be stored and uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPhoto {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Lower-case hex SHA-256 of `jpeg`: the photo's address.
    pub sha256: String,
}

/// Decodes, orients, downscales and re-encodes a photo.
pub fn prepare(bytes: &[u8]) -> Result<PreparedPhoto> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(CoreError::Photo(format!("文件超过 {} MB", MAX_INPUT_BYTES / 1024 / 1024)));
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| CoreError::Photo(e.to_string()))?;
    let mut decoder = reader.into_decoder().map_err(|_| CoreError::Photo("不是可识别的图片格式".into()))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|_| CoreError::Photo("图片数据已损坏".into()))?;
    img.apply_orientation(orientation);
    if img.width().max(img.height()) > MAX_EDGE {
        img = img.resize(MAX_EDGE, MAX_EDGE, image::imageops::FilterType::Triangle);
    }
    let rgb = img.to_rgb8();
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY).encode_image(&rgb).map_err(|e| CoreError::Photo(e.to_string()))?;
    Ok(PreparedPhoto { sha256: sha256_hex(&jpeg), width: rgb.width(), height: rgb.height(), jpeg })
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_with_exif(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
        // Insert an APP1 "Exif" segment right after SOI, as cameras do.
        let payload = b"Exif\0\0MM\0*\0\0\0\x08\0\0GPS-SECRET-DATA";
        let len = (payload.len() + 2) as u16;
        let mut seg = vec![0xFF, 0xE1];
        seg.extend_from_slice(&len.to_be_bytes());
        seg.extend_from_slice(payload);
        out.splice(2..2, seg);
        out
    }

    #[test]
    fn downscales_and_strips_metadata() {
        let input = jpeg_with_exif(3200, 1800);
        assert!(input.windows(10).any(|w| w == b"GPS-SECRET"));
        let p = prepare(&input).unwrap();
        assert_eq!((p.width, p.height), (1600, 900));
        assert!(!p.jpeg.windows(4).any(|w| w == b"Exif"));
        assert!(!p.jpeg.windows(10).any(|w| w == b"GPS-SECRET"));
        assert_eq!(p.sha256, sha256_hex(&p.jpeg));
        let small = prepare(&jpeg_with_exif(640, 480)).unwrap();
        assert_eq!((small.width, small.height), (640, 480));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(prepare(b"not an image"), Err(CoreError::Photo(_))));
        let mut truncated = jpeg_with_exif(200, 200);
        truncated.truncate(300);
        assert!(prepare(&truncated).is_err());
    }
}
