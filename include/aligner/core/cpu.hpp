/** @file cpu.hpp
 *  @brief What the CPU this process runs on can do, read at run time, and the switch that lets users and tests
 *  turn the run-time kernels off.
 *
 *  The SIMD width of the kernels is fixed when the user compiles (config.hpp: xsimd's architecture from the
 *  compiler flags). Matrix units are different: Intel AMX needs no compiler flag here (its instructions are issued
 *  by inline assembly), only a CPU that has them, an operating system that saves their state (XCR0 bits 17 and 18)
 *  and, on Linux, the process's permission to use the tile data (arch_prctl(ARCH_REQ_XCOMP_PERM, 18), requested once
 *  per process). So a portable build (no -march, or -march=x86-64-v3) still scores bf16 documents on AMX where the
 *  CPU has it. `cpu()` reads CPUID and XCR0 once; `amx_bf16_usable()` adds the permission and the switch.
 *  `ALIGNER_NO_AMX=1` in the environment, or `set_amx_enabled(false)`, keeps AMX off (tests compare both paths).
 *  AVX-512 is the same for a build of 4- or 8-wide panels (no -march, or -march=x86-64-v3): `avx512_usable()` says whether the tiles of
 *  kernels/wide.hpp, compiled for AVX-512 by target attributes, may run; `ALIGNER_NO_AVX512=1` or
 *  `set_avx512_enabled(false)` keeps them off. A build of 4-wide panels on a CPU with AVX2 but not AVX-512 scores
 *  float, f16, i8 and bf16 panels with the same file's AVX2 tiles instead: `avx2_usable()`, `ALIGNER_NO_AVX2=1`,
 *  `set_avx2_enabled(false)`. */
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define ALIGNER_X86_64_ASM 1
#else
#define ALIGNER_X86_64_ASM 0
#endif

/// AMX kernels are compiled where the assembler can be reached by GCC-style inline assembly on x86-64 Linux (the
/// permission request is a Linux system call). Define ALIGNER_DISABLE_AMX to leave them out altogether.
#if ALIGNER_X86_64_ASM && defined(__linux__) && !defined(ALIGNER_DISABLE_AMX)
#define ALIGNER_HAVE_AMX 1
#else
#define ALIGNER_HAVE_AMX 0
#endif

namespace aligner {

/// True in a test build whose AMX tile instructions run on the software model of kernels/amx_emulator.hpp
/// (ALIGNER_AMX_EMULATE): AMX then counts as usable on any x86-64 Linux CPU that has the engines' vector parts.
inline constexpr bool amx_emulated =
#if ALIGNER_HAVE_AMX && defined(ALIGNER_AMX_EMULATE)
    true;
#else
    false;
#endif

/// Features of the running CPU (CPUID) that the operating system also enables (XCR0).
struct cpu_features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512dq = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vbmi = false, avx512vnni = false, avx512_bf16 = false, avx512_fp16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool os_avx = false, os_avx512 = false, os_amx = false;  ///< XCR0 enables the registers' state
  std::string brand;                                          ///< the CPU's brand string
  std::string vendor;                                         ///< CPUID's vendor string ("GenuineIntel", "AuthenticAMD", ...)
  std::size_t l1d_bytes = 0;  ///< the level-1 data cache of one core (CPUID's cache parameters); 0 where not reported
};

