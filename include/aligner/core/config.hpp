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

/// ALIGNER_ALWAYS_INLINE in optimised builds; a plain inline function without optimisation (-O0), where GCC still
/// expands always_inline code into every caller. For the selection folds: expanded into each engine's tile visitor
/// (680 of them in a TU that calls score()), they made a debug build of that TU 12.5 s and 4.7 MB of code; as
/// functions of their own, instantiated once per (K, indices, panels), 6.5 s and 1.7 MB.
#if defined(__OPTIMIZE__)
#define ALIGNER_INLINE_WHEN_OPTIMIZING ALIGNER_ALWAYS_INLINE
#else
#define ALIGNER_INLINE_WHEN_OPTIMIZING inline
#endif

/// Around the kernel headers: GCC 12 reports thousands of false "'__Y' is used uninitialized" warnings from its own
/// AVX-512 intrinsics once they are inlined into xsimd code (GCC bug 105593, fixed in GCC 13). The kernels
/// silence exactly these two warnings for their own code, so a consumer built with -Wall -Wextra -Werror and
/// -march=x86-64-v4 compiles cleanly; everything else keeps the consumer's settings.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define ALIGNER_KERNEL_DIAGNOSTICS_BEGIN                                   \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define ALIGNER_KERNEL_DIAGNOSTICS_END _Pragma("GCC diagnostic pop")
#else
#define ALIGNER_KERNEL_DIAGNOSTICS_BEGIN
#define ALIGNER_KERNEL_DIAGNOSTICS_END
#endif

#ifndef ALIGNER_ARCH
#define ALIGNER_ARCH xsimd::default_arch
#endif

/// Separate compilation of the kernels (README "Build time"). The kernels' entry points for default_arch
/// (aligned_row_sums*, the *similarity_rows of explain, token_topk) are most of a translation unit's compile time. Where
/// ALIGNER_SEPARATE_KERNELS is defined they are declared `extern template`, so a translation unit only calls them,
/// and the one translation unit of the program that defines ALIGNER_KERNELS_IMPLEMENTATION before it includes
/// <aligner/aligner.hpp> compiles them (explicit instantiation definitions). Every translation unit must see the same
/// ALIGNER_ARCH / -march (the architecture is part of each instance's name, so a mismatch fails to link).
#if defined(ALIGNER_KERNELS_IMPLEMENTATION)
#define ALIGNER_KERNEL_INSTANCE template
#elif defined(ALIGNER_SEPARATE_KERNELS)
#define ALIGNER_KERNEL_INSTANCE extern template
#endif

namespace aligner {

/// The xsimd architecture of the default entry points.
using default_arch = ALIGNER_ARCH;

/// Name of the architecture the default entry points were compiled for ("avx512bw", "fma3+avx2", "sse2", ...).
inline std::string compiled_arch_name() { return default_arch::name(); }

}  // namespace aligner
