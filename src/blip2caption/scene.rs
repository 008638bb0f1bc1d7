//! The scene-change measure behind `scene-threshold`: a small grayscale thumbnail per frame and
//! the mean absolute difference between two thumbnails.
//!
//! **Definition.** The picture is divided into a grid of at most [`GRID`]×[`GRID`] cells (fewer
//! when the frame has fewer pixels). Each cell's value is the mean BT.709 luma of the cell's
//! pixels on [`ROWS_PER_CELL`] evenly spaced rows, as a fraction of the black-to-white range
//! (0 = black, 1 = white; YUV is decoded with the stream's own matrix and range first, so the
//! same picture gives the same thumbnail in any format). The distance of two frames is the mean,
//! over the cells, of the absolute difference of their values: **0 = identical, 1 = black
//! versus white everywhere.** A distance of 0.05 means the picture got 5 % of full scale
//! brighter or darker on average — for example a tenth of the picture changing by half the
//! range. Sensor noise averages out inside each cell (a few thousand pixels at 1080p), so it adds
//! well under 0.01; a cut between two unrelated shots typically gives 0.1 to 0.4.
//! Alpha is ignored; a change of colour at equal brightness is not seen.
//!
//! **Cost.** Every raw format is read with its own GStreamer unpack function (the same code the
//! video converter uses, so tiled, packed, paletted and 10/12/16-bit formats are all covered),
//! but only on `GRID × ROWS_PER_CELL` rows, and nothing is allocated per frame:
//! `examples/bench_scene.rs` measures the cost per 1080p frame.

use glib::translate::{IntoGlib, ToGlibPtr};
use gst_video::prelude::*;

/// Most thumbnail cells per side.
pub const GRID: usize = 32;
/// Rows read per row of cells.
pub const ROWS_PER_CELL: usize = 2;

/// The thumbnail of one frame: `cols × rows` cell values in 0–1, row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct Thumbnail {
    cols: usize,
    rows: usize,
    luma: Vec<f32>,
}

impl Thumbnail {
    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Cell values, row by row, each the mean luma in 0 (black) – 1 (white).
    pub fn luma(&self) -> &[f32] {
        &self.luma
    }

    /// Mean absolute difference of the cells: 0 = same picture, 1 = black versus white
    /// everywhere. Thumbnails of different grids (a resolution change) are 1 apart.
    pub fn distance(&self, other: &Thumbnail) -> f64 {
        if self.cols != other.cols || self.rows != other.rows || self.luma.is_empty() {
            return 1.0;
        }
        let sum: f64 = self
            .luma
            .iter()
            .zip(&other.luma)
            .map(|(a, b)| (a - b).abs() as f64)
            .sum();
        sum / self.luma.len() as f64
    }
}

/// How the unpacked channels become luma.
#[derive(Clone, Copy, Debug)]
enum Decode {
    /// ARGB / ARGB64: BT.709 weights of R, G, B.
    Rgb,
    /// AYUV / AYUV64: Y, plus the chroma terms that turn this matrix's Y into BT.709 luma
    /// (both zero for BT.709 and for gray formats).
    Yuv { cb: f32, cr: f32 },
}

/// Makes thumbnails of frames of one negotiated format; rebuilt when the caps change.
pub struct SceneMeter {
    info: gst_video::VideoInfo,
    decode: Decode,
    /// `(value - offset) / scale` normalises the unpacked channels 1–3 (Y, U, V or R, G, B) to
    /// 0–1 luma or ±0.5 chroma, for the stream's colour range.
    offset: [f32; 3],
    scale: [f32; 3],
    wide: bool,
    /// One unpacked row (AYUV or AYUV64); `u64` keeps it aligned for reading 16-bit samples.
    row: Vec<u64>,
}

