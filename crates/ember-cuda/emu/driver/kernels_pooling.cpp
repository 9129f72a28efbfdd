// kernels/pooling.cu compiled for the emulated driver: its kernels' table (registry.h).
#include "pooling.cu"

#include "registry.h"

EMBER_DEFINE_KERNEL_TABLE(pooling)
