// Build-wide configuration: the one host/device annotation macro (a keyword cannot come from a
// template) and the library version.
#pragma once

#if defined(__CUDACC__)
#define BATCHWISE_HOST_DEVICE __host__ __device__
#else
#define BATCHWISE_HOST_DEVICE
#endif

namespace batchwise {
inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;
}  // namespace batchwise
