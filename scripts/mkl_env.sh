#!/usr/bin/env bash
# Intel MKL for `cargo build --features mkl`, from PyPI (no Intel installer, no download at build
# time): the wheels mkl-static + mkl-devel ship the static libraries, the OpenMP runtime
# (libiomp5.so) and pkg-config files, which the intel-mkl-src crate (candle's `mkl` feature)
# finds through PKG_CONFIG_PATH.
#
#   scripts/mkl_env.sh cargo build --release --features mkl     # run a command with MKL set up
#   scripts/mkl_env.sh target/release/examples/bench --preset mid-opt
#   eval "$(scripts/mkl_env.sh)"                                   # or export into this shell
#
# The virtual environment is $MKL_VENV (default .venv-mkl), created on first use (~2 GB).
# Binaries built this way need libiomp5.so at run time: the command runs with LD_LIBRARY_PATH
# set, and the eval form exports it (GStreamer loading the plugin needs it too).
set -euo pipefail
cd "$(dirname "$0")/.."
MKL_VENV=${MKL_VENV:-.venv-mkl}
MKL_VERSION=2026.2.0

if [ ! -f "$MKL_VENV/lib/pkgconfig/mkl-static-lp64-iomp.pc" ]; then
    echo "== installing MKL $MKL_VERSION into $MKL_VENV (PyPI wheels mkl-static, mkl-devel)" >&2
    python3 -m venv "$MKL_VENV"
    "$MKL_VENV/bin/pip" install -q "mkl-static==$MKL_VERSION" "mkl-devel==$MKL_VERSION"
fi
lib=$(cd "$MKL_VENV/lib" && pwd)
export PKG_CONFIG_PATH="$lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ $# -eq 0 ]; then
    echo "export PKG_CONFIG_PATH='$PKG_CONFIG_PATH' LD_LIBRARY_PATH='$LD_LIBRARY_PATH'"
else
    exec "$@"
fi
