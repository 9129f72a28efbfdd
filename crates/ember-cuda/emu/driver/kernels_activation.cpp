// kernels/activation.cu compiled for the emulated driver: its kernels' table (registry.h).
#include "activation.cu"

#include "registry.h"

EMBER_DEFINE_KERNEL_TABLE(activation)
