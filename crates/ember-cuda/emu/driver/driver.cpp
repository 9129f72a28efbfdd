// driver.cpp: an emulated CUDA driver. Built into a libcuda.so (scripts/emulated-cuda.sh), it
// implements the subset of the driver API that cudarc 0.19.10 calls for Ember, so that the
// unchanged Rust host path (CudaDevice::open, the launchers, CudaBertModel, `--device cuda`) runs
// on the CPU, its kernels on the emulator (emulation.h) compiled from kernels/*.cu.
//
// - One device, "Ember emulated sm_90 (CPU, crates/ember-cuda/emu)": compute capability 9.0,
//   132 multiprocessors, an H100's launch limits (device_attribute). Memory pools are not
//   supported, so cudarc allocates with cuMemAlloc.
// - Device memory is host memory: a device pointer is the address of a 256-byte aligned host
//   allocation, filled with 0xFF bytes (NaN in f32, bf16 and f16) so that reading memory never
//   written shows. Every allocation is tracked, and a copy or memset whose device range is not
//   inside one live allocation fails with CUDA_ERROR_INVALID_VALUE and a message on stderr.
//   Kernels access memory directly: their out-of-bounds accesses are not caught here (they are
//   under AddressSanitizer in tests/emulation.rs).
// - Streams and events are synchronous: work runs during the call that queues it, so
//   synchronising does nothing and an event's time is when it was recorded (elapsed times are the
//   emulation's own, in wall-clock milliseconds). The exception: behind a cuStreamWaitValue32 on
//   a word not yet set (CudaDevice::time_each_ms's gate), launches and event records are queued
//   (one queue for every stream) and run at the first driver call after the word is set, or in
//   a call that must wait for them (synchronisations, copies, frees), which polls the word with
//   the driver's lock released; cuEventQuery says CUDA_ERROR_NOT_READY for a queued record, and
//   cuEventSynchronize waits for that record only. Copies and memsets, even the async ones, wait
//   for the whole queue (a GPU would queue them behind the wait).
// - cuModuleLoadData takes the CUBIN NVRTC built: it must be an ELF image for sm_90, and every
//   kernel in it must be in the registry (registry.h). The image is kept for its kernels' names,
//   parameter sizes and __launch_bounds__; the code that runs is the registry's host build.
// - cuLaunchKernel refuses what the real driver refuses (block and grid limits, the kernel's
//   __launch_bounds__, dynamic shared memory above 48 KiB without the function's opt-in or above
//   the opt-in, a grid x that is not a multiple of the kernel's __cluster_dims__ x), unpacks
//   `kernelParams` by the kernel's C++ signature and runs the grid with emu::run_grid in
//   ascending schedule before returning, in clusters when the kernel declares them
//   (EMBER_CLUSTER_DIMS, registry.h; the emulator runs a cluster's CTAs together). A kernel fault (an emulator
//   LaunchError) is printed with the kernel's name, returns CUDA_ERROR_LAUNCH_FAILED, and is
//   sticky, as on a GPU: every later call on the context returns it until the primary context is
//   released by all its users and retained afresh.
// - One context, the device's primary context, current on every thread while retained. Every
//   entry point holds one process-wide lock: launches from several threads run one at a time.
//
// - cuTensorMapEncodeTiled writes the emulation's tensor map (emu/tensor_map.h: rank 2, bf16/f16,
//   128-byte swizzle), validating as the real one does, and also that the tensor lies inside one
//   live allocation; a kernel's tma_load_2d (emu/tma.h) reads it. A by-value CUtensorMap kernel
//   parameter (128 bytes, 64-byte aligned) is unpacked like any other.
//
// Limits: no asynchrony (a race between streams, or a missing synchronisation before a host
// read, cannot show); static __shared__ memory is not counted against the shared-memory limits;
// no memory model; anything cudarc calls that is not below fails to resolve (cudarc panics naming
// the symbol): add it here.
#include <elf.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <thread>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "registry.h"
#include "tensor_map.h"