impl SceneMeter {
    pub fn new(info: &gst_video::VideoInfo) -> Result<Self, glib::BoolError> {
        let finfo = info.format_info();
        let unpack = gst_video::VideoFormatInfo::from_format(finfo.unpack_format());
        // SAFETY: `finfo` is a static format description from GStreamer's table.
        let has_unpack = unsafe { (*finfo.to_glib_none().0).unpack_func.is_some() };
        let wide = match unpack.format() {
            gst_video::VideoFormat::Ayuv | gst_video::VideoFormat::Argb => false,
            gst_video::VideoFormat::Ayuv64 | gst_video::VideoFormat::Argb64 => true,
            _ => {
                return Err(glib::bool_error!(
                    "{} unpacks to {}, not a format the scene measure reads",
                    finfo.name(),
                    unpack.name()
                ));
            }
        };
        if !has_unpack {
            return Err(glib::bool_error!("{} has no unpack function", finfo.name()));
        }
        let colorimetry = info.colorimetry();
        let (offset, scale) = if finfo.is_rgb() {
            // RGB is full range in GStreamer.
            let max = if wide { 65535.0 } else { 255.0 };
            ([0.0; 3], [max; 3])
        } else {
            // Indexed by component (Y, U, V, A), not by byte position in the pixel.
            let (o, s) = unpack.range_offsets(colorimetry.range());
            (
                [o[0], o[1], o[2]].map(|v| v as f32),
                [s[0], s[1], s[2]].map(|v| v.max(1) as f32),
            )
        };
        let decode = if finfo.is_rgb() {
            Decode::Rgb
        } else if finfo.is_gray() {
            Decode::Yuv { cb: 0.0, cr: 0.0 }
        } else {
            match colorimetry.matrix().kr_kb() {
                Ok((kr, kb)) => {
                    // R = Y + 2(1-Kr)Cr, B = Y + 2(1-Kb)Cb, G = (Y - Kr R - Kb B)/(1-Kr-Kb);
                    // BT.709 luma of that is Y + cb·Cb + cr·Cr:
                    let (kr, kb) = (kr as f32, kb as f32);
                    let kg = 1.0 - kr - kb;
                    let r = 2.0 * (1.0 - kr);
                    let b = 2.0 * (1.0 - kb);
                    let g = 0.7152 / kg;
                    let cb = 0.0722 * b - g * kb * b;
                    let cr = 0.2126 * r - g * kr * r;
                    // The Y term is 0.2126 + 0.0722 + g (1 - Kr - Kb) = 1 exactly.
                    Decode::Yuv { cb, cr }
                }
                // Unknown matrix: Y alone.
                Err(_) => Decode::Yuv { cb: 0.0, cr: 0.0 },
            }
        };
        // Formats packed in pixel groups (v210: 6 pixels, IYU1: 4) unpack whole groups, so
        // the row has room for a few pixels past the width, as the video converter's lines do.
        let pixels = info.width() as usize + 16;
        let words = (pixels * if wide { 8 } else { 4 }).div_ceil(8);
        Ok(Self {
            info: info.clone(),
            decode,
            offset,
            scale,
            wide,
            row: vec![0; words],
        })
    }

