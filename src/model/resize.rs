//! Pillow-exact resampling of packed 8-bit images: a port of `src/libImaging/Resample.c`
//! (`ImagingResample` with the 8-bit code paths) as of Pillow 13.0, as called by
//! `Image.resize(size, filter)`.
//!
//! Every channel is computed independently, so the result equals Pillow's for the modes whose
//! bands Pillow resamples independently: `L` (1 channel), `RGB` (3), `RGBX`/`CMYK` (4). Pillow
//! resizes `RGBA`/`LA` in premultiplied form (`RGBa`/`La`), which this module does not do.

/// The convolution filters of Pillow's `Image.Resampling` (NEAREST is a different code path in
/// Pillow and is not implemented).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Resampling.LANCZOS` (1).
    Lanczos,
    /// `Resampling.BILINEAR` (2).
    Bilinear,
    /// `Resampling.BICUBIC` (3).
    Bicubic,
    /// `Resampling.BOX` (4).
    Box,
    /// `Resampling.HAMMING` (5).
    Hamming,
    /// `Resampling.MKS2013` (6, Pillow >= 13).
    Mks2013,
    /// `Resampling.MKS2021` (7, Pillow >= 13).
    Mks2021,
}

impl Filter {
    /// The filter for a PIL `resample` value, `None` for NEAREST (0) and unknown values.
    pub fn from_pil(resample: u32) -> Option<Self> {
        match resample {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            4 => Some(Filter::Box),
            5 => Some(Filter::Hamming),
            6 => Some(Filter::Mks2013),
            7 => Some(Filter::Mks2021),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
            Filter::Mks2013 => 2.5,
            Filter::Mks2021 => 4.5,
        }
    }

    fn eval(self, x: f64) -> f64 {
        use std::f64::consts::PI;
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                1.0
            } else {
                let x = x * PI;
                x.sin() / x
            }
        }
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * PI;
                    // Pillow writes the constants as floats: `0.54f + 0.46f * cos(x)`.
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
            // Pillow's `pow(x, 2)` is exact squaring, as `x * x` is.
            Filter::Mks2013 => {
                let x = x.abs();
                if x < 0.5 {
                    17.0 / 16.0 - 7.0 / 4.0 * (x * x)
                } else if x < 1.5 {
                    (1.0 - x) * (7.0 / 4.0 - x)
                } else if x < 2.5 {
                    -1.0 / 8.0 * ((x - 5.0 / 2.0) * (x - 5.0 / 2.0))
                } else {
                    0.0
                }
            }
            Filter::Mks2021 => {
                let x = x.abs();
                if x < 0.5 {
                    577.0 / 576.0 - 239.0 / 144.0 * (x * x)
                } else if x < 1.5 {
                    35.0 / 36.0 * (x - 1.0) * (x - 239.0 / 140.0)
                } else if x < 2.5 {
                    1.0 / 6.0 * (x - 2.0) * (65.0 / 24.0 - x)
                } else if x < 3.5 {
                    1.0 / 36.0 * (x - 3.0) * (x - 15.0 / 4.0)
                } else if x < 4.5 {
                    -1.0 / 288.0 * ((x - 9.0 / 2.0) * (x - 9.0 / 2.0))
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point bits of the 8-bit coefficients (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Per output sample: first input index, number of taps, and `ksize` fixed-point coefficients.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    kk: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `(0, in_size)`.
fn precompute_coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    // `(double)(in1 - in0) / outSize` with float box coordinates.
    let scale = (in_size as f32 - 0.0f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = 0.0 + (xx as f64 + 0.5) * scale;
        // C casts truncate toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).max(0) as usize;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, &kx) in k.iter().enumerate().take(n) {
            let kx = if ww != 0.0 { kx / ww } else { kx };
            let fixed = kx * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if kx < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin as usize, n));
    }
    Coeffs { ksize, bounds, kk }
}

/// `clip8`: drop the fixed-point fraction and saturate to 0..=255.
#[inline]
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `Image.resize((dst_w, dst_h), filter)` on a packed image with `channels` interleaved
/// 8-bit channels (`src.len() == src_w * src_h * channels`). Returns `dst_w * dst_h * channels`
/// bytes. Panics if a size is zero or `src` has the wrong length.
///
/// Pass order as in Pillow 13.0's `ImagingResampleInner`: horizontal first (on only the source
/// rows the vertical pass reads), unless the height shrinks by more than twice as many pixels as
/// the width, then vertical first. Older Pillow always went horizontal first; the 8-bit
/// intermediate makes the order visible in the result.
pub fn resample(
    src: &[u8],
    channels: usize,
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
    filter: Filter,
) -> Vec<u8> {
    assert!(
        channels > 0 && src_w > 0 && src_h > 0 && dst_w > 0 && dst_h > 0,
        "resample: sizes must be positive"
    );
    assert_eq!(
        src.len(),
        src_w * src_h * channels,
        "resample: wrong buffer length"
    );
    let need_horizontal = dst_w != src_w;
    let need_vertical = dst_h != src_h;
    let shrink_h = src_h as i64 - dst_h as i64;
    let horizontal_first = !(shrink_h > 0 && shrink_h > (src_w as i64 - dst_w as i64) * 2);
    let vert = need_vertical.then(|| precompute_coeffs(src_h, dst_h, filter));
    let horiz = need_horizontal.then(|| precompute_coeffs(src_w, dst_w, filter));
    match (horiz, vert) {
        (None, None) => src.to_vec(),
        (Some(h), None) => horizontal_pass(src, channels, src_w, 0..src_h, &h),
        (None, Some(v)) => vertical_pass(src, src_w * channels, 0, &v),
        (Some(h), Some(v)) if horizontal_first => {
            // Only the source rows that the vertical pass reads are resampled horizontally.
            let first = v.bounds[0].0;
            let last = v.bounds[dst_h - 1].0 + v.bounds[dst_h - 1].1;
            let mid = horizontal_pass(src, channels, src_w, first..last, &h);
            vertical_pass(&mid, dst_w * channels, first, &v)
        }
        (Some(h), Some(v)) => {
            let mid = vertical_pass(src, src_w * channels, 0, &v);
            horizontal_pass(&mid, channels, src_w, 0..dst_h, &h)
        }
    }
}

