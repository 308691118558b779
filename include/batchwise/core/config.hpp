// Build-wide configuration: the one host/device annotation macro (a keyword cannot come from a
// template) and the library version.
#pragma once

#if defined(__CUDACC__)
#define BATCHWISE_HOST_DEVICE __host__ __device__
#else
#define BATCHWISE_HOST_DEVICE
#endif

namespace batchwise {
/// The library's major version (the version of the CMake and Conan packages).
inline constexpr int version_major = 0;
/// The library's minor version.
inline constexpr int version_minor = 1;
/// The library's patch version.
inline constexpr int version_patch = 0;
}  // namespace batchwise
