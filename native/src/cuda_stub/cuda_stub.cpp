#include "qdm/cuda.h"

namespace qdm::cuda {
bool compiled() { return false; }
int deviceCount(std::string& why) { why = "this qdm build has no CUDA support (nvcc was not found when the addon was built, or QDM_CUDA=off)"; return 0; }
std::string deviceName(int) { return ""; }
int runtimeVersion() { return 0; }
int driverVersion() { return 0; }
}  // namespace qdm::cuda
