// kernels/attention.cu compiled for the emulated driver: its kernels' table (registry.h).
#include "attention.cu"

#include "registry.h"

EMBER_DEFINE_KERNEL_TABLE(attention)
