//! Thumbnail geometry and encoding for PNG, JPEG, GIF and WebP images.
//!
//! The rules follow the spec's "Thumbnails" section: "scale" keeps the aspect
//! ratio and fits the image inside the requested box, "crop" returns the
//! requested aspect ratio, and no method ever upscales. When the image is no
//! larger than the request in both dimensions, the original is returned.

use std::{io::Cursor, path::Path};

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};

/// The thumbnailing method of the request (`method=scale|crop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Scale,
    Crop,
}

impl Method {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "scale" => Some(Self::Scale),
            "crop" => Some(Self::Crop),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scale => "scale",
            Self::Crop => "crop",
        }
    }
}

/// Sizes generated right after an image is uploaded, as the spec recommends.
pub const PREGENERATED: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// Content types that this server can thumbnail.
pub fn is_supported(content_type: &str) -> bool {
    matches!(content_type, "image/png" | "image/jpeg" | "image/gif" | "image/webp")
}

/// The outcome of thumbnailing one image.
pub enum Thumbnail {
    /// The original content fits the request already and is served as it is.
    Original,
    /// A newly encoded image.
    Encoded { bytes: Vec<u8>, content_type: &'static str },
}

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("the content is not an image this server can read: {0}")]
    Decode(#[from] image::ImageError),
    #[error("could not read the image: {0}")]
    Io(#[from] std::io::Error),
}

/// Largest image, in bytes of decoded pixels, that this server decodes, so
/// that a small compressed file cannot make the server allocate gigabytes.
const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// Decodes the image at `path` and makes a thumbnail of at least `width`×`height`
/// (unless the image is smaller). Blocking: run it on a blocking thread.
pub fn make(path: &Path, width: u32, height: u32, method: Method) -> Result<Thumbnail, ThumbnailError> {
    let mut reader = ImageReader::open(path)?.with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let format = reader.format();
    let image = reader.decode()?;
    let (original_width, original_height) = (image.width(), image.height());

    let fits = original_width <= width && original_height <= height;
    let resized = if fits {
        None
    } else {
        match method {
            Method::Scale => Some(image.resize(width, height, FilterType::Triangle)),
            Method::Crop if original_width >= width && original_height >= height => {
                Some(image.resize_to_fill(width, height, FilterType::Triangle))
            }
            // One side is already smaller than requested: cut the requested
            // aspect ratio out of the middle at the original resolution.
            Method::Crop => Some(crop_to_aspect(&image, width, height)),
        }
    };

    match (resized, format) {
        (Some(thumbnail), _) => encode(&thumbnail, format),
        // GIF and WebP may be animated, and the spec does not allow an
        // animated thumbnail unless the client asks for one, so their first
        // frame is re-encoded as a still image.
        (None, Some(ImageFormat::Gif | ImageFormat::WebP)) => encode(&image, format),
        (None, _) => Ok(Thumbnail::Original),
    }
}

/// Cuts the largest centered region of aspect `width`:`height` out of `image`.
fn crop_to_aspect(image: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    let (w, h) = (u64::from(image.width()), u64::from(image.height()));
    let (width, height) = (u64::from(width), u64::from(height));
    let (crop_w, crop_h) = if w * height > h * width { (h * width / height, h) } else { (w, w * height / width) };
    let (crop_w, crop_h) = (crop_w.max(1) as u32, crop_h.max(1) as u32);
    let x = (image.width() - crop_w) / 2;
    let y = (image.height() - crop_h) / 2;
    image.crop_imm(x, y, crop_w, crop_h)
}

/// Encodes JPEG sources as JPEG and everything else as PNG.
fn encode(image: &DynamicImage, source: Option<ImageFormat>) -> Result<Thumbnail, ThumbnailError> {
    let mut bytes = Vec::new();
    if source == Some(ImageFormat::Jpeg) {
        DynamicImage::ImageRgb8(image.to_rgb8()).write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)?;
        Ok(Thumbnail::Encoded { bytes, content_type: "image/jpeg" })
    } else {
        image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)?;
        Ok(Thumbnail::Encoded { bytes, content_type: "image/png" })
    }
}