namespace detail {

inline cpu_features read_cpu() noexcept {
  cpu_features f;
#if ALIGNER_X86_64_ASM
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned max_leaf = a;
  for (unsigned word : {b, d, c})
    for (int k = 0; k != 4; ++k) f.vendor += char((word >> (8 * k)) & 0xffu);
  __cpuid_count(1, 0, a, b, c, d);
  const bool osxsave = (c >> 27) & 1u;
  f.fma = (c >> 12) & 1u;
  f.f16c = (c >> 29) & 1u;
  std::uint64_t xcr0 = 0;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (std::uint64_t(hi) << 32) | lo;
  }
  f.os_avx = (xcr0 & 0x6u) == 0x6u;
  f.os_avx512 = f.os_avx && (xcr0 & 0xe0u) == 0xe0u;
  f.os_amx = (xcr0 & 0x60000u) == 0x60000u;
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = (b >> 5) & 1u;
    f.avx512f = (b >> 16) & 1u;
    f.avx512dq = (b >> 17) & 1u;
    f.avx512bw = (b >> 30) & 1u;
    f.avx512vl = (b >> 31) & 1u;
    f.avx512vbmi = (c >> 1) & 1u;
    f.avx512vnni = (c >> 11) & 1u;
    f.avx512_fp16 = (d >> 23) & 1u;
    f.amx_bf16 = (d >> 22) & 1u;
    f.amx_tile = (d >> 24) & 1u;
    f.amx_int8 = (d >> 25) & 1u;
    const unsigned sub_leaves = a;
    if (sub_leaves >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      f.avx512_bf16 = (a >> 5) & 1u;
    }
  }
  // Cache parameters: leaf 4 (Intel) or 0x8000001D (AMD, where leaf 0x80000001 ECX bit 22 announces it), one sub-leaf
  // a cache: EAX[4:0] its type (0 ends the list, 1 data), EAX[7:5] its level; bytes = ways x partitions x line x sets,
  // each field stored minus one (EBX[31:22], EBX[21:12], EBX[11:0], ECX).
  auto l1d_from = [&](unsigned leaf) {
    for (unsigned sub = 0; sub != 16; ++sub) {
      __cpuid_count(leaf, sub, a, b, c, d);
      const unsigned type = a & 0x1fu, level = (a >> 5) & 0x7u;
      if (type == 0) break;
      if (type == 1 && level == 1)
        return std::size_t((b >> 22) + 1) * std::size_t(((b >> 12) & 0x3ffu) + 1) * std::size_t((b & 0xfffu) + 1) * (std::size_t(c) + 1);
    }
    return std::size_t(0);
  };
  if (f.vendor == "GenuineIntel" && max_leaf >= 4) f.l1d_bytes = l1d_from(4);
  __get_cpuid(0x80000000u, &a, &b, &c, &d);
  const unsigned max_extended = a;
  if (f.vendor == "AuthenticAMD" && max_extended >= 0x8000001Du) {
    __get_cpuid(0x80000001u, &a, &b, &c, &d);
    if ((c >> 22) & 1u) f.l1d_bytes = l1d_from(0x8000001Du);
  }
  if (max_extended >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned leaf = 0; leaf != 3; ++leaf) {
      __get_cpuid(0x80000002u + leaf, &a, &b, &c, &d);
      const unsigned words[4] = {a, b, c, d};
      for (int w = 0; w != 4; ++w)
        for (int k = 0; k != 4; ++k) brand[leaf * 16 + unsigned(w) * 4 + unsigned(k)] = char((words[w] >> (8 * k)) & 0xffu);
    }
    f.brand = brand;
    const auto first = f.brand.find_first_not_of(' ');
    f.brand = first == std::string::npos ? std::string() : f.brand.substr(first);
  }
#endif
  return f;
}

/// Linux: asks for the AMX tile data state once per process (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)),
/// by the system call itself so that no POSIX header is needed. 0 on success, else the negated errno.
inline long request_amx_permission() noexcept {
#if ALIGNER_HAVE_AMX
  long ret = 0;
  constexpr long sys_arch_prctl = 158, arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
  __asm__ volatile("syscall" : "=a"(ret) : "0"(sys_arch_prctl), "D"(arch_req_xcomp_perm), "S"(xfeature_xtiledata)
                   : "rcx", "r11", "memory");
  return ret;
#else
  return -38;  // ENOSYS
#endif
}

/// A run-time switch's first state: 0 (turned off) when the environment variable `off` is set to anything but
/// "" or "0", else 1.
inline int switch_from_env(const char* off) noexcept {
  const char* v = std::getenv(off);
  return (v && *v && std::string_view(v) != "0") ? 0 : 1;
}

inline std::atomic<int>& avx512_switch() noexcept {
  static std::atomic<int> on{switch_from_env("ALIGNER_NO_AVX512")};  // 1: allowed, 0: turned off
  return on;
}

inline std::atomic<int>& avx2_switch() noexcept {
  static std::atomic<int> on{switch_from_env("ALIGNER_NO_AVX2")};  // 1: allowed, 0: turned off
  return on;
}

inline std::atomic<int>& vnni_switch() noexcept {
  static std::atomic<int> on{switch_from_env("ALIGNER_NO_VNNI")};  // 1: allowed, 0: turned off
  return on;
}