/// `ImagingResampleHorizontal_8bpc` on `rows` of a `src_w`-wide image.
fn horizontal_pass(
    src: &[u8],
    channels: usize,
    src_w: usize,
    rows: std::ops::Range<usize>,
    c: &Coeffs,
) -> Vec<u8> {
    let dst_w = c.bounds.len();
    let mut out = vec![0u8; dst_w * rows.len() * channels];
    let mut acc = vec![0i32; channels];
    for (src_row, out_row) in src
        .chunks_exact(src_w * channels)
        .skip(rows.start)
        .take(rows.len())
        .zip(out.chunks_exact_mut(dst_w * channels))
    {
        for (xx, px) in out_row.chunks_exact_mut(channels).enumerate() {
            let (xmin, n) = c.bounds[xx];
            acc.fill(HALF);
            for (x, &kx) in c.kk[xx * c.ksize..][..n].iter().enumerate() {
                let s = &src_row[(xmin + x) * channels..][..channels];
                for (a, &v) in acc.iter_mut().zip(s) {
                    *a += v as i32 * kx;
                }
            }
            for (p, &a) in px.iter_mut().zip(&acc) {
                *p = clip8(a);
            }
        }
    }
    out
}

/// `ImagingResampleVertical_8bpc`; `src` holds the source rows from `row_offset` on.
fn vertical_pass(src: &[u8], row_len: usize, row_offset: usize, c: &Coeffs) -> Vec<u8> {
    let mut out = vec![0u8; c.bounds.len() * row_len];
    let mut acc = vec![0i32; row_len];
    for (yy, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        let (ymin, n) = c.bounds[yy];
        acc.fill(HALF);
        for (y, &ky) in c.kk[yy * c.ksize..][..n].iter().enumerate() {
            let row = &src[(ymin - row_offset + y) * row_len..][..row_len];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as i32 * ky;
            }
        }
        for (p, &a) in out_row.iter_mut().zip(&acc) {
            *p = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bytes((i * 37 + 11) % 256 for i in range(n))`, the input of the expected values below.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 37 + 11) % 256) as u8).collect()
    }

    /// Expected bytes from Pillow 13.0.0:
    /// `python3 -c "from PIL import Image; d = bytes((i*37+11)%256 for i in range(SW*SH*C));
    ///  print(list(Image.frombytes(MODE, (SW, SH), d).resize((DW, DH), FILTER).tobytes()))"`
    #[test]
    fn small_cases_match_pillow() {
        #[rustfmt::skip]
        // (channels, src_w, src_h, dst_w, dst_h, filter, expected)
        type Case = (usize, usize, usize, usize, usize, Filter, &'static [u8]);
        let cases: [Case; 5] = [
            (
                3,
                4,
                3,
                3,
                2,
                Filter::Bicubic,
                &[
                    75, 125, 87, 158, 111, 151, 102, 87, 132, 169, 154, 116, 146, 99, 146, 131,
                    181, 92,
                ],
            ),
            (
                3,
                2,
                2,
                5,
                3,
                Filter::Bicubic,
                &[
                    0, 39, 76, 5, 57, 94, 61, 106, 143, 116, 154, 191, 137, 172, 209, 124, 20, 57,
                    121, 38, 75, 114, 87, 124, 107, 135, 172, 104, 153, 190, 255, 1, 38, 236, 19,
                    56, 167, 68, 105, 97, 116, 153, 70, 134, 171,
                ],
            ),
            (1, 6, 1, 2, 1, Filter::Bicubic, &[53, 154]),
            // Height shrinks > 2x more than width: Pillow 13 runs the vertical pass first.
            (
                3,
                3,
                12,
                2,
                3,
                Filter::Bicubic,
                &[
                    119, 124, 139, 130, 136, 116, 149, 136, 137, 120, 130, 117, 112, 135, 105, 134,
                    109, 128,
                ],
            ),
            (
                3,
                4,
                3,
                3,
                2,
                Filter::Bilinear,
                &[
                    86, 123, 93, 153, 110, 147, 106, 95, 132, 161, 151, 120, 148, 105, 142, 133,
                    170, 95,
                ],
            ),
        ];
        for (c, sw, sh, dw, dh, filter, want) in cases {
            let got = resample(&pattern(sw * sh * c), c, sw, sh, dw, dh, filter);
            assert_eq!(got, want, "{c}ch {sw}x{sh} -> {dw}x{dh} {filter:?}");
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let src = pattern(5 * 4 * 3);
        assert_eq!(resample(&src, 3, 5, 4, 5, 4, Filter::Bicubic), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        // The fixed-point coefficients of every output sample sum to ~1 << 22.
        for filter in (1..=7).filter_map(Filter::from_pil) {
            for (sw, sh, dw, dh) in [(37, 23, 224, 224), (640, 480, 224, 224), (3, 1000, 32, 32)] {
                let out = resample(&vec![200u8; sw * sh], 1, sw, sh, dw, dh, filter);
                assert!(out.iter().all(|&v| v == 200), "{filter:?} {sw}x{sh}");
            }
        }
    }
}
