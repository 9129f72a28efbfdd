// kernels/layernorm.cu compiled for the emulated driver: its kernels' table (registry.h).
#include "layernorm.cu"

#include "registry.h"

EMBER_DEFINE_KERNEL_TABLE(layernorm)