namespace ember_driver {
namespace {

// ---- the driver API's types and constants (values as in cuda.h) ----

using CUresult = int;
constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_INVALID_VALUE = 1;
constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
constexpr CUresult CUDA_ERROR_NOT_INITIALIZED = 3;
constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;
constexpr CUresult CUDA_ERROR_INVALID_DEVICE = 101;
constexpr CUresult CUDA_ERROR_INVALID_IMAGE = 200;
constexpr CUresult CUDA_ERROR_INVALID_CONTEXT = 201;
constexpr CUresult CUDA_ERROR_NO_BINARY_FOR_GPU = 209;
constexpr CUresult CUDA_ERROR_INVALID_HANDLE = 400;
constexpr CUresult CUDA_ERROR_NOT_FOUND = 500;
constexpr CUresult CUDA_ERROR_NOT_READY = 600;
constexpr CUresult CUDA_ERROR_LAUNCH_FAILED = 719;
constexpr CUresult CUDA_ERROR_NOT_SUPPORTED = 801;

constexpr unsigned kComputeMajor = 9, kComputeMinor = 0;
constexpr int kMultiprocessors = 132;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr std::size_t kDefaultSmemPerBlock = 48 * 1024;
constexpr std::size_t kOptinSmemPerBlock = 227 * 1024;
constexpr std::size_t kAllocationAlignment = 256;
constexpr const char kDeviceName[] = "Ember emulated sm_90 (CPU, crates/ember-cuda/emu)";

constexpr int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
constexpr int CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT = 9;
constexpr unsigned CU_EVENT_DISABLE_TIMING = 2;

// ---- the driver's state ----

struct Context {
    unsigned retains = 0;
    CUresult sticky = CUDA_SUCCESS;  // the first kernel fault, returned by every later call
};

struct Module;

struct Function {
    const KernelEntry* entry;
    Module* module;
    unsigned max_threads;  // __launch_bounds__, from the CUBIN (kMaxThreadsPerBlock without)
    std::size_t max_dynamic_smem = kDefaultSmemPerBlock;
};

struct Module {
    std::map<std::string, Function> functions;  // every kernel of the image, by name
};

struct Stream {};

struct Event {
    unsigned flags;
    bool recorded = false;
    std::chrono::steady_clock::time_point time;
    bool pending = false;  // its record is queued behind a stream wait (g_pending)
    std::uint64_t serial = 0;  // tells a queued record its event from a later one at the same address
    std::uint64_t latest = 0;  // the ticket of its latest record: only that one's run clears `pending`
};

// Work queued behind a stream wait that was not yet satisfied (cuStreamWaitValue32): every
// stream's work in one order (the emulator runs streams in the order work is queued anyway).
// An item is a wait (the word at `address` must reach `value`) or work to run.
struct Pending {
    std::uintptr_t address = 0;
    std::uint32_t value = 0;
    std::function<void()> work;
};

std::mutex g_lock;
bool g_initialized;
Context g_context;
std::map<std::uintptr_t, std::size_t> g_allocations;  // device pointer → bytes
std::set<Module*> g_modules;
std::set<Stream*> g_streams;
std::set<void*> g_host_allocations;  // cuMemHostAlloc's
std::set<Event*> g_events;
std::deque<Pending> g_pending;
std::uint64_t g_event_serial, g_record_ticket;

__attribute__((format(printf, 1, 2))) void report(const char* format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, "ember emulated CUDA driver: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
}

// CU_STREAM_WAIT_VALUE_GEQ as the driver defines it: a cyclic comparison, (int32_t)(word - value) >= 0,
// so that a word of 0xFFFFFFFF does not meet a wait for 1 (on an H200 such a wait never ends).
bool wait_met(std::uint32_t word, std::uint32_t value) {
    return static_cast<std::int32_t>(word - value) >= 0;
}

// Runs the queued work up to the first wait whose word has not reached its value; whether the
// queue is now empty. Every entry point calls it first (EMBER_LOCK): a wait is let through at
// the first driver call after the host has set its word.
bool drain() {
    while (!g_pending.empty()) {
        const Pending& front = g_pending.front();
        if (front.address &&
            !wait_met(__atomic_load_n(reinterpret_cast<const std::uint32_t*>(front.address), __ATOMIC_SEQ_CST),
                      front.value))
            return false;
        Pending item = std::move(g_pending.front());
        g_pending.pop_front();
        if (item.work) item.work();
    }
    return true;
}

// For a call that must wait for the queued work (a synchronisation, a copy, a free): polls the
// waits' words with the lock released, as a GPU's stream waits for another host thread to set
// them. A wait still unmet after a minute is reported, the queue dropped and the context
// faulted (as a hung GPU would be, but the tests go on).
CUresult settle(std::unique_lock<std::mutex>& hold, const std::function<bool()>& done = {}) {
    const auto start = std::chrono::steady_clock::now();
    while (!drain() && !(done && done())) {
        if (std::chrono::steady_clock::now() - start > std::chrono::seconds(60)) {
            report("a stream has waited over 60 s for the word at 0x%zx to reach %u; its queued work is dropped",
                   static_cast<std::size_t>(g_pending.front().address), g_pending.front().value);
            for (Event* event : g_events) event->pending = false;
            g_pending.clear();
            g_context.sticky = CUDA_ERROR_LAUNCH_FAILED;
            return CUDA_ERROR_LAUNCH_FAILED;
        }
        hold.unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        hold.lock();
    }
    return CUDA_SUCCESS;
}

// The context's state for a call that needs an initialised driver and a live context.
CUresult context_state() {
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (g_context.retains == 0) return CUDA_ERROR_INVALID_CONTEXT;
    return g_context.sticky;
}

bool valid_stream(void* stream) {
    // 0: the legacy default stream; 1 and 2: CU_STREAM_LEGACY and CU_STREAM_PER_THREAD.
    const auto handle = reinterpret_cast<std::uintptr_t>(stream);
    return handle <= 2 || g_streams.count(static_cast<Stream*>(stream)) != 0;
}

// Whether [pointer, pointer + bytes) lies inside one live allocation; if not, says so for `call`.
bool device_range_ok(const char* call, const char* what, std::uintptr_t pointer, std::size_t bytes) {
    auto after = g_allocations.upper_bound(pointer);
    if (after != g_allocations.begin()) {
        const auto& [start, size] = *std::prev(after);
        if (pointer - start <= size && bytes <= size - (pointer - start)) return true;
        report("%s: %s [0x%zx, +%zu bytes) is not inside one live allocation (the nearest below starts at 0x%zx, "
               "%zu bytes)",
               call, what, static_cast<std::size_t>(pointer), bytes, static_cast<std::size_t>(start), size);
    } else {
        report("%s: %s [0x%zx, +%zu bytes) is not inside one live allocation (none starts at or below it)", call,
               what, static_cast<std::size_t>(pointer), bytes);
    }
    return false;
}

// ---- the CUBIN ----

// What cuModuleLoadData reads from the image: each kernel's name, its parameters' sizes and its
// __launch_bounds__ (0 without).
struct CubinKernel {
    std::string name;
    std::vector<std::size_t> param_sizes;
    unsigned max_threads = 0;
};

// EIATTR codes of a kernel's .nv.info.<name> section: KPARAM_INFO's 12 bytes are an index
// (u32), the ordinal (u16), the offset (u16) and flags whose bits 18..31 are the size;
// MAX_THREADS's are __launch_bounds__'s x, y, z (u32 each).
constexpr unsigned char EIATTR_MAX_THREADS = 0x05, EIATTR_KPARAM_INFO = 0x17;
constexpr unsigned char EIFMT_SVAL = 0x04;  // attribute with a u16 size and that many bytes
constexpr unsigned char STO_CUDA_ENTRY = 0x10;  // st_other of a kernel's symbol

// Parses `image` (a CUBIN) into its kernels, or says why it is not one for this device.
bool parse_cubin(const unsigned char* image, std::vector<CubinKernel>& kernels, std::string& why) {
    const auto* header = reinterpret_cast<const Elf64_Ehdr*>(image);
    if (std::memcmp(header->e_ident, ELFMAG, SELFMAG) != 0 || header->e_ident[EI_CLASS] != ELFCLASS64) {
        why = "the image is not a 64-bit ELF file (PTX and fatbins are not accepted: pass NVRTC's CUBIN)";
        return false;
    }
    if (header->e_machine != EM_CUDA) {
        why = "the ELF image is not for a CUDA GPU (e_machine " + std::to_string(header->e_machine) + ")";
        return false;
    }
    // e_flags: bits 0..7 the SM the code is for, bits 16..23 the virtual architecture.
    const unsigned sm = header->e_flags & 0xFF;
    if (sm != kComputeMajor * 10 + kComputeMinor) {
        why = "the CUBIN is for sm_" + std::to_string(sm) + ", the emulated device is sm_90";
        return false;
    }
    const auto* sections = reinterpret_cast<const Elf64_Shdr*>(image + header->e_shoff);
    const char* section_names = reinterpret_cast<const char*>(image + sections[header->e_shstrndx].sh_offset);
    std::map<std::string, const Elf64_Shdr*> info;  // kernel name → its .nv.info.<name>
    for (unsigned s = 0; s < header->e_shnum; ++s) {
        const char* name = section_names + sections[s].sh_name;
        if (std::strncmp(name, ".nv.info.", 9) == 0) info[name + 9] = &sections[s];
    }
    for (unsigned s = 0; s < header->e_shnum; ++s) {
        if (sections[s].sh_type != SHT_SYMTAB) continue;
        const auto* symbols = reinterpret_cast<const Elf64_Sym*>(image + sections[s].sh_offset);
        const char* names = reinterpret_cast<const char*>(image + sections[sections[s].sh_link].sh_offset);
        for (std::size_t i = 0; i < sections[s].sh_size / sizeof(Elf64_Sym); ++i) {
            const Elf64_Sym& symbol = symbols[i];
            if (ELF64_ST_TYPE(symbol.st_info) != STT_FUNC || !(symbol.st_other & STO_CUDA_ENTRY)) continue;
            CubinKernel kernel;
            kernel.name = names + symbol.st_name;
            auto found = info.find(kernel.name);
            if (found != info.end()) {
                const unsigned char* p = image + found->second->sh_offset;
                const unsigned char* end = p + found->second->sh_size;
                while (p + 4 <= end) {
                    const unsigned char format = p[0], attribute = p[1];
                    std::uint16_t size = 0;
                    if (format == EIFMT_SVAL) std::memcpy(&size, p + 2, sizeof size);
                    const unsigned char* value = p + 4;
                    if (format == EIFMT_SVAL && attribute == EIATTR_KPARAM_INFO && size >= 12) {
                        std::uint16_t ordinal;
                        std::uint32_t flags;
                        std::memcpy(&ordinal, value + 4, sizeof ordinal);
                        std::memcpy(&flags, value + 8, sizeof flags);
                        if (kernel.param_sizes.size() <= ordinal) kernel.param_sizes.resize(ordinal + 1u);
                        kernel.param_sizes[ordinal] = (flags >> 18) & 0x3FFF;
                    } else if (format == EIFMT_SVAL && attribute == EIATTR_MAX_THREADS && size >= 12) {
                        std::uint32_t xyz[3];
                        std::memcpy(xyz, value, sizeof xyz);
                        kernel.max_threads = xyz[0] * xyz[1] * xyz[2];
                    }
                    p = value + (format == EIFMT_SVAL ? size : 0);
                }
            }
            kernels.push_back(std::move(kernel));
        }
    }
    return true;
}

// The registry's entry for `name`, or null.
const KernelEntry* find_entry(const std::string& name, const char** file) {
#define EMBER_KERNEL_TABLE_ADDRESS(f) &kernels_##f,
    static const KernelTable* const tables[] = {EMBER_KERNEL_FILES(EMBER_KERNEL_TABLE_ADDRESS)};
#undef EMBER_KERNEL_TABLE_ADDRESS
    for (const KernelTable* table : tables)
        for (std::size_t i = 0; i < table->count; ++i)
            if (name == table->entries[i].name) {
                *file = table->file;
                return &table->entries[i];
            }
    return nullptr;
}

// ---- device attributes ----

// The value of CUdevice_attribute `attribute`: an H100's where it matters to a launch, 0 for
// the features not emulated (memory pools, managed memory, …).
int device_attribute(int attribute) {
    switch (attribute) {
    case 1: return static_cast<int>(kMaxThreadsPerBlock);  // MAX_THREADS_PER_BLOCK
    case 2: return 1024;  // MAX_BLOCK_DIM_X
    case 3: return 1024;  // MAX_BLOCK_DIM_Y
    case 4: return 64;    // MAX_BLOCK_DIM_Z
    case 5: return 2147483647;  // MAX_GRID_DIM_X
    case 6: return 65535;  // MAX_GRID_DIM_Y
    case 7: return 65535;  // MAX_GRID_DIM_Z
    case 8: return static_cast<int>(kDefaultSmemPerBlock);  // MAX_SHARED_MEMORY_PER_BLOCK
    case 9: return 65536;  // TOTAL_CONSTANT_MEMORY
    case 10: return 32;    // WARP_SIZE
    case 11: return 2147483647;  // MAX_PITCH
    case 12: return 65536;  // MAX_REGISTERS_PER_BLOCK
    case 13: return 1980000;  // CLOCK_RATE (kHz)
    case 14: return 512;  // TEXTURE_ALIGNMENT
    case 16: return kMultiprocessors;  // MULTIPROCESSOR_COUNT
    case 19: return 1;  // INTEGRATED: host memory is device memory
    case 20: return 1;  // CAN_MAP_HOST_MEMORY
    case 30: return 512;  // SURFACE_ALIGNMENT
    case 31: return 1;  // CONCURRENT_KERNELS
    case 36: return 2619000;  // MEMORY_CLOCK_RATE (kHz)
    case 37: return 5120;  // GLOBAL_MEMORY_BUS_WIDTH
    case 38: return 50 * 1024 * 1024;  // L2_CACHE_SIZE
    case 39: return 2048;  // MAX_THREADS_PER_MULTIPROCESSOR
    case 41: return 1;  // UNIFIED_ADDRESSING
    case 75: return static_cast<int>(kComputeMajor);  // COMPUTE_CAPABILITY_MAJOR
    case 76: return static_cast<int>(kComputeMinor);  // COMPUTE_CAPABILITY_MINOR
    case 81: return 228 * 1024;  // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
    case 82: return 65536;  // MAX_REGISTERS_PER_MULTIPROCESSOR
    case 97: return static_cast<int>(kOptinSmemPerBlock);  // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    case 106: return 32;  // MAX_BLOCKS_PER_MULTIPROCESSOR
    case 111: return 1024;  // RESERVED_SHARED_MEMORY_PER_BLOCK
    case 120: return 1;  // CLUSTER_LAUNCH (1-D clusters along x, emu/emulation.h)
    default: return 0;  // MEMORY_POOLS_SUPPORTED (115) among them
    }
}

const char* error_name(CUresult result) {
    switch (result) {
    case CUDA_SUCCESS: return "CUDA_SUCCESS";
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case CUDA_ERROR_INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
    case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case CUDA_ERROR_NO_BINARY_FOR_GPU: return "CUDA_ERROR_NO_BINARY_FOR_GPU";
    case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case CUDA_ERROR_NOT_READY: return "CUDA_ERROR_NOT_READY";
    case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
    case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
    default: return nullptr;
    }
}

const char* error_string(CUresult result) {
    switch (result) {
    case CUDA_SUCCESS: return "no error";
    case CUDA_ERROR_INVALID_VALUE: return "invalid argument";
    case CUDA_ERROR_OUT_OF_MEMORY: return "out of memory";
    case CUDA_ERROR_NOT_INITIALIZED: return "initialization error";
    case CUDA_ERROR_INVALID_DEVICE: return "invalid device ordinal";
    case CUDA_ERROR_INVALID_IMAGE: return "device kernel image is invalid";
    case CUDA_ERROR_INVALID_CONTEXT: return "invalid device context";
    case CUDA_ERROR_NO_BINARY_FOR_GPU: return "no kernel image is available for execution on the device";
    case CUDA_ERROR_INVALID_HANDLE: return "invalid resource handle";
    case CUDA_ERROR_NOT_FOUND: return "named symbol not found";
    case CUDA_ERROR_NOT_READY: return "device not ready";
    case CUDA_ERROR_LAUNCH_FAILED: return "unspecified launch failure";
    case CUDA_ERROR_NOT_SUPPORTED: return "operation not supported";
    default: return nullptr;
    }
}

// ---- memory ----

CUresult allocate(std::uintptr_t* dptr, std::size_t bytes) {
    if (!dptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    const std::size_t rounded = (bytes + kAllocationAlignment - 1) / kAllocationAlignment * kAllocationAlignment;
    void* memory = aligned_alloc(kAllocationAlignment, rounded);
    if (!memory) return CUDA_ERROR_OUT_OF_MEMORY;
    std::memset(memory, 0xFF, rounded);
    *dptr = reinterpret_cast<std::uintptr_t>(memory);
    g_allocations[*dptr] = bytes;
    return CUDA_SUCCESS;
}

CUresult release(std::uintptr_t dptr) {
    auto found = g_allocations.find(dptr);
    if (found == g_allocations.end()) {
        report("cuMemFree: 0x%zx is not the start of a live allocation", static_cast<std::size_t>(dptr));
        return CUDA_ERROR_INVALID_VALUE;
    }
    free(reinterpret_cast<void*>(dptr));
    g_allocations.erase(found);
    return CUDA_SUCCESS;
}

CUresult copy(const char* call, void* dst, bool dst_device, const void* src, bool src_device, std::size_t bytes) {
    const auto d = reinterpret_cast<std::uintptr_t>(dst), s = reinterpret_cast<std::uintptr_t>(src);
    if ((dst_device && !device_range_ok(call, "destination", d, bytes)) ||
        (src_device && !device_range_ok(call, "source", s, bytes)))
        return CUDA_ERROR_INVALID_VALUE;
    if (bytes) std::memmove(dst, src, bytes);
    return CUDA_SUCCESS;
}

// ---- launching ----

CUresult launch(Function* f, const LaunchShape& shape, void** params, void** extra) {
    const KernelEntry& entry = *f->entry;
    char config[160];
    snprintf(config, sizeof config, "%s<<<(%u,%u,%u), (%u,%u,%u), %zu>>>", entry.name, shape.grid.x, shape.grid.y,
             shape.grid.z, shape.block.x, shape.block.y, shape.block.z, shape.dynamic_smem);
    const unsigned long long threads = 1ull * shape.block.x * shape.block.y * shape.block.z;
    const char* refused = nullptr;
    if (extra) refused = "the `extra` argument is not emulated (pass kernelParams)";
    else if (!params && entry.param_count) refused = "kernelParams is null";
    else if (shape.grid.x == 0 || shape.grid.y == 0 || shape.grid.z == 0 || shape.block.x == 0 ||
             shape.block.y == 0 || shape.block.z == 0)
        refused = "a grid or block dimension is 0";
    else if (shape.block.x > 1024 || shape.block.y > 1024 || shape.block.z > 64 || threads > kMaxThreadsPerBlock)
        refused = "more threads per block than the device allows (1024; block x, y ≤ 1024, z ≤ 64)";
    else if (threads > f->max_threads) refused = "more threads per block than the kernel's __launch_bounds__";
    else if (shape.grid.x > 2147483647u || shape.grid.y > 65535 || shape.grid.z > 65535)
        refused = "grid y or z above 65535";
    else if (shape.dynamic_smem > f->max_dynamic_smem)
        refused = f->max_dynamic_smem == kDefaultSmemPerBlock
                      ? "dynamic shared memory above 48 KiB without cuFuncSetAttribute("
                        "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)"
                      : "dynamic shared memory above the function's MAX_DYNAMIC_SHARED_SIZE_BYTES";
    char cluster_why[96];
    if (!refused && shape.grid.x % entry.cluster_x != 0) {
        snprintf(cluster_why, sizeof cluster_why, "grid x is not a multiple of the kernel's cluster size "
                 "(__cluster_dims__ x = %u)", entry.cluster_x);
        refused = cluster_why;
    }
    if (refused) {
        report("cuLaunchKernel %s refused: %s (threads per block: at most %u for this kernel)", config, refused,
               f->max_threads);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (!g_pending.empty()) {
        // Behind a stream wait: the arguments are copied now (kernelParams need only live for the
        // call), each in a 64-byte aligned slot (a CUtensorMap's alignment), and the grid runs
        // when the wait is let through; a fault then is sticky, as an asynchronous one is.
        std::size_t offsets[kMaxKernelParams], bytes = 0;
        for (unsigned i = 0; i < entry.param_count; ++i) {
            offsets[i] = bytes;
            bytes += (entry.param_sizes[i] + 63) / 64 * 64;
        }
        std::shared_ptr<unsigned char> copies(static_cast<unsigned char*>(aligned_alloc(64, bytes ? bytes : 64)), free);
        if (!copies) return CUDA_ERROR_OUT_OF_MEMORY;
        std::vector<void*> pointers(entry.param_count);
        for (unsigned i = 0; i < entry.param_count; ++i) {
            std::memcpy(copies.get() + offsets[i], params[i], entry.param_sizes[i]);
            pointers[i] = copies.get() + offsets[i];
        }
        const std::string name = config;
        g_pending.push_back({0, 0, [&entry, shape, copies, pointers, name]() mutable {
                                 if (g_context.sticky) return;
                                 const emu::LaunchError error = entry.launch(shape, pointers.data());
                                 if (error.failed) {
                                     report("kernel %s failed: %s", name.c_str(), error.message);
                                     g_context.sticky = CUDA_ERROR_LAUNCH_FAILED;
                                 }
                             }});
        return CUDA_SUCCESS;
    }
    const emu::LaunchError error = entry.launch(shape, params);
    if (error.failed) {
        report("kernel %s failed: %s", config, error.message);
        g_context.sticky = CUDA_ERROR_LAUNCH_FAILED;
        return CUDA_ERROR_LAUNCH_FAILED;
    }
    return CUDA_SUCCESS;
}

}  // namespace
}  // namespace ember_driver

using namespace ember_driver;

// ---- the entry points, as cudarc resolves them (cuda.h's names, _v2 where cuda.h maps to it) ----

#define EMBER_LOCK                                 \
    std::unique_lock<std::mutex> hold(g_lock); \
    drain()
// For the calls that wait for queued work (see settle).
#define EMBER_SETTLE                                           \
    do {                                                       \
        if (const CUresult settled = settle(hold)) return settled; \
    } while (0)
#define EMBER_CHECK_CONTEXT                                  \
    do {                                                     \
        if (const CUresult state = context_state()) return state; \
    } while (0)

extern "C" {

// Initialisation, errors and the device.

__attribute__((visibility("default"))) CUresult cuInit(unsigned flags) {
    EMBER_LOCK;
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    // As the driver: CUDA_VISIBLE_DEVICES set but naming no device ("" or a negative index)
    // hides every GPU, and cuInit says so.
    const char* visible = getenv("CUDA_VISIBLE_DEVICES");
    if (visible && (visible[0] == '\0' || visible[0] == '-')) return CUDA_ERROR_NO_DEVICE;
    g_initialized = true;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDriverGetVersion(int* version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = 12040;  // the API level cudarc is built against (feature cuda-12040)
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuGetErrorName(CUresult error, const char** name) {
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    *name = error_name(error);
    return *name ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

__attribute__((visibility("default"))) CUresult cuGetErrorString(CUresult error, const char** text) {
    if (!text) return CUDA_ERROR_INVALID_VALUE;
    *text = error_string(error);
    return *text ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

__attribute__((visibility("default"))) CUresult cuDeviceGetCount(int* count) {
    EMBER_LOCK;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    *count = 1;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDeviceGet(int* device, int ordinal) {
    EMBER_LOCK;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDeviceGetName(char* name, int length, int device) {
    EMBER_LOCK;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!name || length <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, static_cast<std::size_t>(length), "%s", kDeviceName);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDeviceGetAttribute(int* value, int attribute, int device) {
    EMBER_LOCK;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    *value = device_attribute(attribute);
    return CUDA_SUCCESS;
}

// The host's physical memory.
__attribute__((visibility("default"))) CUresult cuDeviceTotalMem_v2(std::size_t* bytes, int device) {
    EMBER_LOCK;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    *bytes = static_cast<std::size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return CUDA_SUCCESS;
}

// Contexts: the primary context only, current on every thread while it is retained.

__attribute__((visibility("default"))) CUresult cuDevicePrimaryCtxRetain(Context** context, int device) {
    EMBER_LOCK;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!context) return CUDA_ERROR_INVALID_VALUE;
    if (g_context.retains++ == 0) g_context.sticky = CUDA_SUCCESS;  // created afresh
    *context = &g_context;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuDevicePrimaryCtxRelease_v2(int device) {
    EMBER_LOCK;
    EMBER_SETTLE;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (g_context.retains == 0) return CUDA_ERROR_INVALID_CONTEXT;
    --g_context.retains;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuCtxGetCurrent(Context** context) {
    EMBER_LOCK;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!context) return CUDA_ERROR_INVALID_VALUE;
    *context = g_context.retains ? &g_context : nullptr;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuCtxSetCurrent(Context* context) {
    EMBER_LOCK;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (context && (context != &g_context || g_context.retains == 0)) return CUDA_ERROR_INVALID_CONTEXT;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuCtxSynchronize() {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    return CUDA_SUCCESS;
}

// Memory.

__attribute__((visibility("default"))) CUresult cuMemAlloc_v2(std::uintptr_t* dptr, std::size_t bytes) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    return allocate(dptr, bytes);
}

__attribute__((visibility("default"))) CUresult cuMemFree_v2(std::uintptr_t dptr) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    return release(dptr);
}

// Pinned host memory (CudaDevice::time_each_ms's gate word): plain host memory, its device
// pointer its own address, as under unified addressing.
__attribute__((visibility("default"))) CUresult cuMemHostAlloc(void** pointer, std::size_t bytes, unsigned /*flags*/) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!pointer || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    const std::size_t rounded = (bytes + 4095) / 4096 * 4096;
    *pointer = aligned_alloc(4096, rounded);
    if (!*pointer) return CUDA_ERROR_OUT_OF_MEMORY;
    g_host_allocations.insert(*pointer);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemHostGetDevicePointer_v2(std::uintptr_t* dptr, void* pointer,
                                                                           unsigned flags) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!dptr || flags != 0 || !g_host_allocations.count(pointer)) return CUDA_ERROR_INVALID_VALUE;
    *dptr = reinterpret_cast<std::uintptr_t>(pointer);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemFreeHost(void* pointer) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    if (!g_host_allocations.erase(pointer)) {
        report("cuMemFreeHost: %p is not a live cuMemHostAlloc allocation", pointer);
        return CUDA_ERROR_INVALID_VALUE;
    }
    free(pointer);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemGetInfo_v2(std::size_t* free_bytes, std::size_t* total_bytes) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!free_bytes || !total_bytes) return CUDA_ERROR_INVALID_VALUE;
    *total_bytes = static_cast<std::size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    *free_bytes = static_cast<std::size_t>(sysconf(_SC_AVPHYS_PAGES)) * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemcpyHtoD_v2(std::uintptr_t dst, const void* src, std::size_t bytes) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    return copy("cuMemcpyHtoD", reinterpret_cast<void*>(dst), true, src, false, bytes);
}

__attribute__((visibility("default"))) CUresult cuMemcpyHtoDAsync_v2(std::uintptr_t dst, const void* src, std::size_t bytes,
                                                                     void* stream) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return copy("cuMemcpyHtoDAsync", reinterpret_cast<void*>(dst), true, src, false, bytes);
}

__attribute__((visibility("default"))) CUresult cuMemcpyDtoH_v2(void* dst, std::uintptr_t src, std::size_t bytes) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    return copy("cuMemcpyDtoH", dst, false, reinterpret_cast<const void*>(src), true, bytes);
}

__attribute__((visibility("default"))) CUresult cuMemcpyDtoHAsync_v2(void* dst, std::uintptr_t src, std::size_t bytes,
                                                                     void* stream) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return copy("cuMemcpyDtoHAsync", dst, false, reinterpret_cast<const void*>(src), true, bytes);
}

__attribute__((visibility("default"))) CUresult cuMemcpyDtoD_v2(std::uintptr_t dst, std::uintptr_t src, std::size_t bytes) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    return copy("cuMemcpyDtoD", reinterpret_cast<void*>(dst), true, reinterpret_cast<const void*>(src), true, bytes);
}

__attribute__((visibility("default"))) CUresult cuMemcpyDtoDAsync_v2(std::uintptr_t dst, std::uintptr_t src,
                                                                     std::size_t bytes, void* stream) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return copy("cuMemcpyDtoDAsync", reinterpret_cast<void*>(dst), true, reinterpret_cast<const void*>(src), true,
                bytes);
}

__attribute__((visibility("default"))) CUresult cuMemsetD8_v2(std::uintptr_t dst, unsigned char value, std::size_t count) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    if (!device_range_ok("cuMemsetD8", "destination", dst, count)) return CUDA_ERROR_INVALID_VALUE;
    std::memset(reinterpret_cast<void*>(dst), value, count);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuMemsetD8Async(std::uintptr_t dst, unsigned char value, std::size_t count,
                                                                void* stream) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    if (!device_range_ok("cuMemsetD8Async", "destination", dst, count)) return CUDA_ERROR_INVALID_VALUE;
    std::memset(reinterpret_cast<void*>(dst), value, count);
    return CUDA_SUCCESS;
}

