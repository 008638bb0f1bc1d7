//! Intel MKL's sgemm for the `mkl` feature (linked through the intel-mkl-src crate, as candle's
//! own `mkl` feature does).

use std::os::raw::{c_char, c_int};

unsafe extern "C" {
    fn sgemm_(
        transa: *const c_char,
        transb: *const c_char,
        m: *const c_int,
        n: *const c_int,
        k: *const c_int,
        alpha: *const f32,
        a: *const f32,
        lda: *const c_int,
        b: *const f32,
        ldb: *const c_int,
        beta: *const f32,
        c: *mut f32,
        ldc: *const c_int,
    );
    // The C entry point; `mkl_set_num_threads_local` is the Fortran one (argument by pointer).
    fn MKL_Set_Num_Threads_Local(n: c_int) -> c_int;
}

/// Row-major `dst (m×n, row stride dst_rs) = [dst +] scale · lhs · rhs` with the operand strides
/// of `super::gemm_into`, as MKL's column-major `dstᵀ = rhsᵀ · lhsᵀ`. One of each operand's
/// strides must be 1.
///
/// # Safety
/// The pointers must cover every element the strides reach.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    scale: f32,
) {
    // A column-major (rows × cols) operand with leading dimension ld: 'N' when its rows are
    // adjacent, 'T' (stored transposed) otherwise.
    let op = |row_stride: usize, col_stride: usize, rows: usize| {
        if col_stride == 1 {
            (b'N' as c_char, row_stride.max(rows).max(1) as c_int)
        } else {
            debug_assert_eq!(row_stride, 1);
            (b'T' as c_char, col_stride.max(1) as c_int)
        }
    };
    // rhsᵀ is (n × k): element (j, p) = rhs[p * rhs_rs + j * rhs_cs].
    let (transa, lda) = op(rhs_rs, rhs_cs, n);
    // lhsᵀ is (k × m): element (p, i) = lhs[i * lhs_rs + p * lhs_cs].
    let (transb, ldb) = op(lhs_rs, lhs_cs, k);
    let (mm, nn, kk, ldc) = (n as c_int, m as c_int, k as c_int, dst_rs as c_int);
    let beta: f32 = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: forwarded from the caller.
    unsafe {
        sgemm_(
            &transa, &transb, &mm, &nn, &kk, &scale, rhs, &lda, lhs, &ldb, &beta, dst, &ldc,
        )
    }
}

/// Runs `f` with MKL limited to the calling thread (for calls made from our own worker threads).
pub fn single_threaded<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: plain MKL service calls; 0 restores the global setting.
    unsafe { MKL_Set_Num_Threads_Local(1) };
    let r = f();
    unsafe { MKL_Set_Num_Threads_Local(0) };
    r
}
