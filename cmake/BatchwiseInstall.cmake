# Install rules for `cmake --install`: the headers, and the CMake package that
# find_package(batchwise CONFIG) loads (batchwiseConfig.cmake, its version file, the exported
# target batchwise::batchwise, and BatchwiseDependencies.cmake to find the dependencies again).
include(CMakePackageConfigHelpers)

# share/, not lib/: the package is the same for every architecture (header-only), which is also
# what ARCH_INDEPENDENT says to the version check below.
set(BATCHWISE_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/batchwise"
    CACHE STRING "Where the CMake package files go, relative to the install prefix")

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/batchwise" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

install(TARGETS batchwise EXPORT batchwiseTargets)
install(EXPORT batchwiseTargets
        NAMESPACE batchwise::
        DESTINATION "${BATCHWISE_INSTALL_CMAKEDIR}")

configure_package_config_file(
    "${PROJECT_SOURCE_DIR}/cmake/batchwiseConfig.cmake.in"
    "${PROJECT_BINARY_DIR}/batchwiseConfig.cmake"
    INSTALL_DESTINATION "${BATCHWISE_INSTALL_CMAKEDIR}")
# Before 1.0 a minor version may change the API: 0.1.x satisfies a request for 0.1, not 0.2.
write_basic_package_version_file(
    "${PROJECT_BINARY_DIR}/batchwiseConfigVersion.cmake"
    COMPATIBILITY SameMinorVersion
    ARCH_INDEPENDENT)

install(FILES
        "${PROJECT_BINARY_DIR}/batchwiseConfig.cmake"
        "${PROJECT_BINARY_DIR}/batchwiseConfigVersion.cmake"
        "${PROJECT_SOURCE_DIR}/cmake/BatchwiseDependencies.cmake"
        "${PROJECT_SOURCE_DIR}/cmake/BatchwiseThrust.cmake"
        "${PROJECT_SOURCE_DIR}/cmake/BatchwiseDistributed.cmake"
        DESTINATION "${BATCHWISE_INSTALL_CMAKEDIR}")
