# Targets for the Thrust execution policies. Both use the CUDA toolkit's own Thrust (CCCL): nvcc
# sees it anyway, and pinning g++ to the same copy keeps Debian's older Thrust 1.17 out, so the
# host build tests the Thrust that the GPU build runs.
#
#   batchwise::thrust_host  g++ (or any host compiler), Thrust's CPP device system, CBLAS GEMM
#   batchwise::cuda         nvcc, Thrust's CUDA system, the CUDA runtime and cuBLAS
#
# Neither is defined when no CUDA toolkit is found; the CPU library does not need one. The same
# file serves the source tree and the installed package (batchwiseConfig.cmake includes it for
# the components thrust_host and cuda). The targets are IMPORTED GLOBAL so that a project that
# adds batchwise with add_subdirectory or FetchContent sees them too.

find_package(CUDAToolkit QUIET)
set(_batchwise_cccl_hints /usr/local/cuda/include/cccl)
foreach(_batchwise_dir IN LISTS CUDAToolkit_INCLUDE_DIRS)
    list(PREPEND _batchwise_cccl_hints "${_batchwise_dir}/cccl" "${_batchwise_dir}")
endforeach()
find_path(BATCHWISE_CCCL_INCLUDE_DIR thrust/version.h cuda/std/version
          HINTS ${_batchwise_cccl_hints} NO_DEFAULT_PATH
          DOC "The CUDA toolkit's CCCL include directory (Thrust, CUB, libcu++)")
unset(_batchwise_cccl_hints)

if(BATCHWISE_CCCL_INCLUDE_DIR AND NOT TARGET batchwise::thrust_host)
    file(STRINGS "${BATCHWISE_CCCL_INCLUDE_DIR}/thrust/version.h" _batchwise_thrust_line
         REGEX "^#define THRUST_VERSION [0-9]+")
    string(REGEX MATCH "THRUST_VERSION ([0-9]+)" _batchwise_thrust_line "${_batchwise_thrust_line}")
    set(_batchwise_thrust_version "${CMAKE_MATCH_1}")
    # Thrust 2 (CCCL) is what CUDA 12 and later ship: universal vectors, par_nosync.
    if(_batchwise_thrust_version LESS 200000)
        message(WARNING "batchwise: the Thrust at ${BATCHWISE_CCCL_INCLUDE_DIR} is older than 2.0; "
                        "batchwise::thrust_host is not defined")
    else()
        add_library(batchwise::thrust_host INTERFACE IMPORTED GLOBAL)
        target_include_directories(batchwise::thrust_host SYSTEM INTERFACE "${BATCHWISE_CCCL_INCLUDE_DIR}")
        # The device system is fixed for a whole program: every file that links this target
        # must see the same value.
        target_compile_definitions(batchwise::thrust_host INTERFACE THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_CPP)
        target_link_libraries(batchwise::thrust_host INTERFACE batchwise::batchwise)
        if(NOT batchwise_FIND_QUIETLY)
            message(STATUS "batchwise: Thrust ${_batchwise_thrust_version} for thrust_host from ${BATCHWISE_CCCL_INCLUDE_DIR}")
        endif()
    endif()
    unset(_batchwise_thrust_line)
    unset(_batchwise_thrust_version)
endif()

if(CUDAToolkit_FOUND AND TARGET CUDA::cublas AND TARGET CUDA::cublasLt AND NOT TARGET batchwise::cuda)
    add_library(batchwise::cuda INTERFACE IMPORTED GLOBAL)
    # cuBLASLt: the Dense layers' GEMMs with bias, ReLU and bias-gradient epilogues.
    target_link_libraries(batchwise::cuda INTERFACE batchwise::batchwise CUDA::cudart CUDA::cublas CUDA::cublasLt)
    # C++20 by flag: CMake 3.25's compile features do not know nvcc 13's dialects. libstdc++'s
    # constexpr functions (std::max, numeric_limits) are called from device code.
    target_compile_options(batchwise::cuda INTERFACE
        $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr>)
endif()
