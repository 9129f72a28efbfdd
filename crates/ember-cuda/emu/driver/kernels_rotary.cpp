// kernels/rotary.cu compiled for the emulated driver: its kernels' table (registry.h).
#include "rotary.cu"

#include "registry.h"

EMBER_DEFINE_KERNEL_TABLE(rotary)
