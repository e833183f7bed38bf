/** @file config.hpp
 *  @brief Configuration macros and the SIMD architecture the library was compiled for.
 *
 *  `ALIGNER_ARCH` is the xsimd architecture every default entry point uses: `xsimd::default_arch`, i.e. the
 *  best instruction set the user's compiler flags allow (SSE2 on plain x86-64, AVX2 with -mavx2 -mfma,
 *  AVX-512 with -mavx512f ...). Define `ALIGNER_ARCH` before including any aligner header to force another. */
#pragma once

#include <string>

#include <xsimd/xsimd.hpp>

/// Forces inlining of small kernel helpers whose array arguments must stay in registers, and keeps register-tile
/// loops out of their callers (inlined, GCC spilled tile registers to the stack in some instantiations).
#if defined(__GNUC__) || defined(__clang__)
#define ALIGNER_ALWAYS_INLINE __attribute__((always_inline)) inline
#define ALIGNER_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))
#define ALIGNER_NOINLINE __attribute__((noinline))
#else
#define ALIGNER_NOINLINE
#define ALIGNER_ALWAYS_INLINE inline
#define ALIGNER_ALWAYS_INLINE_LAMBDA
#endif

#ifndef ALIGNER_ARCH
#define ALIGNER_ARCH xsimd::default_arch
#endif

namespace aligner {

/// The xsimd architecture of the default entry points.
using default_arch = ALIGNER_ARCH;

/// Name of the architecture the default entry points were compiled for ("avx512bw", "fma3+avx2", "sse2", ...).
inline std::string compiled_arch_name() { return default_arch::name(); }

}  // namespace aligner