// Streams: synchronous (work runs when it is queued).

__attribute__((visibility("default"))) CUresult cuStreamCreate(Stream** stream, unsigned /*flags*/) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!stream) return CUDA_ERROR_INVALID_VALUE;
    *stream = new Stream;
    g_streams.insert(*stream);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuStreamDestroy_v2(Stream* stream) {
    EMBER_LOCK;
    EMBER_SETTLE;
    if (!g_streams.erase(stream)) return CUDA_ERROR_INVALID_HANDLE;
    delete stream;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuStreamSynchronize(void* stream) {
    EMBER_LOCK;
    EMBER_SETTLE;
    EMBER_CHECK_CONTEXT;
    return valid_stream(stream) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

__attribute__((visibility("default"))) CUresult cuStreamWaitEvent(void* stream, Event* event, unsigned /*flags*/) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!valid_stream(stream) || !g_events.count(event)) return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_SUCCESS;
}

// A wait not yet met queues the stream's later work (launches, event records) until the word
// reaches the value: it runs at the first driver call after that, or in a call that waits for
// it (settle). A wait already met with nothing queued is a no-op.
__attribute__((visibility("default"))) CUresult cuStreamWaitValue32_v2(void* stream, std::uintptr_t address,
                                                                     std::uint32_t value, unsigned flags) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!valid_stream(stream) || flags != 0 /* CU_STREAM_WAIT_VALUE_GEQ */ ||
        !(g_host_allocations.count(reinterpret_cast<void*>(address)) ||
          device_range_ok("cuStreamWaitValue32", "address", address, sizeof(std::uint32_t))))
        return CUDA_ERROR_INVALID_VALUE;
    const std::uint32_t word = __atomic_load_n(reinterpret_cast<const std::uint32_t*>(address), __ATOMIC_SEQ_CST);
    if (!wait_met(word, value) || !g_pending.empty()) g_pending.push_back({address, value, {}});
    return CUDA_SUCCESS;
}

