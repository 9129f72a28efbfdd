// kernels/gemm.cu compiled for the emulated driver: its kernels' table (registry.h).
#include "gemm.cu"

#include "registry.h"

EMBER_DEFINE_KERNEL_TABLE(gemm)
