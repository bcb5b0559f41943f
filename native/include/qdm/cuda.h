// CUDA runtime facade. Implemented by src/cuda/*.cu when nvcc was found at build time, and
// by src/cuda_stub/cuda_stub.cpp otherwise, so callers never carry #ifdefs.
#pragma once
#include <cstddef>
#include <string>

namespace qdm::cuda {
bool compiled();
// Number of usable devices; 0 with `why` set when none (no driver, driver too old, no GPU).
int deviceCount(std::string& why);
std::string deviceName(int device);
int runtimeVersion();
int driverVersion();
}  // namespace qdm::cuda
