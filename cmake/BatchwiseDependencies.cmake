# Finds what batchwise's headers need: xtensor and xtensor-blas (tensors, cxxblas), a CBLAS
# (OpenBLAS preferred), zlib (.npz and .gz files) and threads. Defines batchwise_blas, an
# interface target naming the BLAS to link, whichever way it was found.
include_guard(GLOBAL)

find_package(Threads REQUIRED)
find_package(ZLIB REQUIRED)
find_package(xtensor REQUIRED)
find_package(xtensor-blas REQUIRED)

if(NOT TARGET batchwise_blas)
    add_library(batchwise_blas INTERFACE)
    find_package(OpenBLAS CONFIG QUIET)
    if(TARGET OpenBLAS::OpenBLAS)
        target_link_libraries(batchwise_blas INTERFACE OpenBLAS::OpenBLAS)
    elseif(OpenBLAS_LIBRARIES)
        # Debian's OpenBLASConfig.cmake sets variables but no target.
        target_link_libraries(batchwise_blas INTERFACE ${OpenBLAS_LIBRARIES})
        message(STATUS "batchwise: BLAS is OpenBLAS ${OpenBLAS_VERSION} (${OpenBLAS_LIBRARIES})")
    else()
        find_package(BLAS REQUIRED)
        target_link_libraries(batchwise_blas INTERFACE BLAS::BLAS)
        message(STATUS "batchwise: BLAS is ${BLAS_LIBRARIES}")
    endif()
endif()