inline std::atomic<int>& amx_switch() noexcept {
  static std::atomic<int> on{switch_from_env("ALIGNER_NO_AMX")};  // 1: allowed, 0: turned off
  return on;
}

}  // namespace detail

/// The running CPU's features (read once).
inline const cpu_features& cpu() noexcept {
  static const cpu_features f = detail::read_cpu();
  return f;
}

/// True where the CPU has AVX-512 F/BW/VL with VBMI's byte permutes and the OS enables the AVX-512 state: code
/// compiled for that target (`__attribute__((target(...)))`) can run.
inline bool avx512_vbmi_usable() noexcept {
  const cpu_features& f = cpu();
  return f.avx512f && f.avx512bw && f.avx512vl && f.avx512vbmi && f.os_avx512;
}

/// Why the run-time AVX-512 engine of 4- and 8-wide panels (wide.hpp) cannot run: "" when it can, else the first reason.
/// It needs AVX-512 F/BW/VL/DQ with F16C and FMA, and the OS's AVX-512 state.
inline const std::string& avx512_unavailable_reason() {
  static const std::string reason = [] {
    const cpu_features& f = cpu();
    if (!ALIGNER_X86_64_ASM) return std::string("run-time AVX-512 not compiled (needs x86-64 with GCC or Clang)");
    if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma && f.f16c)) return std::string("the CPU has no AVX-512 F/BW/VL/DQ");
    if (!f.os_avx512) return std::string("the operating system does not enable the AVX-512 state (XCR0)");
    return std::string();
  }();
  return reason;
}

/// Turns the run-time AVX-512 engine of 4- and 8-wide panels off (false) or back on (true, where usable). Process-wide;
/// meant for tests and for comparing paths, not to be flipped while searches run.
inline void set_avx512_enabled(bool on) noexcept { detail::avx512_switch().store(on ? 1 : 0, std::memory_order_relaxed); }

/// True when code compiled for AVX-512 F/BW/VL/DQ (`__attribute__((target(...)))`) may run now: the CPU and the OS
/// have it and neither ALIGNER_NO_AVX512 nor set_avx512_enabled(false) turned it off. (A build whose flags already
/// include AVX-512 runs it everywhere regardless: this governs the run-time engines only.)
inline bool avx512_usable() {
  return detail::avx512_switch().load(std::memory_order_relaxed) != 0 && avx512_unavailable_reason().empty();
}

/// Why the run-time AVX2 engine of 4-wide panels (wide.hpp: a portable build's panels on a CPU with AVX2 but no
/// AVX-512) cannot run: "" when it can, else the first reason. It needs AVX2, FMA and F16C, and the OS's AVX state.
inline const std::string& avx2_unavailable_reason() {
  static const std::string reason = [] {
    const cpu_features& f = cpu();
    if (!ALIGNER_X86_64_ASM) return std::string("run-time AVX2 not compiled (needs x86-64 with GCC or Clang)");
    if (!(f.avx2 && f.fma && f.f16c)) return std::string("the CPU has no AVX2 with FMA and F16C");
    if (!f.os_avx) return std::string("the operating system does not enable the AVX state (XCR0)");
    return std::string();
  }();
  return reason;
}

/// Turns the run-time AVX2 engine of 4-wide panels off (false) or back on (true, where usable). Process-wide, for
/// tests and comparisons, as set_avx512_enabled.
inline void set_avx2_enabled(bool on) noexcept { detail::avx2_switch().store(on ? 1 : 0, std::memory_order_relaxed); }

/// True when code compiled for AVX2 + FMA + F16C (`__attribute__((target(...)))`) may run now: the CPU and the OS
/// have them and neither ALIGNER_NO_AVX2 nor set_avx2_enabled(false) turned it off.
inline bool avx2_usable() {
  return detail::avx2_switch().load(std::memory_order_relaxed) != 0 && avx2_unavailable_reason().empty();
}

/// As avx512_usable, with AVX512-BF16's vdpbf16ps as well.
inline bool avx512_bf16_usable() { return avx512_usable() && cpu().avx512_bf16; }

