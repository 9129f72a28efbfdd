// kernels/embedding.cu compiled for the emulated driver: its kernels' table (registry.h).
#include "embedding.cu"

#include "registry.h"

EMBER_DEFINE_KERNEL_TABLE(embedding)
