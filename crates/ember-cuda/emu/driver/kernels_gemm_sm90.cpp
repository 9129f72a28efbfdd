// kernels/gemm_sm90.cu compiled for the emulated driver: its kernels' table (registry.h).
#include "gemm_sm90.cu"

#include "registry.h"

EMBER_DEFINE_KERNEL_TABLE(gemm_sm90)
