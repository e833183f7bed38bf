/** @file kernel_info.hpp
 *  @brief Which kernel scores each storage in this process, and why: the compile-time SIMD architecture (from the
 *  user's flags) and the run-time matrix units (AMX, where the CPU, the OS and the permission allow them). */
#pragma once

#include <cstddef>
#include <string>

#include "../core/config.hpp"
#include "../core/cpu.hpp"
#include "amx.hpp"
#include "layout.hpp"
#include "residual.hpp"
#include "tile.hpp"

namespace aligner {

/// What kernel_info() reports: one line per storage and the facts behind them.
struct kernel_report {
  std::string compiled_arch;  ///< xsimd architecture of the build ("avx512bw", "fma3<avx2>", "sse2", ...)
  std::size_t panel_width = 0;
  std::string cpu;            ///< the CPU's brand string
  bool amx_bf16 = false;      ///< AMX-BF16 tiles score bf16 panels now
  std::string amx_reason;     ///< why not, when !amx_bf16
  bool amx_int8 = false;      ///< AMX-INT8 tiles score i8 panels now
  std::string amx_int8_reason;  ///< why not, when !amx_int8
  bool avx512_wide = false;    ///< the run-time AVX-512 tiles of 4- and 8-wide panels (wide.hpp) score f32/f16/i8 panels now
  std::string avx512_wide_reason;  ///< why not, when !avx512_wide
  bool avx2_wide = false;      ///< the run-time AVX2 tiles of 4-wide panels (wide.hpp) score f32/f16/i8 panels now
  std::string avx2_wide_reason;  ///< why not, when !avx2_wide
  std::string f32, bf16, f16, i8, residual, token_search;
  std::string prefetch;  ///< where the vector tiles prefetch the next panels (tile_prefetch_to_l2)
  std::string order;     ///< the vector tiles' sweep order (tile_panel_outer)

