// tensor_map.h: the emulation's CUtensorMap, host-side: what cuTensorMapEncodeTiled (the emulated
// driver, driver/driver.cpp) and the harness (emu::encode_tensor_map_2d) write into the 128
// opaque bytes, and what tma.h's tma_load_2d decodes.
//
// Only what gemm_sm90.cu uses is emulated: rank 2, 16-bit elements (bf16 or f16), tiled mode,
// element strides 1, no interleave, 128-byte swizzle, zero fill out of bounds. The encoder
// validates as the real one does (the address 16-byte aligned, the row stride a multiple of 16
// bytes, box dimensions 1..256, the box's inner extent a multiple of 16 bytes and at most the
// swizzle's 128) and refuses, naming it, anything outside what is emulated.
//
// Format (TensorMapData, in the first bytes of the 128): a magic number, so that a map the
// emulation did not encode (zeros, poison, a real driver's) fails the launch, then the decoded
// fields, then a checksum of them, so that a map overwritten after encoding fails too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace emu {

// cuda.h's CUtensorMapDataType values of the element types emulated.
constexpr unsigned kTensorMapFloat16 = 6, kTensorMapBfloat16 = 9;
// CUtensorMapSwizzle_enum: CU_TENSOR_MAP_SWIZZLE_128B.
constexpr unsigned kTensorMapSwizzle128B = 3;
constexpr std::size_t kTensorMapBytes = 128;

struct TensorMapData {
    std::uint64_t magic;
    const unsigned char* base;     // the element (0, 0)
    std::uint64_t inner_dim;       // elements per row (k)
    std::uint64_t outer_dim;       // rows
    std::uint64_t row_stride;      // bytes from a row to the next
    std::uint32_t box_inner;       // elements
    std::uint32_t box_outer;       // rows
    std::uint32_t data_type;       // kTensorMapBfloat16 or kTensorMapFloat16
    std::uint32_t element_bytes;   // 2
    std::uint64_t checksum;        // of the fields above
};
static_assert(sizeof(TensorMapData) <= kTensorMapBytes, "the emulated tensor map fits a CUtensorMap");

constexpr std::uint64_t kTensorMapMagic = 0x454D42452D544D41ull;  // "AMT-EBME"

inline std::uint64_t tensor_map_checksum(const TensorMapData& d) {
    const std::uint64_t words[] = {d.magic, reinterpret_cast<std::uintptr_t>(d.base), d.inner_dim, d.outer_dim,
                                   d.row_stride, std::uint64_t(d.box_inner) << 32 | d.box_outer,
                                   std::uint64_t(d.data_type) << 32 | d.element_bytes};
    std::uint64_t h = 0xCBF29CE484222325ull;
    for (std::uint64_t w : words) h = (h ^ w) * 0x100000001B3ull;
    return h;
}

