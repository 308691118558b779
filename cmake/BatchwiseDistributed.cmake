# Targets for data-parallel training across processes (batchwise/distributed/):
#
#   batchwise::mpi   MPI's C API (Open MPI, MPICH), for data_parallel<Inner, mpi_communicator>
#                    with the host policies (cpu_blas, thrust_host)
#   batchwise::nccl  NCCL with batchwise::cuda and batchwise::mpi, for data_parallel<Inner,
#                    nccl_communicator> on GPUs (NCCL's unique id travels over MPI, so mpirun
#                    starts both)
#
# Neither is defined when what it needs is missing. The same file serves the source tree and the
# installed package (components mpi and nccl). IMPORTED GLOBAL, as BatchwiseThrust.cmake's.

# The CXX component, since batchwise's users compile C++ (the C component needs the C language
# enabled); only MPI's C API is called, so the deprecated C++ bindings are not looked for.
set(MPI_CXX_SKIP_MPICXX ON CACHE BOOL "batchwise calls MPI's C API only")
find_package(MPI QUIET COMPONENTS CXX)
if(MPI_CXX_FOUND AND NOT TARGET batchwise::mpi)
    add_library(batchwise::mpi INTERFACE IMPORTED GLOBAL)
    target_link_libraries(batchwise::mpi INTERFACE batchwise::batchwise MPI::MPI_CXX)
    # Only MPI's C API is used: the deprecated C++ bindings would need libraries of their own.
    target_compile_definitions(batchwise::mpi INTERFACE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
    if(NOT batchwise_FIND_QUIETLY)
        message(STATUS "batchwise: MPI ${MPI_CXX_VERSION} for data_parallel (${MPIEXEC_EXECUTABLE})")
    endif()
endif()

if(TARGET batchwise::mpi AND TARGET batchwise::cuda AND NOT TARGET batchwise::nccl)
    find_path(BATCHWISE_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} DOC "NCCL's include directory")
    find_library(BATCHWISE_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} DOC "NCCL's library")
    if(BATCHWISE_NCCL_INCLUDE_DIR AND BATCHWISE_NCCL_LIBRARY)
        add_library(batchwise::nccl INTERFACE IMPORTED GLOBAL)
        target_include_directories(batchwise::nccl SYSTEM INTERFACE "${BATCHWISE_NCCL_INCLUDE_DIR}")
        target_link_libraries(batchwise::nccl INTERFACE batchwise::cuda batchwise::mpi "${BATCHWISE_NCCL_LIBRARY}")
    endif()
endif()
