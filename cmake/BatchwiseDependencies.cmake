# Finds what batchwise's headers need: xtensor and xtensor-blas (tensors, cxxblas), a CBLAS
# (OpenBLAS preferred), zlib (.npz and .gz files) and threads. Defines batchwise::blas, an
# interface target naming the BLAS to link, whichever way it was found.
#
# One file, two users, so that a build from the source tree and a build against the installed
# package find the same things the same way:
#  - the source tree's CMakeLists.txt (its own build, add_subdirectory, FetchContent): a missing
#    dependency stops the configure;
#  - the installed batchwiseConfig.cmake, which ships this file next to itself and sets
#    _batchwise_in_package_config: a missing dependency makes find_package(batchwise) report
#    the package as not found, with the reason (find_dependency), instead of stopping the
#    consumer's configure.
# Nothing found here is written into the installed files as a path: every consumer finds its own
# dependencies when it loads the package.

if(_batchwise_in_package_config)
    include(CMakeFindDependencyMacro)
endif()

# find_dependency() on failure sets batchwise_FOUND to FALSE with a message and returns from
# this file; batchwiseConfig.cmake checks batchwise_FOUND after including it.
macro(_batchwise_find_dependency package)
    if(_batchwise_in_package_config)
        find_dependency(${package} ${ARGN})
    else()
        find_package(${package} ${ARGN} REQUIRED)
    endif()
endmacro()

_batchwise_find_dependency(Threads)
_batchwise_find_dependency(ZLIB)
_batchwise_find_dependency(xtensor)
_batchwise_find_dependency(xtensor-blas)

if(NOT TARGET batchwise::blas)
    # OpenBLAS's own config package first. Upstream OpenBLAS (and Conan's CMakeDeps) define
    # OpenBLAS::OpenBLAS; Debian's OpenBLASConfig.cmake sets OpenBLAS_LIBRARIES and no target.
    # Any other BLAS through CMake's FindBLAS. cxxblas needs the CBLAS symbols, which OpenBLAS
    # and most BLAS libraries export.
    find_package(OpenBLAS CONFIG QUIET)
    if(TARGET OpenBLAS::OpenBLAS)
        set(_batchwise_blas_link OpenBLAS::OpenBLAS)
        set(_batchwise_blas_what "OpenBLAS ${OpenBLAS_VERSION} (OpenBLAS::OpenBLAS)")
    elseif(OpenBLAS_LIBRARIES)
        set(_batchwise_blas_link "${OpenBLAS_LIBRARIES}")
        set(_batchwise_blas_what "OpenBLAS ${OpenBLAS_VERSION} (${OpenBLAS_LIBRARIES})")
    else()
        _batchwise_find_dependency(BLAS)
        set(_batchwise_blas_link BLAS::BLAS)
        set(_batchwise_blas_what "BLAS::BLAS (${BLAS_LIBRARIES})")
    endif()

    # Local to this directory, like the targets of the packages found above: CMake resolves the
    # names a target links to where they were linked, so projects that add batchwise with
    # add_subdirectory or FetchContent still get them through batchwise::batchwise.
    add_library(batchwise::blas INTERFACE IMPORTED)
    set_target_properties(batchwise::blas PROPERTIES INTERFACE_LINK_LIBRARIES "${_batchwise_blas_link}")
    if(NOT batchwise_FIND_QUIETLY)
        message(STATUS "batchwise: BLAS is ${_batchwise_blas_what}")
    endif()
    unset(_batchwise_blas_link)
    unset(_batchwise_blas_what)
endif()