// Events: recorded at the call (the stream's work before it has already run).

__attribute__((visibility("default"))) CUresult cuEventCreate(Event** event, unsigned flags) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!event) return CUDA_ERROR_INVALID_VALUE;
    *event = new Event{flags, false, {}, false, ++g_event_serial};
    g_events.insert(*event);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuEventDestroy_v2(Event* event) {
    EMBER_LOCK;  // a record still queued for it finds it gone (Event::serial)
    if (!g_events.erase(event)) return CUDA_ERROR_INVALID_HANDLE;
    delete event;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuEventRecord(Event* event, void* stream) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!g_events.count(event) || !valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    event->latest = ++g_record_ticket;
    if (!g_pending.empty()) {  // recorded when the work queued before it has run
        event->pending = true;
        g_pending.push_back({0, 0, [event, serial = event->serial, ticket = event->latest] {
                                 if (!g_events.count(event) || event->serial != serial) return;  // destroyed
                                 event->recorded = true;
                                 event->time = std::chrono::steady_clock::now();
                                 // A later record of the same event, still queued, keeps it pending.
                                 if (event->latest == ticket) event->pending = false;
                             }});
        return CUDA_SUCCESS;
    }
    event->pending = false;
    event->recorded = true;
    event->time = std::chrono::steady_clock::now();
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuEventQuery(Event* event) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!g_events.count(event)) return CUDA_ERROR_INVALID_HANDLE;
    return event->pending ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuEventSynchronize(Event* event) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!g_events.count(event)) return CUDA_ERROR_INVALID_HANDLE;
    // Until its own record has run (work queued after it may still wait).
    return settle(hold, [event] { return !g_events.count(event) || !event->pending; });
}