/// Turns the run-time VNNI int8 tiles of 4- and 8-wide panels off (false) or back on (true, where usable); those
/// storages then take the run-time AVX-512 FMA tiles. Process-wide, for tests and comparisons, as set_avx512_enabled.
inline void set_vnni_enabled(bool on) noexcept { detail::vnni_switch().store(on ? 1 : 0, std::memory_order_relaxed); }

/// As avx512_usable, with AVX512-VNNI (vpdpbusd, vpdpwssd) and AVX512-VBMI (vpermb, vpmultishiftqb) as well, and
/// neither ALIGNER_NO_VNNI nor set_vnni_enabled(false): the run-time int8 tiles of the i8 store (int8_vnni.hpp) and of
/// residual codes (residual.hpp) over 4- and 8-wide panels. (A build with AVX512-VNNI and VBMI in its flags runs its
/// own VNNI tiles regardless.)
inline bool avx512_vnni_vbmi_usable() {
  return avx512_usable() && detail::vnni_switch().load(std::memory_order_relaxed) != 0 && cpu().avx512vnni && cpu().avx512vbmi;
}

namespace detail {

/// The process's AMX tile data permission: 0 once granted, else the negated errno (asked once per process).
inline long amx_permission() noexcept {
  static const long rc = request_amx_permission();
  return rc;
}

/// The first reason an AMX engine cannot run: `unit` names the instructions it needs ("AMX-BF16"), `has_unit` says
/// the CPU has them, `vector_gap` is what it lacks besides ("" when nothing).
inline std::string amx_unavailable(const char* unit, bool has_unit, const std::string& vector_gap) {
  if (!ALIGNER_HAVE_AMX) return "AMX kernels not compiled (needs x86-64 Linux with GCC or Clang)";
  if (amx_emulated) return vector_gap;  // a test build: the tiles run on a software model whatever the CPU
  if (!cpu().amx_tile || !has_unit) return std::string("the CPU has no ") + unit;
  if (!cpu().os_amx) return "the operating system does not enable the AMX tile state (XCR0)";
  if (!vector_gap.empty()) return vector_gap;
  const long rc = amx_permission();
  if (rc != 0) return "the kernel refused the AMX tile data permission (arch_prctl returned " + std::to_string(rc) + ")";
  return std::string();
}
}  // namespace detail

/// Why AMX-BF16 can or cannot run in this process: "" when it can, else the first reason it cannot.
inline const std::string& amx_bf16_unavailable_reason() {
  static const std::string reason =
      detail::amx_unavailable("AMX-BF16", cpu().amx_bf16, cpu().avx512f ? "" : "the CPU has no AVX-512");
  return reason;
}

/// Why AMX-INT8 can or cannot score int8 documents in this process: "" when it can, else the first reason. Besides
/// the tiles, the engine re-lays int8 panels with AVX512-VBMI byte permutes (every CPU with AMX has them), issued
/// from functions compiled for that target, so no compiler flag is needed.
inline const std::string& amx_int8_unavailable_reason() {
  static const std::string reason = detail::amx_unavailable(
      "AMX-INT8", cpu().amx_int8,
      avx512_vbmi_usable() ? "" : "the CPU or the OS lacks AVX-512 BW/VL/VBMI (the int8 panels are re-laid with them)");
  return reason;
}

/// Turns the run-time AMX kernels off (false) or back on (true, where usable). Process-wide; meant for tests and
/// for comparing paths, not to be flipped while searches run (a call in flight keeps the path it started with).
inline void set_amx_enabled(bool on) noexcept { detail::amx_switch().store(on ? 1 : 0, std::memory_order_relaxed); }

/// True when bf16 documents are scored by AMX-BF16 tiles now: the CPU, the OS and the permission allow it and
/// neither ALIGNER_NO_AMX nor set_amx_enabled(false) turned it off.
inline bool amx_bf16_usable() {
  return detail::amx_switch().load(std::memory_order_relaxed) != 0 && amx_bf16_unavailable_reason().empty();
}

/// True when int8 documents are scored by AMX-INT8 tiles now (the query quantised to int8 per row): as
/// amx_bf16_usable, for AMX-INT8 and the VBMI re-layout.
inline bool amx_int8_usable() {
  return detail::amx_switch().load(std::memory_order_relaxed) != 0 && amx_int8_unavailable_reason().empty();
}

}  // namespace aligner
