// run_kernels.cpp: runs every case of harness.h's add_*_cases under every schedule and prints
// one line per (case, schedule):
//
//   op/shape/dtype  schedule  max|err|  nmse  bound  ok|FAIL
//
// (an expected-failure case prints the launch's error instead, and fails if there was none or
// another), then a summary; exits non-zero if anything failed. Arguments: substrings, a case runs
// if its name contains any (none: every case). Built and run by tests/emulation.rs.
#include <chrono>
#include <cstdio>
#include <cstring>

#include "harness.h"

namespace harness {

std::string lens(const std::vector<unsigned>& seq_offsets) {
    std::string out = "L[";
    for (std::size_t s = 0; s + 1 < seq_offsets.size(); ++s)
        out += (s ? "," : "") + std::to_string(seq_offsets[s + 1] - seq_offsets[s]);
    return out + "]";
}

}  // namespace harness

namespace {

using harness::Case;

// The conversions every kernel's loads and stores go through, checked on every f16 and bf16
// value and on the rounding edge cases (ties to even, overflow, subnormals, NaN).
bool conversions_are_exact() {
    bool ok = true;
    auto check = [&](bool pass, const char* what) {
        if (!pass) {
            printf("FAIL cvt: %s\n", what);
            ok = false;
        }
    };
    for (unsigned h = 0; h < 0x10000; ++h) {
        const bool nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0;
        const unsigned short back = ptx_cvt_f16_f32(ptx_cvt_f32_f16(static_cast<unsigned short>(h)));
        if (nan ? back != 0x7FFF : back != h) {
            check(false, "f16 → f32 → f16 is not the identity");
            break;
        }
        const float b = __uint_as_float(h << 16);
        const unsigned short b_back = ptx_cvt_bf16_f32(b);
        if ((b != b) ? b_back != 0x7FFF : b_back != h) {
            check(false, "bf16 → f32 → bf16 is not the identity");
            break;
        }
    }
    check(ptx_cvt_f16_f32(1.0f + 0x1p-11f) == 0x3C00, "f16: 1 + 2⁻¹¹ ties to even (1)");
    check(ptx_cvt_f16_f32(1.0f + 3 * 0x1p-11f) == 0x3C02, "f16: 1 + 3·2⁻¹¹ ties to even (1 + 2⁻⁹)");
    check(ptx_cvt_f16_f32(65519.0f) == 0x7BFF, "f16: 65519 rounds to 65504");
    check(ptx_cvt_f16_f32(65520.0f) == 0x7C00, "f16: 65520 rounds to infinity");
    check(ptx_cvt_f16_f32(-0x1p-25f) == 0x8000, "f16: −2⁻²⁵ ties to −0");
    check(ptx_cvt_f16_f32(0x1.8p-24f) == 0x0002, "f16: 1.5·2⁻²⁴ ties to even (2·2⁻²⁴)");
    check(ptx_cvt_f16_f32(0x1.ffcp-15f) == 0x0400, "f16: the largest subnormal + ½ ulp rounds to 2⁻¹⁴");
    check(ptx_cvt_bf16_f32(1.0f + 0x1p-8f) == 0x3F80, "bf16: 1 + 2⁻⁸ ties to even (1)");
    check(ptx_cvt_bf16_f32(3.4e38f) == 0x7F80, "bf16: 3.4e38 rounds to infinity");
    check(ptx_cvt_bf16_f32(-std::nanf("")) == 0x7FFF && ptx_cvt_f16_f32(std::nanf("")) == 0x7FFF,
          "NaN → canonical NaN");
    check(ptx_cvt_bf16x2(1.0f, -2.0f) == 0xC0003F80u && ptx_cvt_f16x2(1.0f, -2.0f) == 0xC0003C00u,
          "x2: lo in the low half");
    printf("%-52s %-13s %s\n", "cvt/all-f16-bf16+edges", "-", ok ? "ok" : "FAIL");
    return ok;
}

struct Stats {
    double max_abs, nmse;
};

// NMSE = Σ(got − want)² / Σ want² (Σ(got − want)² when want is all zeros); NaN when `got` holds
// a NaN or infinity.
Stats compare(const std::vector<float>& got, const std::vector<double>& want) {
    double err = 0.0, norm = 0.0, max_abs = 0.0;
    bool finite = got.size() == want.size();
    for (std::size_t i = 0; finite && i < got.size(); ++i) {
        if (!std::isfinite(got[i])) finite = false;
        const double d = got[i] - want[i];
        err += d * d;
        norm += want[i] * want[i];
        max_abs = std::max(max_abs, std::fabs(d));
    }
    if (!finite) return {NAN, NAN};
    return {max_abs, norm == 0.0 ? err : err / norm};
}

// The first few elements that differ most, for a failure.
void print_worst(const std::vector<float>& got, const std::vector<double>& want) {
    std::vector<std::size_t> index(got.size());
    for (std::size_t i = 0; i < index.size(); ++i) index[i] = i;
    auto badness = [&](std::size_t i) {
        const double d = std::fabs(got[i] - want[i]);
        return std::isnan(d) ? INFINITY : d;
    };
    const std::size_t shown = std::min<std::size_t>(4, index.size());
    std::partial_sort(index.begin(), index.begin() + shown, index.end(),
                      [&](std::size_t a, std::size_t b) { return badness(a) > badness(b); });
    printf("      worst:");
    for (std::size_t i = 0; i < shown; ++i) printf(" [%zu] %g vs %g", index[i], got[index[i]], want[index[i]]);
    printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
    harness::Cases cases;
    harness::add_embedding_cases(cases);
    harness::add_gemm_cases(cases);
    harness::add_gemm_sm90_cases(cases);
    harness::add_layernorm_cases(cases);
    harness::add_attention_cases(cases);
    harness::add_pooling_cases(cases);
    harness::add_tma_cases(cases);
    harness::add_cluster_cases(cases);

    const auto start = std::chrono::steady_clock::now();
    int runs = 0, failures = conversions_are_exact() ? 0 : 1;
    for (const Case& c : cases) {
        bool selected = argc == 1;
        for (int a = 1; a < argc; ++a) selected |= c.name.find(argv[a]) != std::string::npos;
        if (!selected) continue;
        const harness::Instance instance = c.make();
        for (const emu::Schedule& schedule : emu::kSchedules) {
            ++runs;
            std::vector<float> got;
            const emu::LaunchError error = instance.run(schedule, got);
            if (c.expect_failure) {
                const bool ok = error.failed && std::strstr(error.message, c.expect_failure);
                printf("%-52s %-13s expected failure (\"%s\"): %s\n", c.name.c_str(), schedule.name,
                       c.expect_failure, error.failed ? error.message : "the launch succeeded");
                if (!ok) {
                    printf("      FAIL: the launch should have failed with \"%s\"\n", c.expect_failure);
                    ++failures;
                }
                continue;
            }
            if (error.failed) {
                printf("%-52s %-13s FAIL: %s\n", c.name.c_str(), schedule.name, error.message);
                ++failures;
                continue;
            }
            const Stats s = compare(got, instance.want);
            const bool ok = s.nmse <= c.bound;  // false for NaN
            printf("%-52s %-13s max|err| %9.2e  nmse %9.2e  <= %7.1e  %s\n", c.name.c_str(), schedule.name, s.max_abs,
                   s.nmse, c.bound, ok ? "ok" : "FAIL");
            if (!ok) {
                print_worst(got, instance.want);
                ++failures;
            }
        }
        fflush(stdout);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    printf("%d runs (%zu schedules each), %d failed, %.1f s\n", runs, std::size(emu::kSchedules), failures, seconds);
    return failures == 0 ? 0 : 1;
}