// Milliseconds between two recorded timing events, at least 1 µs.
__attribute__((visibility("default"))) CUresult cuEventElapsedTime(float* ms, Event* start, Event* end) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (!g_events.count(start) || !g_events.count(end) || (start->flags & CU_EVENT_DISABLE_TIMING) ||
        (end->flags & CU_EVENT_DISABLE_TIMING))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!start->recorded || !end->recorded || start->pending || end->pending) return CUDA_ERROR_NOT_READY;
    const float elapsed = std::chrono::duration<float, std::milli>(end->time - start->time).count();
    *ms = elapsed > 1e-3f ? elapsed : 1e-3f;
    return CUDA_SUCCESS;
}

// Modules and functions.

__attribute__((visibility("default"))) CUresult cuModuleLoadData(Module** module, const void* image) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    std::vector<CubinKernel> kernels;
    std::string why;
    if (!parse_cubin(static_cast<const unsigned char*>(image), kernels, why)) {
        report("cuModuleLoadData: %s", why.c_str());
        return CUDA_ERROR_INVALID_IMAGE;
    }
    auto loaded = std::make_unique<Module>();
    for (const CubinKernel& kernel : kernels) {
        const char* file = nullptr;
        const KernelEntry* entry = find_entry(kernel.name, &file);
        if (!entry) {
            report("cuModuleLoadData: the CUBIN's kernel %s is not in the emulated driver's registry: add it to its "
                   "file's list in crates/ember-cuda/emu/driver/registry.h",
                   kernel.name.c_str());
            return CUDA_ERROR_NO_BINARY_FOR_GPU;
        }
        bool same = kernel.param_sizes.size() == entry->param_count;
        for (unsigned i = 0; same && i < entry->param_count; ++i) same = kernel.param_sizes[i] == entry->param_sizes[i];
        if (!same) {
            std::string cubin, host;
            for (std::size_t size : kernel.param_sizes) cubin += (cubin.empty() ? "" : ", ") + std::to_string(size);
            for (unsigned i = 0; i < entry->param_count; ++i)
                host += (i ? ", " : "") + std::to_string(entry->param_sizes[i]);
            report("cuModuleLoadData: kernel %s (%s) takes parameters of (%s) bytes in the CUBIN but (%s) in the host "
                   "build",
                   kernel.name.c_str(), file, cubin.c_str(), host.c_str());
            return CUDA_ERROR_INVALID_IMAGE;
        }
        loaded->functions[kernel.name] =
            Function{entry, loaded.get(), kernel.max_threads ? kernel.max_threads : kMaxThreadsPerBlock};
    }
    *module = loaded.release();
    g_modules.insert(*module);
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuModuleUnload(Module* module) {
    EMBER_LOCK;
    EMBER_SETTLE;
    if (!g_modules.erase(module)) return CUDA_ERROR_INVALID_HANDLE;
    delete module;
    return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult cuModuleGetFunction(Function** function, Module* module, const char* name) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!function || !name) return CUDA_ERROR_INVALID_VALUE;
    if (!g_modules.count(module)) return CUDA_ERROR_INVALID_HANDLE;
    auto found = module->functions.find(name);
    if (found == module->functions.end()) return CUDA_ERROR_NOT_FOUND;
    *function = &found->second;
    return CUDA_SUCCESS;
}

// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (the opt-in above 48 KiB) is emulated;
// CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT (a hint: -1 or a percentage) is checked
// and has no effect.
__attribute__((visibility("default"))) CUresult cuFuncSetAttribute(Function* function, int attribute, int value) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!function || !g_modules.count(function->module)) return CUDA_ERROR_INVALID_HANDLE;
    if (attribute == CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT)
        return value >= -1 && value <= 100 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    if (attribute != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
        report("cuFuncSetAttribute: attribute %d is not emulated", attribute);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (value < 0 || static_cast<std::size_t>(value) > kOptinSmemPerBlock) return CUDA_ERROR_INVALID_VALUE;
    function->max_dynamic_smem = static_cast<std::size_t>(value);
    return CUDA_SUCCESS;
}

// CUlaunchConfig (cuda.h), as far as cuOccupancyMaxActiveClusters reads it.
struct LaunchConfig {
    unsigned grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_mem_bytes;
    void* stream;
    void* attrs;
    unsigned num_attrs;
};

// How many clusters of `function`'s size (its __cluster_dims__; launch attributes are not
// emulated) can run at once: as many as the multiprocessors hold, each holding as many of the
// config's blocks as the 228 KiB of shared memory (1 KiB of it reserved per block) allows. No GPC
// layout: every multiprocessor can take part in a cluster.
__attribute__((visibility("default"))) CUresult cuOccupancyMaxActiveClusters(int* clusters, Function* function,
                                                                             const LaunchConfig* config) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!clusters || !config || !function || !g_modules.count(function->module)) return CUDA_ERROR_INVALID_VALUE;
    if (config->num_attrs != 0) {
        report("cuOccupancyMaxActiveClusters: launch attributes are not emulated");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    const unsigned threads = config->block_x * config->block_y * config->block_z;
    if (threads == 0 || threads > function->max_threads || config->shared_mem_bytes > function->max_dynamic_smem)
        return CUDA_ERROR_INVALID_VALUE;
    const std::size_t per_block = config->shared_mem_bytes + 1024;
    const std::size_t blocks_per_sm = std::min<std::size_t>(228 * 1024 / per_block, 2048 / threads);
    *clusters = static_cast<int>(kMultiprocessors * blocks_per_sm / function->entry->cluster_x);
    return CUDA_SUCCESS;
}

