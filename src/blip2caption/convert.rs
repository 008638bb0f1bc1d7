//! Sampled frames → tightly packed RGB for the model. Only sampled frames are converted, so the
//! pass-through video is never touched.

use gst_video::prelude::*;

use crate::model::RgbImage;

/// Converts frames of one negotiated format; rebuilt when the caps change.
pub struct ToRgb {
    in_info: gst_video::VideoInfo,
    out_info: gst_video::VideoInfo,
    /// `None` when the input is already packed RGB: copy rows directly.
    converter: Option<gst_video::VideoConverter>,
}

impl ToRgb {
    pub fn new(in_info: &gst_video::VideoInfo) -> Result<Self, glib::BoolError> {
        // Same size, rate and interlacing: the converter only changes the pixel format (the
        // model's processor does its own resizing, exactly as for still images).
        let out_info = gst_video::VideoInfo::builder(
            gst_video::VideoFormat::Rgb,
            in_info.width(),
            in_info.height(),
        )
        .fps(in_info.fps())
        .par(in_info.par())
        .interlace_mode(in_info.interlace_mode())
        .build()?;
        let converter = if in_info.format() == gst_video::VideoFormat::Rgb {
            None
        } else {
            Some(gst_video::VideoConverter::new(in_info, &out_info, None)?)
        };
        Ok(Self {
            in_info: in_info.clone(),
            out_info,
            converter,
        })
    }

    pub fn convert(&self, buffer: &gst::BufferRef) -> Result<RgbImage, glib::BoolError> {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &self.in_info)?;
        let (w, h) = (
            self.in_info.width() as usize,
            self.in_info.height() as usize,
        );
        match &self.converter {
            None => pack(&frame, w, h),
            Some(converter) => {
                let mut out = gst::Buffer::with_size(self.out_info.size())?;
                let out_ref = out.get_mut().expect("fresh buffer is writable");
                let mut out_frame =
                    gst_video::VideoFrameRef::from_buffer_ref_writable(out_ref, &self.out_info)?;
                converter.frame_ref(&frame, &mut out_frame);
                pack(&out_frame, w, h)
            }
        }
    }
}

/// Copies an RGB frame row by row, dropping the stride padding.
fn pack<T>(
    frame: &gst_video::VideoFrameRef<T>,
    w: usize,
    h: usize,
) -> Result<RgbImage, glib::BoolError> {
    let stride = frame.plane_stride()[0] as usize;
    let plane = frame.plane_data(0)?;
    let row = w * 3;
    let mut data = Vec::with_capacity(row * h);
    for y in 0..h {
        data.extend_from_slice(&plane[y * stride..y * stride + row]);
    }
    RgbImage::new(w, h, data).map_err(|e| glib::bool_error!("{e}"))
}