  /// key=value lines, one per fact (the CLI's `aligner kernels` prints them).
  std::string describe() const {
    std::string s;
    auto line = [&](const char* k, const std::string& v) { s += std::string(k) + "=" + v + "\n"; };
    line("compiled_arch", compiled_arch);
    line("panel_width", std::to_string(panel_width));
    line("cpu", cpu.empty() ? std::string("unknown") : cpu);
    const std::string yes = amx_emulated ? "yes (emulated in software)" : "yes";
    line("amx_bf16", amx_bf16 ? yes : "no (" + amx_reason + ")");
    line("amx_int8", amx_int8 ? yes : "no (" + amx_int8_reason + ")");
    line("avx512_wide", avx512_wide ? "yes" : "no (" + avx512_wide_reason + ")");
    line("avx2_wide", avx2_wide ? "yes" : "no (" + avx2_wide_reason + ")");
    line("kernel_f32", f32);
    line("kernel_bf16", bf16);
    line("kernel_f16", f16);
    line("kernel_i8", i8);
    line("kernel_residual", residual);
    line("kernel_token_search", token_search);
    line("tile_prefetch", prefetch);
    line("tile_order", order);
    return s;
  }
};

/// The kernels that run now for the default architecture (or Arch).
template <class Arch = default_arch>
kernel_report kernel_info() {
  kernel_report r;
  r.compiled_arch = Arch::name();
  r.panel_width = panel_width<Arch>;
  r.cpu = cpu().brand;
  const bool fits = amx_tiles_fit<Arch>;
  // Why an AMX engine does not run: the panel width, the CPU / OS / permission, or the switch.
  auto why_not = [&](const std::string& unavailable) {
    if (!fits) return "panel width " + std::to_string(panel_width<Arch>) + " does not fit an AMX tile";
    if (!unavailable.empty()) return unavailable;
    return std::string("turned off (ALIGNER_NO_AMX or set_amx_enabled(false))");
  };
  r.amx_bf16 = fits && amx_bf16_usable();
  if (!r.amx_bf16) r.amx_reason = why_not(amx_bf16_unavailable_reason());
  r.amx_int8 = fits && amx_int8_usable();
  if (!r.amx_int8) r.amx_int8_reason = why_not(amx_int8_unavailable_reason());
  r.avx2_wide = wide_avx2_runs<Arch>(storage::f32);
  r.avx512_wide = wide_runs<Arch>(storage::f32) && !r.avx2_wide;
  if (!r.avx512_wide) {
    if (!ALIGNER_HAVE_WIDE) r.avx512_wide_reason = "not compiled (needs x86-64 with GCC or Clang)";
    else if (panel_width<Arch> != 8 && panel_width<Arch> != 4)
      r.avx512_wide_reason = "the build's panel width is " + std::to_string(panel_width<Arch>) +
                             (panel_width<Arch> == 16 ? " (AVX-512 at compile time)" : " (the run-time tiles take widths 4 and 8)");
    else if (!avx512_unavailable_reason().empty()) r.avx512_wide_reason = avx512_unavailable_reason();
    else r.avx512_wide_reason = "turned off (ALIGNER_NO_AVX512 or set_avx512_enabled(false))";
  }
  if (!r.avx2_wide) {
    if (!ALIGNER_HAVE_WIDE) r.avx2_wide_reason = "not compiled (needs x86-64 with GCC or Clang)";
    else if (panel_width<Arch> != 4)
      r.avx2_wide_reason = "the build's panel width is " + std::to_string(panel_width<Arch>) + " (the run-time AVX2 tiles take width 4)";
    else if (r.avx512_wide) r.avx2_wide_reason = "the run-time AVX-512 tiles run";
    else if (!avx2_unavailable_reason().empty()) r.avx2_wide_reason = avx2_unavailable_reason();
    else r.avx2_wide_reason = "turned off (ALIGNER_NO_AVX2 or set_avx2_enabled(false))";
  }
  const std::string wide_panels = std::to_string(panel_width<Arch>) + "-wide panels";
  const std::string build_vec = std::string(Arch::name()) + " FMA register tiles" +
                                (six_row_tiles<Arch, storage::f32> ? " of 6 query rows x 2 panels" : "") + " (compile time)";
  const std::string vec = r.avx512_wide ? "AVX-512 FMA register tiles over " + wide_panels + ", " + std::to_string(wide_group(panel_width<Arch>)) +
                                              " components a 512-bit step (run time: the CPU and OS have AVX-512)"
                          : r.avx2_wide ? "AVX2 FMA register tiles of 6, 5 and 4 query rows x 2 panels over " + wide_panels +
                                              ", 2 components a 256-bit step (run time: the CPU and OS have AVX2, FMA and F16C, not AVX-512)"
                                        : build_vec;
  r.f32 = vec;
  const std::string amx_why = amx_emulated ? "(a test build: the tile instructions run on the software model of amx_emulator.hpp)"
                                           : "(run time: CPU, OS and permission allow it)";
  if (r.amx_bf16)
    r.bf16 = "AMX-BF16 tdpbf16ps tiles, query rounded to bf16 " + amx_why;
  else if (wide_runs<Arch>(storage::bf16))
    r.bf16 = "AVX512-BF16 vdpbf16ps register tiles over " + wide_panels + ", query rounded to bf16 (run time: the CPU and OS have it); AMX not used: " +
             r.amx_reason;
  else if (bf16_rounds_query<Arch>)
    r.bf16 = "AVX512-BF16 vdpbf16ps register tiles, query rounded to bf16 (compile time); AMX not used: " + r.amx_reason;
  else if (wide_avx2_runs<Arch>(storage::bf16))
    r.bf16 = "bf16 widened to float in registers, query in float, AVX2 FMA register tiles of 6, 5 and 4 query rows x 2 panels over " +
             wide_panels + " (run time: the CPU and OS have AVX2, FMA and F16C, not AVX512-BF16); AMX not used: " + r.amx_reason;
  else
    r.bf16 = "bf16 widened to float, " + build_vec + "; AMX not used: " + r.amx_reason;
  r.f16 = "f16 widened to float, " + vec;
  if (r.amx_int8)
    r.i8 = "AMX-INT8 tdpbssd tiles over panels re-laid by AVX512-VBMI, query in two int8 terms " + amx_why;
  else if (ALIGNER_HAVE_VNNI_VBMI && panel_width<Arch> == 16)
    r.i8 = "AVX512-VNNI vpdpwssd register tiles over panels widened to int16 pairs, query in two int8 terms combined in 16 bits (compile "
           "time; AMX-INT8's arithmetic); AMX not used: " + r.amx_int8_reason;
  else if (i8_on_vnni<Arch>())
    r.i8 = "AVX512-VNNI vpdpwssd register tiles over " + wide_panels + " re-laid 16 tokens at a time to int16 pairs (AVX512-VBMI), query in "
           "two int8 terms combined in 16 bits (run time: the CPU and OS have AVX512-VNNI and VBMI; AMX-INT8's arithmetic); AMX not used: " +
           r.amx_int8_reason;
  else
    r.i8 = "i8 widened to float and scaled, " + vec + "; AMX not used: " + r.amx_int8_reason;
  const std::string residual_vector = bf16_rounds_query<Arch> ? std::string("residual panels decoded to bf16 a group at a time, AVX512-BF16 "
                                                                            "vdpbf16ps register tiles, query rounded to bf16 (compile time)")
                                                              : "residual panels decoded to float a group at a time, " + vec;
  // AMX-BF16 takes residual codes where it runs in a 16-wide build; in a narrower one only what VNNI cannot (residual_on_amx).
  const std::string residual_amx = "residual panels decoded to bf16 a group at a time, AMX-BF16 tiles (run time)";
  const std::string residual_amx_narrow = "residual panels decoded to bf16 a group at a time (nbits 1-4: 16 tokens at a time by "
                                          "AVX512-VBMI), AMX-BF16 tiles over " + wide_panels + " (run time)";
  if (r.amx_bf16 && panel_width<Arch> == 16)
    r.residual = residual_amx;
  else if (ALIGNER_HAVE_VNNI_VBMI && panel_width<Arch> == 16)
    r.residual = "nbits 1-4: residual panels decoded to the codec's int8 values a group at a time (AVX512-VBMI), AVX512-VNNI vpdpbusd "
                 "register tiles, query in int8 (compile time); nbits 8: " + residual_vector;
  else if (vnni_runs<Arch>())
    r.residual = "nbits 1-4: residual panels decoded 16 tokens at a time to the codec's int8 values (AVX512-VBMI), AVX512-VNNI vpdpbusd "
                 "register tiles over " + wide_panels + ", query in int8 (run time: the CPU and OS have AVX512-VNNI and VBMI); nbits 8: " +
                 (r.amx_bf16 ? residual_amx_narrow : residual_vector);
  else if (r.amx_bf16)
    r.residual = residual_amx_narrow;
  else
    r.residual = residual_vector;
  r.token_search = "exact scan: f32 on " + vec + "; bf16 on " +
                   (r.amx_bf16                               ? std::string("AMX-BF16 tiles")
                    : wide_runs<Arch>(storage::bf16)         ? "AVX512-BF16 vdpbf16ps tiles over " + wide_panels
                    : wide_avx2_runs<Arch>(storage::bf16)    ? "AVX2 FMA tiles over " + wide_panels + " widened in registers"
                                                             : build_vec) +
                   "; i8 on " +
                   (r.amx_int8 ? std::string("AMX-INT8 tiles")
                    : i8_on_vnni<Arch>() ? "AVX512-VNNI vpdpwssd tiles" + (panel_width<Arch> == 16 ? std::string() : " over " + wide_panels)
                                         : "the float tiles (" + vec + ")");
  r.prefetch = tile_prefetch_to_l2() ? "L2 (prefetcht1: an Intel CPU)" : "L1 (prefetcht0)";
  const std::size_t l1d = cpu().l1d_bytes;
  r.order = cpu().vendor == "GenuineIntel" && l1d > 0
                ? "panel group outer where a tile's panels fill at most 3/4 of the " + std::to_string(l1d >> 10) +
                      " KB L1 data cache (an Intel CPU), else query row block outer"
                : "query row block outer";
  return r;
}

}  // namespace aligner