// Tensor maps (the emulation's format, emu/tensor_map.h). Needs an initialised driver, no context.
__attribute__((visibility("default"))) CUresult cuTensorMapEncodeTiled(
    void* map, unsigned data_type, unsigned rank, void* global_address, const std::uint64_t* global_dims,
    const std::uint64_t* global_strides, const std::uint32_t* box_dims, const std::uint32_t* element_strides,
    unsigned interleave, unsigned swizzle, unsigned l2_promotion, unsigned oob_fill) {
    EMBER_LOCK;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    // Encoded aside first: `map` is left alone unless every check passes.
    alignas(64) unsigned char encoded[emu::kTensorMapBytes];
    const char* why = map ? emu::encode_tensor_map(encoded, data_type, rank, global_address, global_dims,
                                                   global_strides, box_dims, element_strides, interleave, swizzle,
                                                   l2_promotion, oob_fill)
                          : "the tensor map pointer is null";
    if (!why && reinterpret_cast<std::uintptr_t>(map) % 64 != 0) why = "the tensor map is not 64-byte aligned";
    if (!why) {
        // Up to the last row's last element: TMA reads anywhere within the dimensions.
        const std::size_t bytes = (global_dims[1] - 1) * global_strides[0] + global_dims[0] * 2;
        if (device_range_ok("cuTensorMapEncodeTiled", "the tensor", reinterpret_cast<std::uintptr_t>(global_address),
                            bytes)) {
            std::memcpy(map, encoded, sizeof encoded);
            return CUDA_SUCCESS;
        }
        why = "the tensor (dims × strides) is not inside one live allocation";
    }
    report("cuTensorMapEncodeTiled (data type %u, rank %u, address %p, dims {%llu, %llu}, stride %llu, box {%u, %u}, "
           "interleave %u, swizzle %u, l2 %u, oob fill %u): %s",
           data_type, rank, global_address,
           global_dims && rank >= 1 ? static_cast<unsigned long long>(global_dims[0]) : 0ull,
           global_dims && rank >= 2 ? static_cast<unsigned long long>(global_dims[1]) : 0ull,
           global_strides && rank >= 2 ? static_cast<unsigned long long>(global_strides[0]) : 0ull,
           box_dims && rank >= 1 ? box_dims[0] : 0u, box_dims && rank >= 2 ? box_dims[1] : 0u, interleave, swizzle,
           l2_promotion, oob_fill, why);
    return CUDA_ERROR_INVALID_VALUE;
}

__attribute__((visibility("default"))) CUresult cuLaunchKernel(Function* function, unsigned grid_x, unsigned grid_y,
                                                               unsigned grid_z, unsigned block_x, unsigned block_y,
                                                               unsigned block_z, unsigned dynamic_smem, void* stream,
                                                               void** params, void** extra) {
    EMBER_LOCK;
    EMBER_CHECK_CONTEXT;
    if (!function || !g_modules.count(function->module) || !valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return launch(function, {{grid_x, grid_y, grid_z}, {block_x, block_y, block_z}, dynamic_smem}, params, extra);
}

}  // extern "C"