// cuTensorMapEncodeTiled's validation and encoding, its arguments as cuda.h has them (`dims`:
// `rank` sizes, innermost first; `strides`: rank − 1 byte strides of dimensions 1..; `box` and
// `element_strides`: rank each). Writes the 128 bytes at `map` and returns null, or returns why
// the arguments are invalid or not emulated (and leaves `map` alone).
inline const char* encode_tensor_map(void* map, unsigned data_type, unsigned rank, const void* base,
                                     const std::uint64_t* dims, const std::uint64_t* strides,
                                     const std::uint32_t* box, const std::uint32_t* element_strides,
                                     unsigned interleave, unsigned swizzle, unsigned l2_promotion, unsigned oob_fill) {
    if (!map) return "the tensor map pointer is null";
    if (reinterpret_cast<std::uintptr_t>(map) % 64 != 0) return "the tensor map is not 64-byte aligned";
    if (data_type != kTensorMapBfloat16 && data_type != kTensorMapFloat16)
        return "data type not emulated (only BFLOAT16 = 9 and FLOAT16 = 6)";
    if (rank != 2) return "rank not emulated (only 2)";
    if (!base || !dims || !strides || !box || !element_strides) return "a null argument";
    if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0) return "the global address is not 16-byte aligned";
    const std::uint64_t element_bytes = 2;
    for (unsigned i = 0; i < rank; ++i)
        if (dims[i] == 0 || dims[i] > (1ull << 32)) return "a global dimension is 0 or above 2^32";
    if (strides[0] % 16 != 0 || strides[0] >= (1ull << 40))
        return "the global stride is not a multiple of 16 bytes below 2^40";
    if (strides[0] < dims[0] * element_bytes) return "the global stride is smaller than a row (dims[0] elements)";
    for (unsigned i = 0; i < rank; ++i)
        if (box[i] == 0 || box[i] > 256) return "a box dimension is outside 1..256";
    if (box[0] * element_bytes % 16 != 0) return "the box's inner extent is not a multiple of 16 bytes";
    for (unsigned i = 0; i < rank; ++i) {
        if (element_strides[i] == 0 || element_strides[i] > 8) return "an element stride is outside 1..8";
        if (element_strides[i] != 1) return "element strides other than 1 are not emulated";
    }
    if (interleave > 2) return "invalid interleave";
    if (interleave != 0) return "interleave not emulated (only CU_TENSOR_MAP_INTERLEAVE_NONE)";
    if (swizzle > 3) return "invalid swizzle";
    if (swizzle != kTensorMapSwizzle128B) return "swizzle not emulated (only CU_TENSOR_MAP_SWIZZLE_128B)";
    if (box[0] * element_bytes > 128) return "the box's inner extent exceeds the 128-byte swizzle (128 bytes)";
    if (l2_promotion > 3) return "invalid L2 promotion";
    if (oob_fill > 1) return "invalid out-of-bounds fill";
    if (oob_fill != 0) return "out-of-bounds fill not emulated (only CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE: zeros)";

    TensorMapData d{};
    d.magic = kTensorMapMagic;
    d.base = static_cast<const unsigned char*>(base);
    d.inner_dim = dims[0];
    d.outer_dim = dims[1];
    d.row_stride = strides[0];
    d.box_inner = box[0];
    d.box_outer = box[1];
    d.data_type = data_type;
    d.element_bytes = static_cast<std::uint32_t>(element_bytes);
    d.checksum = tensor_map_checksum(d);
    std::memset(map, 0, kTensorMapBytes);
    std::memcpy(map, &d, sizeof d);
    return nullptr;
}

// The harness's encoder: a 2-D tensor of `outer_dim` rows of `inner_dim` 16-bit elements, rows
// `row_stride_bytes` apart from `base`, boxes of `box_outer` rows × `box_inner` elements,
// 128-byte swizzle, zero fill; into `map` (a 64-byte aligned TensorMap, 128 bytes). Returns null,
// or why the arguments are invalid (as cuTensorMapEncodeTiled would refuse them).
[[nodiscard]] inline const char* encode_tensor_map_2d(void* map, const void* base, std::uint64_t inner_dim,
                                                      std::uint64_t outer_dim, std::uint64_t row_stride_bytes,
                                                      std::uint32_t box_inner, std::uint32_t box_outer,
                                                      unsigned data_type = kTensorMapBfloat16) {
    const std::uint64_t dims[2] = {inner_dim, outer_dim}, strides[1] = {row_stride_bytes};
    const std::uint32_t box[2] = {box_inner, box_outer}, element_strides[2] = {1, 1};
    return encode_tensor_map(map, data_type, 2, base, dims, strides, box, element_strides, 0, kTensorMapSwizzle128B,
                             0, 0);
}

// The map at `map` (128 bytes) if the emulation encoded it and it is intact: true and `out`.
inline bool decode_tensor_map(const void* map, TensorMapData& out) {
    std::memcpy(&out, map, sizeof out);
    return out.magic == kTensorMapMagic && out.checksum == tensor_map_checksum(out);
}

}  // namespace emu