    /// The thumbnail of one frame of this meter's format.
    pub fn thumbnail(&mut self, buffer: &gst::BufferRef) -> Result<Thumbnail, glib::BoolError> {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &self.info)?;
        // A mapped field of an `alternate` stream is half as tall as the caps say.
        let (width, height) = (frame.width() as usize, frame_height(&frame));
        let cols = GRID.min(width);
        let rows = GRID.min(height);
        let sampled_rows = (rows * ROWS_PER_CELL).min(height);
        let bounds: Vec<usize> = (0..=cols).map(|c| c * width / cols).collect();
        // Per cell: sums of channels 1–3 and the pixel count.
        let mut sums = vec![[0u64; 3]; cols * rows];
        let mut counts = vec![0u64; cols * rows];
        let flags = if frame.is_interlaced() {
            gst_video::VideoPackFlags::INTERLACED
        } else {
            gst_video::VideoPackFlags::empty()
        };
        for i in 0..sampled_rows {
            // Row centres spread evenly over the height; the cell row is where the centre lies.
            let y = (2 * i + 1) * height / (2 * sampled_rows);
            let cell_row = y * rows / height;
            self.unpack_row(&frame, flags, y, width);
            for c in 0..cols {
                let (x0, x1) = (bounds[c], bounds[c + 1]);
                let acc = if self.wide {
                    sum_wide(&self.row_u16()[x0 * 4..x1 * 4])
                } else {
                    sum_narrow(&self.row_u8()[x0 * 4..x1 * 4])
                };
                let cell = cell_row * cols + c;
                for (s, a) in sums[cell].iter_mut().zip(acc) {
                    *s += a;
                }
                counts[cell] += (x1 - x0) as u64;
            }
        }
        let luma = sums
            .iter()
            .zip(&counts)
            .map(|(s, &n)| self.cell_luma(s, n))
            .collect();
        Ok(Thumbnail { cols, rows, luma })
    }

    fn cell_luma(&self, sums: &[u64; 3], count: u64) -> f32 {
        if count == 0 {
            return 0.0;
        }
        let mean = |ch: usize| {
            let v = sums[ch - 1] as f32 / count as f32;
            (v - self.offset[ch - 1]) / self.scale[ch - 1]
        };
        let luma = match self.decode {
            Decode::Rgb => 0.2126 * mean(1) + 0.7152 * mean(2) + 0.0722 * mean(3),
            Decode::Yuv { cb, cr } => {
                let y = mean(1);
                if cb == 0.0 && cr == 0.0 {
                    y
                } else {
                    y + cb * mean(2) + cr * mean(3)
                }
            }
        };
        luma.clamp(0.0, 1.0)
    }

    fn unpack_row(
        &mut self,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        flags: gst_video::VideoPackFlags,
        y: usize,
        width: usize,
    ) {
        let raw = frame.as_ptr();
        // SAFETY: the frame is mapped for reading and validated against `self.info` by
        // `from_buffer_ref_readable` (buffer large enough for every plane), `y` is below the
        // mapped height and `width` is the frame width, so the format's own unpack function
        // reads inside the planes exactly as GStreamer's video converter does (including tiled
        // and paletted layouts, which is why the raw pointers and strides are passed as they
        // are). `self.row` holds `width` pixels of the unpack format (checked in `new`).
        unsafe {
            let finfo = (*raw).info.finfo;
            let unpack = (*finfo).unpack_func.expect("checked in SceneMeter::new");
            unpack(
                finfo,
                flags.into_glib(),
                self.row.as_mut_ptr().cast(),
                (*raw).data.as_ptr() as *const glib::ffi::gpointer,
                (*raw).info.stride.as_ptr(),
                0,
                y as i32,
                width as i32,
            );
        }
    }

    fn row_u8(&self) -> &[u8] {
        // SAFETY: plain bytes of the row buffer.
        unsafe { std::slice::from_raw_parts(self.row.as_ptr().cast(), self.row.len() * 8) }
    }

    fn row_u16(&self) -> &[u16] {
        // SAFETY: `u64` storage is aligned for `u16`; AYUV64 samples are native-endian u16.
        unsafe { std::slice::from_raw_parts(self.row.as_ptr().cast(), self.row.len() * 4) }
    }
}

fn frame_height(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> usize {
    let info = frame.info();
    if info.interlace_mode() == gst_video::VideoInterlaceMode::Alternate {
        info.field_height() as usize
    } else {
        info.height() as usize
    }
}

/// Sums channels 1–3 of 8-bit 4-channel pixels. `u32` lanes let the compiler vectorise the
/// inner loop; blocks of 2^24 pixels keep them from overflowing on absurdly wide frames.
fn sum_narrow(px: &[u8]) -> [u64; 3] {
    let mut out = [0u64; 3];
    for block in px.chunks(4 << 24) {
        let mut acc = [0u32; 4];
        for p in block.chunks_exact(4) {
            for (a, &v) in acc.iter_mut().zip(p) {
                *a += v as u32;
            }
        }
        for (o, a) in out.iter_mut().zip(&acc[1..]) {
            *o += *a as u64;
        }
    }
    out
}

fn sum_wide(px: &[u16]) -> [u64; 3] {
    let mut acc = [0u64; 4];
    for p in px.chunks_exact(4) {
        for (a, &v) in acc.iter_mut().zip(p) {
            *a += v as u64;
        }
    }
    [acc[1], acc[2], acc[3]]
}

#[cfg(test)]
#[path = "scene_tests.rs"]
mod tests;
